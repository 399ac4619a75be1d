"""Naive, one-query-at-a-time reference metrics, written straight from the definitions.

Deliberately independent of ``ufinebench.metrics``: a full stable sort per query and plain
Python loops. Slow; used only by the tests.
"""

from __future__ import annotations

import math

import numpy as np


def rank_order(row: np.ndarray) -> np.ndarray:
    """Gallery indices by descending similarity, ties by ascending index."""
    return np.array(sorted(range(len(row)), key=lambda j: (-float(row[j]), j)), dtype=np.int64)


def _pnr(mean_pos: float, mean_neg: float | None) -> float:
    if mean_neg is None:
        return 1.0
    if mean_neg <= 1e-12:
        return 1.0 if mean_pos > 1e-12 else 1.0 - math.exp(-1.0)
    return 1.0 - math.exp(-mean_pos / mean_neg)


def sd_paper(row: np.ndarray, is_pos: np.ndarray) -> float:
    """SD as defined in DESIGN.md: rank-sorted, mapped by s/2 + 0.5."""
    order = rank_order(row)
    s = [float(row[j]) / 2 + 0.5 for j in order]
    m = [bool(is_pos[j]) for j in order]
    pos_vals = [v for v, p in zip(s, m, strict=False) if p]
    neg_vals = [v for v, p in zip(s, m, strict=False) if not p]
    pnr = _pnr(sum(pos_vals) / len(pos_vals), sum(neg_vals) / len(neg_vals) if neg_vals else None)
    ratios = []
    run_all = run_pos = 0.0
    seen = 0
    for k, (v, p) in enumerate(zip(s, m, strict=False)):
        run_all += v
        if p:
            run_pos += v
            seen += 1
            ratios.append(run_pos / run_all if run_all > 0 else seen / (k + 1))
    return pnr * sum(ratios) / len(ratios)


def sd_official(row: np.ndarray, is_pos: np.ndarray) -> float:
    """The released script's algorithm as described in issue 2 (rank mask on the unsorted row)."""
    s = [float(v) / 2 + 0.5 for v in row]
    order = rank_order(row)
    m = [1.0 if is_pos[j] else 0.0 for j in order]  # rank-ordered mask
    g = len(s)
    p = [s[j] * m[j] for j in range(g)]  # applied position-wise to the UNSORTED row
    num_rel = sum(m)
    sum_p = sum(p)
    mean_neg = (sum(s) - sum_p) / (g - num_rel) if g > num_rel else None
    pnr = _pnr(sum_p / num_rel, mean_neg)
    c_all = c_pos = 0.0
    acc = 0.0
    seen = 0
    for r in range(g):
        c_all += s[r]
        c_pos += p[r]
        if m[r]:
            seen += 1
            acc += c_pos / c_all if c_all > 0 else seen / (r + 1)
    return pnr * acc / num_rel


def reference_metrics(sim: np.ndarray, qids, gids, ks=(1, 5, 10), msd: str = "paper") -> dict:
    """All metrics by the naive per-query loop. Returns summary dict and per-query lists."""
    sim = np.asarray(sim, dtype=np.float64)
    qids = np.asarray(qids)
    gids = np.asarray(gids)
    firsts, aps, inps, sds = [], [], [], []
    per = []
    skipped = 0
    for qi in range(sim.shape[0]):
        is_pos = gids == qids[qi]
        if not is_pos.any():
            skipped += 1
            per.append(None)
            continue
        order = rank_order(sim[qi])
        hits = [r + 1 for r, j in enumerate(order) if is_pos[j]]
        first = hits[0]
        ap = sum((i + 1) / r for i, r in enumerate(hits)) / len(hits)
        inp = len(hits) / hits[-1]
        sd = sd_paper(sim[qi], is_pos) if msd == "paper" else sd_official(sim[qi], is_pos)
        firsts.append(first)
        aps.append(ap)
        inps.append(inp)
        sds.append(sd)
        per.append((first, ap, inp, sd))
    n = len(firsts)
    out = {f"R{k}": (100.0 * sum(f <= k for f in firsts) / n if n else 0.0) for k in ks}
    out.update(
        mAP=100.0 * sum(aps) / n if n else 0.0,
        mINP=100.0 * sum(inps) / n if n else 0.0,
        mSD=100.0 * sum(sds) / n if n else 0.0,
        queries=n,
        queries_without_positive=skipped,
    )
    return {"summary": out, "per_query": per}
