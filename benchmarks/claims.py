"""The paper's claims decided on UFine-Synth: several seeds, paired 95 % intervals, a verdict each.

    python benchmarks/claims.py --out claims_out [--seeds 0,1,2,3,4] [--identities 400] [--epochs 10]
                                [--claims A,B,C,D] [--parallel N] [--tiny] [--runs-dir DIR]
    python benchmarks/claims.py --from docs/claims.json      # recompute every interval from raw results

A. Fine versus coarse training texts: CFAM trained on ``ufine_synth.json`` versus on
   ``ufine_synth_coarse.json``, both evaluated on the 3C-style set (overall and per granularity,
   style and domain). Paper: UFine3C R1 62.84 when trained on UFine6926 versus about 55 from
   coarse datasets (effect taken as +7.8).
B. CFAM versus ``irra`` (with its MLM head) versus ``clip-sdm`` in-domain (test split). Paper:
   UFine6926 R1 85.55 (CFAM) vs 83.53 (IRRA), +2.02.
C. Ablation of CFAM's granularity loss and hard-negative matching, in-domain. Paper: +1.97 and
   +1.27 R1.
D. mSD versus rank metrics: a model whose scores are squashed by a monotone map (identical
   ranking, so identical R@K and mAP) with its mSD, and pairs of runs whose R1 and mAP are close
   but whose mSD differs; histograms are written as PNGs.

Each effect is the mean over seeds of the paired difference (same training seed on both sides)
with a Student-t 95 % interval; verdicts follow ``ufinebench.significance.claim_verdict``.
Writes ``OUT/claims.json`` (raw per-seed metrics of every run, then the effects), ``OUT/claims.md``
and the histogram PNGs. Finished trainings are kept and an interrupted one continues from its last
epoch, so a CPU run can span several sittings; ``--parallel N`` trains N runs side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ufinebench.significance import claim_verdict, paired_t_interval

TINY_MODEL = ["model.embed_dim=64", "model.vision_width=64", "model.text_width=64", "model.vision_layers=1", "model.text_layers=1",
              "data.bpe_vocab_size=400", "data.workers=0", "train.batch_size=16", "train.max_steps_per_epoch=4"]
METRICS = ("R1", "R5", "R10", "mAP", "mINP", "mSD")
# name -> (overrides, training file). cfam (fine texts) serves A, B and C.
RUNS: dict[str, tuple[list[str], str]] = {
    "cfam": (["model.arch=cfam"], "ufine_synth.json"),
    "cfam_coarse": (["model.arch=cfam"], "ufine_synth_coarse.json"),
    "irra": (["model.arch=irra", "model.mlm=true"], "ufine_synth.json"),
    "clip-sdm": (["model.arch=clip-sdm"], "ufine_synth.json"),
    "cfam_nogran": (["model.arch=cfam", "model.granularity=false"], "ufine_synth.json"),
    "cfam_nomatch": (["model.arch=cfam", "model.matching=false"], "ufine_synth.json"),
}
NEEDS = {"A": ["cfam", "cfam_coarse"], "B": ["cfam", "irra", "clip-sdm"], "C": ["cfam", "cfam_nogran", "cfam_nomatch"], "D": ["cfam"]}
# (claim, effect, run a, run b, evaluation set, paper's effect in R1 points or None); effect = a - b.
EFFECTS: list[tuple[str, str, str, str, str, float | None]] = [
    ("A", "fine - coarse training texts, 3C-style set", "cfam", "cfam_coarse", "3c", 7.8),
    ("B", "CFAM - IRRA (with MLM), in-domain", "cfam", "irra", "test", 2.02),
    ("B", "CFAM - CLIP-SDM, in-domain", "cfam", "clip-sdm", "test", None),
    ("C", "granularity loss (CFAM - without it), in-domain", "cfam", "cfam_nogran", "test", 1.97),
    ("C", "hard-negative matching (CFAM - without it), in-domain", "cfam", "cfam_nomatch", "test", 1.27),
]


def _progress(run: Path) -> tuple[int, int]:
    """(epochs finished, epochs planned) of a run folder; (0, 0) when it has no readable checkpoint."""
    last = run / "checkpoints" / "last"
    if not last.is_file():
        return 0, 0
    try:
        meta = json.loads((run / "checkpoints" / last.read_text().strip() / "meta.json").read_text())
        return int(meta["epoch"]) + 1, int(meta["config"]["train"]["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0


def _train_one(name: str, seed: int, data: str, run: str, args: dict[str, Any], threads: int) -> str:
    """Train (or finish) one run and evaluate it on the test split and the 3C-style set; returns a log line."""
    import torch

    from ufinebench.config import load_config
    from ufinebench.data.annotations import load_dataset
    from ufinebench.evaluate import evaluate_checkpoint
    from ufinebench.io import atomic_write_bytes
    from ufinebench.training import train

    if threads > 0:
        torch.set_num_threads(threads)
    run_dir = Path(run)
    done, planned = _progress(run_dir)
    if done and planned != args["epochs"]:
        raise SystemExit(f"claims.py: {run_dir} was trained for {planned} epochs, not {args['epochs']}; use another --runs-dir")
    msg = f"{name} seed {seed}: "
    t0 = time.perf_counter()
    if done >= args["epochs"]:
        msg += "training kept"
    elif done > 0:
        train(resume=run_dir, progress=False)
        msg += f"resumed after epoch {done}, trained in {time.perf_counter() - t0:.0f} s"
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # cut off before its first checkpoint: nothing worth keeping
        extra, file = RUNS[name]
        overrides = [f"data.dataset={Path(data) / file}", f"train.out_dir={run_dir}", f"train.seed={seed}", f"train.epochs={args['epochs']}",
                     "train.eval_every=0", f"model.image_size={args['size']}", f"data.workers={args['workers']}"]
        train(load_config("synth-cpu-small", overrides + extra + (TINY_MODEL if args["tiny"] else [])), progress=False)
        msg += f"trained in {time.perf_counter() - t0:.0f} s"
    cached = run_dir / "claims_eval.json"
    if not cached.is_file():
        device = "cuda" if torch.cuda.is_available() else "cpu"
        res: dict[str, Any] = {}
        for key, file in (("test", "ufine_synth.json"), ("3c", "ufine_synth_3c.json")):
            ev = evaluate_checkpoint(str(run_dir), load_dataset(Path(data) / file, split="test").split("test"), device=device)
            res[key] = ev["overall"]
            res[key + "_breakdown"] = {k: ev["breakdown"][k] for k in ("granularity", "style", "source") if k in ev["breakdown"]}
        atomic_write_bytes(cached, json.dumps(res, indent=1).encode())
    return msg


def _interval_row(label: str, a: list[dict[str, Any]], b: list[dict[str, Any]], paper: float | None, verdict: bool) -> dict[str, Any]:
    iv = {m: paired_t_interval([x[m] for x in a], [y[m] for y in b]) for m in ("R1", "mAP")}
    return {"effect": label, "seeds": iv["R1"].n, "a_R1": float(np.mean([x["R1"] for x in a])), "b_R1": float(np.mean([y["R1"] for y in b])),
            "R1": iv["R1"].as_dict(), "mAP": iv["mAP"].as_dict(), "paper_R1": paper,
            "verdict": claim_verdict(iv["R1"], paper) if verdict else None}


def summarise(raw: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every effect (and, for A, every breakdown cell) with its paired interval, from per-seed raw results."""
    rows = []
    for claim, label, a, b, where, paper in EFFECTS:
        if a not in raw or b not in raw:
            continue
        seeds = sorted(set(raw[a]) & set(raw[b]), key=int)
        ra, rb = [raw[a][s][where] for s in seeds], [raw[b][s][where] for s in seeds]
        rows.append({"claim": claim, **_interval_row(label, ra, rb, paper, True)})
        if claim == "A":
            for kind in ("granularity", "style", "source"):
                for value in sorted(raw[a][seeds[0]]["3c_breakdown"].get(kind, {})):
                    ca = [raw[a][s]["3c_breakdown"][kind][value] for s in seeds]
                    cb = [raw[b][s]["3c_breakdown"][kind][value] for s in seeds]
                    rows.append({"claim": "A", **_interval_row(f"{kind} {value}", ca, cb, None, False)})
    return rows


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"


