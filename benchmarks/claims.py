"""The paper's claims decided on UFine-Synth 2 by the protocol in docs/claims-protocol.md.

    python benchmarks/claims.py --pilot --out claims_pilot          # the protocol's pilot (data seed 100)
    python benchmarks/claims.py --out claims_out [--sdm] [--epochs 8] [--seeds 0,1,2] [--data-seeds 101,102]
                                [--identities 400] [--claims A,B,C,D] [--parallel N] [--runs-dir DIR] [--tiny]
    python benchmarks/claims.py --from docs/claims.json             # recompute every table from the raw results

Arms (every one the ``synth-cpu-small`` recipe from scratch, word head off): ``global`` (global
alignment only), ``gran`` (+ granularity decoder and its loss), ``cfam`` (+ hard-negative matching),
``irra`` (SDM or the recipe's loss, + MLM + ID at IRRA's weights), ``clip-sdm`` and ``cfam_coarse``
(CFAM on the coarse captions of the same images). ``--sdm``: IRRA and CLIP-SDM train with SDM (the
pilot decides); without it CLIP-SDM is the ``global`` model and is trained once, as ``global``.

Each run is evaluated in-domain (the test split) and on the 3C set by the cosine of its embedding;
its per-query first-hit rank, AP and SD are kept, so every interval (paired t over seeds; a
two-level bootstrap over seeds and query identities) is recomputed from ``claims.json`` alone.
Finished trainings are kept and an interrupted one continues from its last epoch.
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

from ufinebench.significance import (
    discordance,
    paired_ratio_interval,
    paired_t_interval,
    ratio_verdict,
    share_verdict,
    two_level_bootstrap,
)

TINY_MODEL = ["model.embed_dim=64", "model.vision_width=64", "model.text_width=64", "model.vision_layers=1", "model.text_layers=1",
              "data.bpe_vocab_size=400", "data.workers=0", "train.batch_size=16", "train.max_steps_per_epoch=4"]
# the paper's parts only; study 1's model as its protocol ran it (128 x 48 without the stem, the matcher's noised
# second text pass), pinned here since the preset moved on (2026-12-08)
COMMON = ["data.attribute_words=false", "data.attribute_pairs=false", "train.eval_every=0", "model.vision_stem=1",
          "data.match_token_drop=0.1", "data.match_token_unk=0.05"]
METRICS = ("R1", "R5", "R10", "mAP", "mINP", "mSD")
SETS = {"test": "ufine_synth.json", "3c": "ufine_synth_3c.json"}
# arm -> (overrides, training file)
ARMS: dict[str, tuple[list[str], str]] = {
    "global": (["model.arch=cfam", "model.granularity=false", "model.matching=false"], "ufine_synth.json"),
    "gran": (["model.arch=cfam", "model.matching=false"], "ufine_synth.json"),
    "cfam": (["model.arch=cfam"], "ufine_synth.json"),
    "irra": (["model.arch=irra", "model.mlm=true", "train.loss_weights.id=1.0", "train.loss_weights.mlm=1.0"], "ufine_synth.json"),
    "clip-sdm": (["model.arch=clip-sdm"], "ufine_synth.json"),
    "cfam_coarse": (["model.arch=cfam"], "ufine_synth_coarse.json"),
}
SDM_ARMS = ("irra", "clip-sdm")  # published with SDM: trained with it under --sdm
NEEDS = {"A": ["cfam", "cfam_coarse"], "B": ["cfam", "irra", "clip-sdm"], "C": ["global", "gran", "cfam"], "D": ["cfam"]}
# (claim, effect, arm a, arm b, evaluation set, paper's effect in points, paper's ratio a / b); all confirmatory
EFFECTS: list[tuple[str, str, str, str, str, float | None, float | None]] = [
    ("A", "fine - coarse training captions, 3C set", "cfam", "cfam_coarse", "3c", 7.8, 62.84 / 55.0),
    ("B1", "CFAM - IRRA (SDM + MLM + ID), in-domain", "cfam", "irra", "test", 2.02, 85.55 / 83.53),
    ("B2", "CFAM - CLIP-SDM, in-domain", "cfam", "clip-sdm", "test", None, None),
    ("C1", "+ granularity decoder (gran - global), in-domain", "gran", "global", "test", 1.97, 70.42 / 68.45),
    ("C2", "+ hard-negative matching (CFAM - gran), in-domain", "cfam", "gran", "test", 1.27, 71.69 / 70.42),
]
BONFERRONI = 1 - 0.05 / len(EFFECTS)  # 0.99: the confirmatory effects' interval level
EXPLORATORY = ("granularity", "style", "source")  # A's breakdown on the 3C set
BY_ARM = {"test": "detail", "3c": "gallery"}  # every arm's R1 by separating detail (in-domain) and by 3C gallery
TAG_KEYS = EXPLORATORY + tuple(BY_ARM.values())  # the query tags claims.json keeps
PILOT_DATA_SEED = 100


def _progress(run: Path) -> tuple[int, int, str]:
    """(epochs finished, epochs planned, global loss) of a run folder; (0, 0, "") without a readable checkpoint."""
    last = run / "checkpoints" / "last"
    if not last.is_file():
        return 0, 0, ""
    try:
        cfg = json.loads((run / "checkpoints" / last.read_text().strip() / "meta.json").read_text())
        return int(cfg["epoch"]) + 1, int(cfg["config"]["train"]["epochs"]), str(cfg["config"]["train"].get("global_loss", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0, ""


def _overrides(arm: str, spec: dict[str, Any]) -> list[str]:
    extra, _ = ARMS[arm]
    loss = "sdm" if spec["sdm"] and arm in SDM_ARMS else "infonce"
    return COMMON + extra + [f"train.global_loss={loss}", f"train.epochs={spec['epochs']}", f"model.image_size={spec['size']}",
                             f"data.workers={spec['workers']}"] + (TINY_MODEL if spec["tiny"] else [])


def _per_query(res: Any) -> dict[str, Any]:
    pq = res.per_query
    return {"overall": res.as_dict(), "rank": pq.first_hit_rank.tolist(), "ap": np.round(pq.ap, 5).tolist(),
            "sd": np.round(pq.sd, 5).tolist()}


def _train_one(arm: str, seed: int, data: str, run: str, spec: dict[str, Any], threads: int) -> str:
    """Train (or finish) one run and evaluate it in-domain and on the 3C set; returns a log line."""
    import torch

    from ufinebench.config import load_config
    from ufinebench.data.annotations import load_dataset
    from ufinebench.evaluate import evaluate_checkpoint
    from ufinebench.io import atomic_write_bytes
    from ufinebench.metrics import metrics_from_features
    from ufinebench.training import train

    if threads > 0:
        torch.set_num_threads(threads)
    run_dir = Path(run)
    done, planned, loss = _progress(run_dir)
    want = "sdm" if spec["sdm"] and arm in SDM_ARMS else "infonce"
    if done and (planned != spec["epochs"] or loss != want):
        raise SystemExit(f"claims.py: {run_dir} was trained for {planned} epochs with the {loss} loss, not {spec['epochs']} with {want};"
                         " use another --runs-dir")
    msg = f"{Path(data).parent.name} {arm} seed {seed}: "
    t0 = time.perf_counter()
    if done >= spec["epochs"]:
        msg += "training kept"
    elif done > 0:
        train(resume=run_dir, progress=False)
        msg += f"resumed after epoch {done}, trained in {time.perf_counter() - t0:.0f} s"
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # cut off before its first checkpoint: nothing worth keeping
        overrides = [f"data.dataset={Path(data) / ARMS[arm][1]}", f"train.out_dir={run_dir}", f"train.seed={seed}"]
        train(load_config("synth-cpu-small", overrides + _overrides(arm, spec)), progress=False)
        msg += f"trained in {time.perf_counter() - t0:.0f} s"
    cached = run_dir / "claims_eval.json"
    if not cached.is_file():
        device = "cuda" if torch.cuda.is_available() else "cpu"
        res: dict[str, Any] = {}
        for key, file in SETS.items():
            f = evaluate_checkpoint(str(run_dir), load_dataset(Path(data) / file, split="test").split("test"), device=device)["_features"]
            res[key] = _per_query(metrics_from_features(f.query_features, f.gallery_features, f.query_ids, f.gallery_ids, per_query=True))
            _write_queries(Path(data), key)
        atomic_write_bytes(cached, json.dumps(res).encode())
    return msg


def _write_queries(data: Path, key: str) -> None:
    """The query identities and tags of one evaluation set, in evaluation order (the same for every
    run on this data: written once, and again when an older file lacks a tag key)."""
    from ufinebench.data.annotations import load_dataset
    from ufinebench.evaluate import Features
    from ufinebench.io import atomic_write_bytes

    path = data.parent / f"queries_{key}.json"
    if path.is_file() and set(TAG_KEYS) <= set(json.loads(path.read_text())):
        return
    f = Features.of_split(load_dataset(data / SETS[key], split="test").split("test"))
    tags = {k: [str(t.get(k, "")) for t in f.query_tags] for k in TAG_KEYS}
    atomic_write_bytes(path, json.dumps({"ids": f.query_ids.tolist(), **tags}).encode())


# ------------------------------------------------------------------------------------------------
# From raw results to effects


def _pairs(raw: dict[str, Any], a: str, b: str) -> list[tuple[str, list[str]]]:
    """[(data seed, [training seeds both arms have])] in order."""
    out = []
    for d in sorted(set(raw.get(a, {})) & set(raw.get(b, {})), key=int):
        seeds = sorted(set(raw[a][d]) & set(raw[b][d]), key=int)
        if seeds:
            out.append((d, seeds))
    return out


def _hits(run: dict[str, Any], where: str, idx: np.ndarray | None = None) -> np.ndarray:
    r = np.asarray(run[where]["rank"])
    hit = (r == 1).astype(np.float64)  # (Q,) R1 per query (a query without a positive has rank -1)
    return hit if idx is None else hit[idx]


def effect_row(raw: dict[str, Any], queries: dict[str, Any], label: str, a: str, b: str, where: str, paper: float | None,
               paper_ratio: float | None, tag: tuple[str, str] | None = None, n_boot: int = 2000) -> dict[str, Any] | None:
    """One effect: per-pair R1, paired t intervals (points, ratio), the two-level bootstrap, and (confirmatory) the verdict."""
    pairs = _pairs(raw, a, b)
    if not pairs:
        return None
    groups, ra, rb = [], [], []
    for d, seeds in pairs:
        q = queries[d][where]
        idx = np.arange(len(q["ids"])) if tag is None else np.flatnonzero(np.asarray(q[tag[0]]) == tag[1])
        if idx.size == 0:
            return None
        ha = np.stack([_hits(raw[a][d][s], where, idx) for s in seeds])  # (S, Q')
        hb = np.stack([_hits(raw[b][d][s], where, idx) for s in seeds])
        groups.append((ha, hb, np.asarray(q["ids"])[idx]))
        ra += list(100 * ha.mean(1))
        rb += list(100 * hb.mean(1))
    boot = two_level_bootstrap(groups, (0.95, BONFERRONI), n_boot=n_boot, seed=0)
    t_pts = paired_t_interval(ra, rb)
    row: dict[str, Any] = {"effect": label, "a": a, "b": b, "set": where, "pairs": len(ra), "a_R1": float(np.mean(ra)),
                           "b_R1": float(np.mean(rb)), "t_points": t_pts.as_dict(), "bootstrap": boot.as_dict(),
                           "paper_points": paper, "paper_ratio": paper_ratio}
    try:
        row["t_ratio"] = paired_ratio_interval(ra, rb).as_dict()
    except ValueError:  # an arm at 0 in every pair: no ratio
        row["t_ratio"] = None
    if tag is None:
        lo, hi = boot.ratio_interval[BONFERRONI]
        row["verdict"] = ratio_verdict(lo, hi, paper_ratio)
        row["paper_inside"] = None if paper_ratio is None else bool(lo <= paper_ratio <= hi)
    return row


def summarise(results: dict[str, Any], n_boot: int = 2000) -> list[dict[str, Any]]:
    """Every confirmatory effect (with its verdict) and A's exploratory breakdown, from the raw per-query results."""
    raw, queries = results["runs"], results["queries"]
    alias = results["settings"].get("alias", {})
    rows = []
    for claim, label, a, b, where, paper, ratio in EFFECTS:
        row = effect_row(raw, queries, label, alias.get(a, a), alias.get(b, b), where, paper, ratio, n_boot=n_boot)
        if row is not None:
            rows.append({"claim": claim, "kind": "confirmatory", **row})
        if claim == "A" and row is not None:
            first = queries[sorted(queries, key=int)[0]]["3c"]
            for key in EXPLORATORY:
                for value in sorted(set(first[key]) - {""}):
                    cell = effect_row(raw, queries, f"{key} {value}", a, b, where, None, None, (key, value), n_boot)
                    if cell is not None:
                        rows.append({"claim": "A", "kind": "exploratory", **cell})
    return rows


