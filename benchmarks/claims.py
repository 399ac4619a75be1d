"""The paper's claims re-examined on UFine-Synth, several seeds each, mean +- std.

    python benchmarks/claims.py --out claims_out [--seeds 0,1,2] [--identities 300] [--epochs 8]
                                [--claims A,B,C,D] [--tiny] [--workers N] [--runs-dir DIR]   (CUDA when available)

A. Fine versus coarse training texts: CFAM trained on ``ufine_synth.json`` versus on
   ``ufine_synth_coarse.json``, both evaluated on the 3C-style set (overall and per granularity,
   style and domain). Paper: UFine3C R1 62.84 when trained on UFine6926 versus about 55 from
   coarse datasets.
B. CFAM versus ``irra`` versus ``clip-sdm`` in-domain (test split). Paper: UFine6926 R1 85.55
   (CFAM) vs 83.53 (IRRA).
C. Ablation of CFAM's granularity loss and hard-negative matching, in-domain. Paper: +1.97 and
   +1.27 R1.
D. mSD versus rank metrics: pairs of runs whose R1 and mAP are close but whose similarity
   distributions differ, and a model whose scores are squashed by a monotone map (identical
   ranking, so identical R@K and mAP) with its mSD; histograms are written as PNGs.

Writes ``OUT/claims.json``, ``OUT/claims.md`` (the tables) and the histogram PNGs. Every run is a
real training of the ``synth-cpu-small`` preset (seeded); ``--tiny`` shrinks everything so that
CI can check the script works in a minute.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ufinebench.config import load_config
from ufinebench.data.annotations import load_dataset
from ufinebench.evaluate import evaluate_checkpoint
from ufinebench.metrics import metrics_from_similarity, unit_rows
from ufinebench.synth.build import SynthConfig, build
from ufinebench.train import train

TINY_MODEL = ["model.embed_dim=64", "model.vision_width=64", "model.text_width=64", "model.vision_layers=1", "model.text_layers=1",
              "data.bpe_vocab_size=400", "data.workers=0", "train.batch_size=16", "train.max_steps_per_epoch=4"]
METRICS = ("R1", "R5", "R10", "mAP", "mINP", "mSD")


def _run(out: Path, name: str, seed: int, dataset: Path, extra: list[str], args: argparse.Namespace) -> Path:
    run = Path(args.runs_dir or out / "runs") / f"{name}_s{seed}"
    if (run / "checkpoints" / "last").is_file():
        return run  # reuse a finished run (the script can be resumed)
    overrides = [f"data.dataset={dataset}", f"train.out_dir={run}", f"train.seed={seed}", f"train.epochs={args.epochs}",
                 "train.eval_every=0", f"model.image_size={args.size}", f"data.workers={args.workers}"] + extra + (TINY_MODEL if args.tiny else [])
    t0 = time.perf_counter()
    train(load_config("synth-cpu-small", overrides), progress=False)
    print(f"  trained {name} seed {seed} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def _mean_std(rows: list[dict[str, float]]) -> dict[str, str]:
    return {m: f"{np.mean([r[m] for r in rows]):.2f} ± {np.std([r[m] for r in rows]):.2f}" for m in METRICS}


def _table(title: str, rows: dict[str, dict[str, str]]) -> str:
    head = "| " + " | ".join(["run"] + list(METRICS)) + " |\n|" + "---|" * (len(METRICS) + 1) + "\n"
    body = "".join("| " + " | ".join([name] + [cells[m] for m in METRICS]) + " |\n" for name, cells in rows.items())
    return f"### {title}\n\n{head}{body}\n"


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="claims_out")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--identities", type=int, default=300)
    ap.add_argument("--size", default="128x48")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--claims", default="A,B,C,D")
    ap.add_argument("--tiny", action="store_true", help="a one-minute check that the script works (CI)")
    ap.add_argument("--workers", type=int, default=1, help="data-loading processes per training run")
    ap.add_argument("--runs-dir", help="where the training runs go (default OUT/runs)")
    args = ap.parse_args()
    if args.tiny:
        args.identities, args.size, args.epochs, args.seeds = 24, "64x32", 1, "0,1"
    seeds = [int(s) for s in args.seeds.split(",")]
    claims = set(args.claims.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    data = (Path(args.runs_dir) if args.runs_dir else out) / "data"
    h, w = (int(x) for x in args.size.split("x"))
    if not (data / "ufine_synth.json").is_file():
        build(data, SynthConfig(identities=args.identities, size=(h, w), seed=0), workers=2, overwrite=True)
    fine, coarse, threec = data / "ufine_synth.json", data / "ufine_synth_coarse.json", data / "ufine_synth_3c.json"
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    test = load_dataset(fine, split="test").split("test")
    set3c = load_dataset(threec, split="test").split("test")
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {sys.version.split()[0]}",
                               "args": vars(args), "claims": {}}
    def flush() -> None:  # written after every claim, so a cut-off run keeps what it finished
        (out / "claims.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "claims.md").write_text("\n".join(md))

    md = [f"Command: `python benchmarks/claims.py --out {args.out} --seeds {args.seeds} --identities {args.identities} "
          f"--size {args.size} --epochs {args.epochs}{' --tiny' if args.tiny else ''}`\n"]

    def runs(name: str, extra: list[str], dataset: Path = fine) -> list[Path]:
        return [_run(out, name, s, dataset, extra, args) for s in seeds]

    cfam = runs("cfam", ["model.arch=cfam"])
    if "A" in claims:
        coarse_runs = runs("cfam_coarse", ["model.arch=cfam"], coarse)
        rows, table = {}, {}
        for label, rs in (("trained on fine texts", cfam), ("trained on coarse texts", coarse_runs)):
            ev = [evaluate_checkpoint(str(r), set3c, device=device) for r in rs]
            rows[label] = {"overall": [e["overall"] for e in ev],
                           "breakdown": {k: {v: [e["breakdown"][k][v] for e in ev] for v in ev[0]["breakdown"][k]}
                                         for k in ("granularity", "style", "source")}}
            table[f"{label}: 3C overall"] = _mean_std(rows[label]["overall"])
            for k in ("granularity", "style", "source"):
                for v, lst in rows[label]["breakdown"][k].items():
                    table[f"{label}: {k} {v}"] = _mean_std(lst)
        results["claims"]["A"] = rows
        md.append(_table("A. Fine versus coarse training texts, evaluated on the 3C-style set", table))
        flush()
    if "B" in claims or "C" in claims:
        variants = {"cfam": cfam}
        if "B" in claims:
            variants["irra"] = runs("irra", ["model.arch=irra"])
            variants["clip-sdm"] = runs("clip-sdm", ["model.arch=clip-sdm"])
        if "C" in claims:
            variants["cfam without granularity"] = runs("cfam_nogran", ["model.arch=cfam", "model.granularity=false"])
            variants["cfam without matching"] = runs("cfam_nomatch", ["model.arch=cfam", "model.matching=false"])
        rows = {k: [evaluate_checkpoint(str(r), test, device=device)["overall"] for r in rs] for k, rs in variants.items()}
        results["claims"]["BC"] = rows
        md.append(_table("B/C. In-domain test split: CFAM, baselines and ablations", {k: _mean_std(v) for k, v in rows.items()}))
        flush()
    if "D" in claims:
        ev = evaluate_checkpoint(str(cfam[0]), test, device=device)
        f = ev["_features"]
        q, g = f["query_features"], f["gallery_features"]
        sim = unit_rows(q) @ unit_rows(g).T
        pos = f["query_ids"][:, None] == f["gallery_ids"][None, :]
        squashed = 0.5 + 0.1 * np.tanh(2 * sim)  # monotone: the same ranking
        a = metrics_from_similarity(sim, f["query_ids"], f["gallery_ids"]).as_dict()
        b = metrics_from_similarity(squashed, f["query_ids"], f["gallery_ids"]).as_dict()
        _hist(sim, pos, f"CFAM seed {seeds[0]}: R1 {a['R1']:.1f} mAP {a['mAP']:.1f} mSD {a['mSD']:.2f}", out / "D_original.png")
        _hist(squashed, pos, f"squashed scores: R1 {b['R1']:.1f} mAP {b['mAP']:.1f} mSD {b['mSD']:.2f}", out / "D_squashed.png")
        pairs = []
        allruns = {k: v for k, v in results["claims"].get("BC", {}).items()}
        flat = [(k, i, r) for k, lst in allruns.items() for i, r in enumerate(lst)]
        for x in range(len(flat)):
            for y in range(x + 1, len(flat)):
                r1, r2 = flat[x][2], flat[y][2]
                if abs(r1["R1"] - r2["R1"]) <= 1.0 and abs(r1["mAP"] - r2["mAP"]) <= 1.0:
                    pairs.append({"a": f"{flat[x][0]} #{flat[x][1]}", "b": f"{flat[y][0]} #{flat[y][1]}",
                                  "dR1": r1["R1"] - r2["R1"], "dmAP": r1["mAP"] - r2["mAP"], "dmSD": r1["mSD"] - r2["mSD"]})
        pairs.sort(key=lambda p: -abs(p["dmSD"]))
        results["claims"]["D"] = {"original": a, "squashed": b, "close_rank_pairs": pairs[:10]}
        md.append(_table("D. Same ranking, different similarity distribution", {"CFAM scores": {m: f"{a[m]:.2f}" for m in METRICS},
                                                                             "monotone squashed scores": {m: f"{b[m]:.2f}" for m in METRICS}}))
        if pairs:
            md.append("Runs with R1 and mAP within 1 point of each other (largest mSD gap first):\n\n| a | b | ΔR1 | ΔmAP | ΔmSD |\n|---|---|---|---|---|\n"
                      + "".join(f"| {p['a']} | {p['b']} | {p['dR1']:+.2f} | {p['dmAP']:+.2f} | {p['dmSD']:+.2f} |\n" for p in pairs[:10]) + "\n")
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    gpu = f", GPU {torch.cuda.get_device_name()}" if device == "cuda" else ""
    md.append(f"Total time: {results['seconds']} s on {results['machine']}{gpu}.\n")
    flush()
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