def effects_table(rows: list[dict[str, Any]]) -> str:
    head = ("| claim | effect (a - b) | seeds | R1 a | R1 b | ΔR1 mean [95 % CI] | ΔmAP mean [95 % CI] | paper ΔR1 | verdict |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['claim']} | {r['effect']} | {r['seeds']} | {r['a_R1']:.2f} | {r['b_R1']:.2f} | "
        f"{_fmt(r['R1']['mean'])} [{_fmt(r['R1']['low'])}, {_fmt(r['R1']['high'])}] | "
        f"{_fmt(r['mAP']['mean'])} [{_fmt(r['mAP']['low'])}, {_fmt(r['mAP']['high'])}] | "
        f"{_fmt(r['paper_R1']) if r['paper_R1'] is not None else '-'} | {('**' + r['verdict'] + '**') if r['verdict'] else ''} |\n"
        for r in rows)
    return head + body


def runs_table(raw: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = "| run | set | seeds | " + " | ".join(METRICS) + " |\n|" + "---|" * (len(METRICS) + 3) + "\n"
    body = ""
    for name, per_seed in raw.items():
        for where in ("test", "3c"):
            vals = [per_seed[s][where] for s in sorted(per_seed, key=int)]
            cells = [f"{np.mean([v[m] for v in vals]):.2f} ± {np.std([v[m] for v in vals], ddof=1) if len(vals) > 1 else 0:.2f}" for m in METRICS]
            body += f"| {name} | {where} | {len(vals)} | " + " | ".join(cells) + " |\n"
    return head + body


def _hist(sims: np.ndarray, pos: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(float(sims.min()), float(sims.max()), 60)
    ax.hist(sims[~pos], bins=bins, density=True, alpha=0.6, color="#c0392b", label="negatives")
    ax.hist(sims[pos], bins=bins, density=True, alpha=0.6, color="#27ae60", label="positives")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def claim_d(run: Path, data: Path, raw: dict[str, dict[str, dict[str, Any]]], out: Path, seed: int) -> tuple[dict[str, Any], str]:
    """Same ranking, different distribution: one model's scores squashed, and close pairs of runs."""
    import torch

    from ufinebench.data.annotations import load_dataset
    from ufinebench.evaluate import evaluate_checkpoint
    from ufinebench.metrics import metrics_from_similarity, unit_rows

    device = "cuda" if torch.cuda.is_available() else "cpu"
    f = evaluate_checkpoint(str(run), load_dataset(data / "ufine_synth.json", split="test").split("test"), device=device)["_features"]
    sim = unit_rows(f.query_features) @ unit_rows(f.gallery_features).T
    pos = f.query_ids[:, None] == f.gallery_ids[None, :]
    squashed = 0.5 + 0.1 * np.tanh(2 * sim)  # monotone: the same ranking
    a = metrics_from_similarity(sim, f.query_ids, f.gallery_ids).as_dict()
    b = metrics_from_similarity(squashed, f.query_ids, f.gallery_ids).as_dict()
    _hist(sim, pos, f"CFAM seed {seed}: R1 {a['R1']:.1f} mAP {a['mAP']:.1f} mSD {a['mSD']:.2f}", out / "D_original.png")
    _hist(squashed, pos, f"squashed scores: R1 {b['R1']:.1f} mAP {b['mAP']:.1f} mSD {b['mSD']:.2f}", out / "D_squashed.png")
    flat = [(f"{k} s{s}", r["test"]) for k in raw for s, r in raw[k].items() if k != "cfam_coarse"]
    pairs = [{"a": x[0], "b": y[0], "dR1": x[1]["R1"] - y[1]["R1"], "dmAP": x[1]["mAP"] - y[1]["mAP"], "dmSD": x[1]["mSD"] - y[1]["mSD"]}
             for i, x in enumerate(flat) for y in flat[i + 1:]
             if abs(x[1]["R1"] - y[1]["R1"]) <= 1.0 and abs(x[1]["mAP"] - y[1]["mAP"]) <= 1.0]
    pairs.sort(key=lambda p: -abs(p["dmSD"]))
    md = ("| scores | " + " | ".join(METRICS) + " |\n|" + "---|" * (len(METRICS) + 1) + "\n"
          + "".join(f"| {label} | " + " | ".join(f"{r[m]:.2f}" for m in METRICS) + " |\n"
                    for label, r in (("CFAM", a), ("monotone squashed", b))))
    if pairs:
        md += ("\nRuns with R1 and mAP within 1 point of each other (largest mSD gap first):\n\n| a | b | ΔR1 | ΔmAP | ΔmSD |\n"
               "|---|---|---|---|---|\n" + "".join(f"| {p['a']} | {p['b']} | {p['dR1']:+.2f} | {p['dmAP']:+.2f} | {p['dmSD']:+.2f} |\n"
                                                   for p in pairs[:10]))
    return {"original": a, "squashed": b, "close_rank_pairs": pairs[:10]}, md


def render(results: dict[str, Any]) -> str:
    """claims.md from claims.json: the command, the effects with intervals and verdicts, every run, D."""
    raw = results["runs"]
    rows = summarise(raw)
    md = [f"Command: `{results['command']}`\n", "### Effects (paired by training seed, Student-t 95 % intervals)\n", effects_table(rows),
          "### Runs (mean ± sample standard deviation over seeds)\n", runs_table(raw)]
    if "D" in results:
        md += ["### D. Same ranking, different similarity distribution\n", results["D"]["table"]]
    if "seconds" in results:
        md.append(f"Total time: {results['seconds']} s on {results['machine']}.\n")
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="claims_out")
    ap.add_argument("--seeds", default=None, help="training seeds (default 0,1,2,3,4; --tiny: 0,1)")
    ap.add_argument("--identities", type=int, default=400)
    ap.add_argument("--size", default="128x48")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 10; --tiny: 1)")
    ap.add_argument("--claims", default="A,B,C,D")
    ap.add_argument("--tiny", action="store_true", help="a one-minute check that the script works (CI)")
    ap.add_argument("--workers", type=int, default=0, help="data-loading processes per training run")
    ap.add_argument("--parallel", type=int, default=1, help="training runs side by side (each gets cores / N threads)")
    ap.add_argument("--runs-dir", help="where the training runs go (default OUT/runs)")
    ap.add_argument("--from", dest="from_json", help="only recompute claims.md from an existing claims.json")
    args = ap.parse_args()
    if args.from_json:
        print(render(json.loads(Path(args.from_json).read_text())))
        return 0
    if args.tiny:
        args.identities, args.size = 24, "64x32"
    args.seeds = args.seeds or ("0,1" if args.tiny else "0,1,2,3,4")
    args.epochs = args.epochs or (1 if args.tiny else 10)
    seeds = [int(s) for s in args.seeds.split(",")]
    claims = [c for c in args.claims.split(",") if c]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(args.runs_dir) if args.runs_dir else out / "runs"
    t_all = time.perf_counter()
    data = runs_dir / "data"
    if not (data / "ufine_synth_3c.json").is_file():
        from ufinebench.synth.build import SynthConfig, build

        h, w = (int(x) for x in args.size.split("x"))
        build(data, SynthConfig(identities=args.identities, size=(h, w), seed=0, difficulty="easy"), workers=2, overwrite=True)
    names = list(dict.fromkeys(n for c in claims for n in NEEDS[c]))
    jobs = [(n, s) for s in seeds for n in names]  # seed-major: a cut-off run has whole seeds
    threads = max(1, (os.cpu_count() or 1) // args.parallel) if args.parallel > 1 else 0
    spec = {"epochs": args.epochs, "size": args.size, "workers": args.workers, "tiny": args.tiny}

    def submit(n: str, s: int) -> tuple[str, int, str, str, dict[str, Any], int]:
        return (n, s, str(data), str(runs_dir / f"{n}_s{s}"), spec, threads)

    if args.parallel > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.parallel, mp_context=mp.get_context("spawn")) as pool:
            for line in pool.map(_train_one, *zip(*[submit(n, s) for n, s in jobs], strict=False)):
                print("  " + line, flush=True)
    else:
        for n, s in jobs:
            print("  " + _train_one(*submit(n, s)), flush=True)
    raw = {n: {str(s): json.loads((runs_dir / f"{n}_s{s}" / "claims_eval.json").read_text()) for s in seeds} for n in names}
    results: dict[str, Any] = {
        "command": "python benchmarks/claims.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, python {sys.version.split()[0]}",
        "args": vars(args), "runs": raw, "effects": summarise(raw)}
    import torch

    if torch.cuda.is_available():
        results["machine"] += f", GPU {torch.cuda.get_device_name()}"
    if "D" in claims:
        d, table = claim_d(runs_dir / f"cfam_s{seeds[0]}", data, raw, out, seeds[0])
        results["D"] = {**d, "table": table}
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "claims.json").write_text(json.dumps(results, indent=1))
    md = render(results)
    (out / "claims.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