def claim_d(results: dict[str, Any], n_boot: int = 2000) -> dict[str, Any]:
    """D on real runs: the share of run pairs that mAP and mSD order differently (per data seed and set), and r."""
    raw, queries = results["runs"], results["queries"]
    groups, maps, msds = [], [], []
    for d in sorted(queries, key=int):
        for where in SETS:
            runs = [raw[arm][d][s] for arm in sorted(raw) for s in sorted(raw[arm].get(d, {}), key=int)]
            if len(runs) < 2:
                continue
            groups.append((np.stack([r[where]["ap"] for r in runs]), np.stack([r[where]["sd"] for r in runs]),
                           np.asarray(queries[d][where]["ids"])))
            maps += [r[where]["overall"]["mAP"] for r in runs]
            msds += [r[where]["overall"]["mSD"] for r in runs]
    if not groups:
        return {}
    dis = discordance(groups, n_boot=n_boot, seed=0)
    r = float(np.corrcoef(maps, msds)[0, 1]) if len(maps) > 2 else math.nan
    return {**dis, "pearson_r_mSD_mAP": r, "runs": len(maps), "verdict": share_verdict(dis["low"], dis["high"])}


# ------------------------------------------------------------------------------------------------
# Tables


def _f(x: float | None, sign: bool = True, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def effects_table(rows: list[dict[str, Any]]) -> str:
    c = f"{BONFERRONI:g}"
    head = ("| claim | effect (a - b) | pairs | R1 a | R1 b | Δ points [95 % t] | Δ points [95 % boot] | ratio [95 % t] | "
            f"ratio [{100 * BONFERRONI:g} % boot] | paper Δ / ratio | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = ""
    for r in rows:
        b, t = r["bootstrap"], r["t_points"]
        tr = r["t_ratio"]
        pr = c if r["kind"] == "confirmatory" else "0.95"
        lo, hi = b["ratio_interval"][pr]
        paper = "-" if r["paper_points"] is None else f"{r['paper_points']:+.2f} / {r['paper_ratio']:.3f}"
        verdict = f"**{r['verdict']}**" if r.get("verdict") else ""
        ratio_t = "n/a" if tr is None else f"{tr['mean']:.3f} [{tr['low']:.3f}, {tr['high']:.3f}]"
        label = r["effect"] if r["kind"] == "confirmatory" else f"{r['effect']} (exploratory; ratio at 95 %)"
        body += (f"| {r['claim']} | {label} | {r['pairs']} | {r['a_R1']:.2f} | {r['b_R1']:.2f} | "
                 f"{_f(t['mean'])} [{_f(t['low'])}, {_f(t['high'])}] | {_f(b['points'])} [{_f(b['points_interval']['0.95'][0])}, "
                 f"{_f(b['points_interval']['0.95'][1])}] | {ratio_t} | {_f(b['ratio'], False, 3)} [{_f(lo, False, 3)}, {_f(hi, False, 3)}] | "
                 f"{paper} | {verdict} |\n")
    return head + body


def by_arm_table(results: dict[str, Any]) -> str:
    """Exploratory: every arm's mean R1 over its runs by separating detail (in-domain) and by 3C gallery."""
    raw, queries = results["runs"], results["queries"]
    md = ""
    for where, key in BY_ARM.items():
        # a base of a family lists every detail its variants differ in ("glasses+belt"): it counts under each
        member = {d: [set(t.split("+")) - {""} for t in queries[d][where].get(key, [])] for d in queries}
        values = sorted(set().union(*(m for d in member for m in member[d])))
        if not values:
            continue
        counts = {v: sum(v in m for d in member for m in member[d]) for v in values}
        md += (f"| arm ({where}, by {key}) | " + " | ".join(f"{v} ({counts[v]})" for v in values) + " |\n|"
               + "---|" * (len(values) + 1) + "\n")
        for arm in raw:
            cells = []
            for v in values:
                r1 = [100 * float(np.mean(np.asarray(raw[arm][d][s][where]["rank"])[np.asarray([v in m for m in member[d]])] == 1))
                      for d in raw[arm] for s in raw[arm][d] if any(v in m for m in member[d])]
                cells.append(f"{np.mean(r1):.1f}" if r1 else "n/a")
            md += f"| {arm} | " + " | ".join(cells) + " |\n"
        md += "\n"
    return md


def runs_table(results: dict[str, Any]) -> str:
    raw, ceil = results["runs"], results.get("ceilings", {})
    head = "| arm | set | runs | " + " | ".join(METRICS) + " |\n|" + "---|" * (len(METRICS) + 3) + "\n"
    body = ""
    for arm in raw:
        for where in SETS:
            vals = [raw[arm][d][s][where]["overall"] for d in sorted(raw[arm], key=int) for s in sorted(raw[arm][d], key=int)]
            cells = [f"{np.mean([v[m] for v in vals]):.2f} ± {np.std([v[m] for v in vals], ddof=1) if len(vals) > 1 else 0:.2f}"
                     for m in METRICS]
            body += f"| {arm} | {where} | {len(vals)} | " + " | ".join(cells) + " |\n"
    if ceil:
        body += "\nCeilings (a perfect attribute reader's R1, per data seed): " + "; ".join(
            f"data seed {d}: in-domain {c['in-domain test']:.1f}, 3C fine {c.get('3C fine', math.nan):.1f}" for d, c in sorted(ceil.items())) + "\n"
    return head + body


def render(results: dict[str, Any]) -> str:
    """claims.md from claims.json: settings, effects with intervals and verdicts, every arm, D."""
    rows = results["effects"]
    s = results["settings"]
    md = [f"Command: `{results['command']}`\n",
          f"Data seeds {', '.join(map(str, s['data_seeds']))}; training seeds {', '.join(map(str, s['seeds']))}; {s['identities']} identities "
          f"at {s['size']}; {s['epochs']} epochs; IRRA / CLIP-SDM global loss: {'SDM' if s['sdm'] else 'the recipe soft-target cross-entropy'}"
          + (f"; aliases {s['alias']}" if s.get("alias") else "") + ".\n",
          "### Effects (confirmatory: verdict on the ratio's 99 % two-level bootstrap interval; exploratory: no verdict)\n",
          effects_table(rows), "### Arms (mean ± sample standard deviation over every data and training seed)\n", runs_table(results)]
    by_arm = by_arm_table(results)
    if by_arm:
        md += ["### Arms by separating detail and by 3C gallery (exploratory: mean R1 over every run; queries over both data seeds "
               "in brackets; a family's base counts under each of its details)\n", by_arm]
    d = results.get("D")
    if d:
        md += ["### D. Do mSD and mAP order runs differently?\n",
               f"Discordant pairs: {d['discordant_pairs']} of {d['pairs']} ({100 * d['share']:.1f} %, 95 % bootstrap over identities "
               f"[{100 * d['low']:.1f}, {100 * d['high']:.1f}] %); Pearson r of mSD with mAP over {d['runs']} run evaluations: "
               f"{d['pearson_r_mSD_mAP']:.4f}. Verdict (threshold 5 %): **{d['verdict']}**.\n"]
        if "squash" in d:
            q = d["squash"]
            md.append(f"Illustration (decides nothing): a monotone squash of one CFAM's in-domain scores keeps R1 {q['original']['R1']:.2f} "
                      f"and mAP {q['original']['mAP']:.2f} and moves mSD from {q['original']['mSD']:.2f} to {q['squashed']['mSD']:.2f}.\n")
    if "seconds" in results:
        md.append(f"Time of this invocation: {results['seconds']} s on {results['machine']} (finished trainings are kept, so a rerun "
                  "that finds them takes seconds).\n")
    return "\n".join(md)


def _squash(run: Path, data: Path, out: Path) -> dict[str, Any]:
    """The illustration: one CFAM's in-domain scores and the same squashed by a monotone map (same ranks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ufinebench.data.annotations import load_dataset
    from ufinebench.evaluate import evaluate_checkpoint
    from ufinebench.metrics import metrics_from_similarity, unit_rows

    device = "cuda" if torch.cuda.is_available() else "cpu"
    f = evaluate_checkpoint(str(run), load_dataset(data / SETS["test"], split="test").split("test"), device=device)["_features"]
    sim = unit_rows(f.query_features) @ unit_rows(f.gallery_features).T  # (Q, G)
    pos = f.query_ids[:, None] == f.gallery_ids[None, :]
    squashed = 0.5 + 0.1 * np.tanh(2 * sim)
    res = {}
    for name, s in (("original", sim), ("squashed", squashed)):
        m = metrics_from_similarity(s, f.query_ids, f.gallery_ids).as_dict()
        res[name] = m
        fig, ax = plt.subplots(figsize=(5, 3))
        bins = np.linspace(float(s.min()), float(s.max()), 60)
        ax.hist(s[~pos], bins=bins, density=True, alpha=0.6, color="#c0392b", label="negatives")
        ax.hist(s[pos], bins=bins, density=True, alpha=0.6, color="#27ae60", label="positives")
        ax.set_title(f"{name}: R1 {m['R1']:.1f} mAP {m['mAP']:.1f} mSD {m['mSD']:.2f}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"D_{name}.png", dpi=100)
        plt.close(fig)
    return res


# ------------------------------------------------------------------------------------------------


def _build(data: Path, identities: int, size: str, seed: int) -> dict[str, float]:
    from ufinebench.synth.build import SynthConfig, build, dataset_ceilings

    if not (data / SETS["3c"]).is_file():
        h, w = (int(x) for x in size.split("x"))
        build(data, SynthConfig(identities=identities, size=(h, w), seed=seed, difficulty="standard"), workers=2, overwrite=True)
    return dataset_ceilings(data)


def _train_all(jobs: list[tuple[str, int, int]], runs_dir: Path, spec: dict[str, Any], parallel: int) -> None:
    threads = max(1, (os.cpu_count() or 1) // parallel) if parallel > 1 else 0
    args = [(a, s, str(runs_dir / f"d{d}" / "data"), str(runs_dir / f"d{d}" / f"{a}_s{s}"), spec, threads) for a, s, d in jobs]
    if parallel > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(parallel, mp_context=mp.get_context("spawn")) as pool:
            for line in pool.map(_train_one, *zip(*args, strict=True)):
                print("  " + line, flush=True)
    else:
        for a in args:
            print("  " + _train_one(*a), flush=True)


def _load_eval(runs_dir: Path, arm: str, d: int, s: int) -> dict[str, Any]:
    return json.loads((runs_dir / f"d{d}" / f"{arm}_s{s}" / "claims_eval.json").read_text())


def pilot(args: argparse.Namespace, runs_dir: Path, out: Path) -> int:
    """The protocol's pilot on data seed 100: cfam and global (seeds 0, 1), clip-sdm with SDM (seed 0); prints the rules' outcomes."""
    spec = {"epochs": args.epochs, "size": args.size, "workers": args.workers, "tiny": args.tiny, "sdm": True}
    d = PILOT_DATA_SEED
    ceil = _build(runs_dir / f"d{d}" / "data", args.identities, args.size, d)
    _train_all([("cfam", 0, d), ("global", 0, d), ("cfam", 1, d), ("global", 1, d), ("clip-sdm", 0, d)], runs_dir, spec, args.parallel)
    r1 = {(a, s): _load_eval(runs_dir, a, d, s)["test"]["overall"]["R1"] for a, s in (("cfam", 0), ("cfam", 1), ("global", 0), ("global", 1),
                                                                                     ("clip-sdm", 0))}
    cfam = (r1["cfam", 0] + r1["cfam", 1]) / 2
    s = math.sqrt((np.var([r1["cfam", 0], r1["cfam", 1]], ddof=1) + np.var([r1["global", 0], r1["global", 1]], ddof=1)) / 2)
    n = math.ceil((2.1 * s * math.sqrt(2) / 3) ** 2)
    n_t = min(3, max(2, math.ceil(n / 2)))
    epochs = 12 if cfam < 10 else (6 if cfam > 75 else args.epochs)
    use_sdm = r1["clip-sdm", 0] >= 0.5 * r1["global", 0]
    half = 2.1 * s * math.sqrt(2) / math.sqrt(2 * n_t)
    report = {"in-domain R1": {f"{a} s{s_}": v for (a, s_), v in r1.items()}, "ceilings": ceil, "pooled seed sd": s,
              "pairs needed": n, "training seeds per data seed": n_t, "epochs": epochs, "sdm": use_sdm,
              "expected 95 % half-width (points)": half}
    (out / "pilot.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="claims_out")
    ap.add_argument("--seeds", default=None, help="training seeds (default 0,1,2; --tiny: 0,1)")
    ap.add_argument("--data-seeds", default=None, help="UFine-Synth 2 data seeds (default 101,102; --tiny: 101)")
    ap.add_argument("--identities", type=int, default=400)
    ap.add_argument("--size", default="128x48")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 8; --tiny: 1)")
    ap.add_argument("--sdm", action="store_true", help="IRRA and CLIP-SDM train with SDM (the pilot's rule decides)")
    ap.add_argument("--claims", default="A,B,C,D")
    ap.add_argument("--pilot", action="store_true", help="the protocol's pilot (data seed 100): prints the rules' outcomes")
    ap.add_argument("--tiny", action="store_true", help="a one-minute check that the script works (CI)")
    ap.add_argument("--workers", type=int, default=0, help="data-loading processes per training run")
    ap.add_argument("--parallel", type=int, default=1, help="training runs side by side (each gets cores / N threads)")
    ap.add_argument("--runs-dir", help="where the data and training runs go (default OUT/runs)")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap draws")
    ap.add_argument("--from", dest="from_json", help="only recompute claims.md from an existing claims.json")
    args = ap.parse_args()
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        boot = results["settings"].get("boot", 2000)
        results["effects"] = summarise(results, boot)
        if "D" in results:
            results["D"] = {**claim_d(results, boot), **({"squash": results["D"]["squash"]} if "squash" in results["D"] else {})}
        print(render(results))
        return 0
    if args.tiny:
        args.identities, args.size = 24, "64x32"
    args.seeds = args.seeds or ("0,1" if args.tiny else "0,1,2")
    args.data_seeds = args.data_seeds or ("101" if args.tiny else "101,102")
    args.epochs = args.epochs or (1 if args.tiny else 8)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(args.runs_dir) if args.runs_dir else out / "runs"
    if args.pilot:
        return pilot(args, runs_dir, out)
    seeds = [int(s) for s in args.seeds.split(",")]
    data_seeds = [int(s) for s in args.data_seeds.split(",")]
    if PILOT_DATA_SEED in data_seeds:
        raise SystemExit(f"claims.py: data seed {PILOT_DATA_SEED} is the pilot's; its runs enter no result")
    claims = [c for c in args.claims.split(",") if c]
    if unknown := set(claims) - set(NEEDS):
        raise SystemExit(f"claims.py: unknown claims {sorted(unknown)} (A, B, C, D)")
    alias = {} if args.sdm else {"clip-sdm": "global"}  # without SDM, CLIP-SDM is the global-only model
    arms = list(dict.fromkeys(alias.get(a, a) for c in claims for a in NEEDS[c]))
    t_all = time.perf_counter()
    spec = {"epochs": args.epochs, "size": args.size, "workers": args.workers, "tiny": args.tiny, "sdm": args.sdm}
    ceilings = {str(d): _build(runs_dir / f"d{d}" / "data", args.identities, args.size, d) for d in data_seeds}
    _train_all([(a, s, d) for d in data_seeds for s in seeds for a in arms], runs_dir, spec, args.parallel)  # data- then seed-major
    raw = {a: {str(d): {str(s): _load_eval(runs_dir, a, d, s) for s in seeds} for d in data_seeds} for a in arms}
    for d in data_seeds:
        for w in SETS:
            _write_queries(runs_dir / f"d{d}" / "data", w)
    queries = {str(d): {w: json.loads((runs_dir / f"d{d}" / f"queries_{w}.json").read_text()) for w in SETS} for d in data_seeds}
    results: dict[str, Any] = {
        "protocol": "docs/claims-protocol.md", "command": "python benchmarks/claims.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, python {sys.version.split()[0]}",
        "settings": {"seeds": seeds, "data_seeds": data_seeds, "identities": args.identities, "size": args.size, "epochs": args.epochs,
                     "sdm": args.sdm, "alias": alias, "claims": claims, "boot": args.boot, "tiny": args.tiny},
        "ceilings": ceilings, "queries": queries, "runs": raw}
    import torch

    if torch.cuda.is_available():
        results["machine"] += f", GPU {torch.cuda.get_device_name()}"
    results["effects"] = summarise(results, args.boot)
    if "D" in claims:
        results["D"] = {**claim_d(results, args.boot),
                        "squash": _squash(runs_dir / f"d{data_seeds[0]}" / f"cfam_s{seeds[0]}", runs_dir / f"d{data_seeds[0]}" / "data", out)}
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "claims.json").write_text(json.dumps(results))
    md = render(results)
    (out / "claims.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
