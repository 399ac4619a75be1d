"""Is a difference between two models real? Paired intervals over seeds (and verdicts on claims).

Two runs trained with the same seed share their data order and initial draws, so the per-seed
difference cancels much of the seed-to-seed noise; a Student-t interval on those differences is
what ``benchmarks/claims.py`` reports for each of the paper's claims. Written with numpy and the
standard library only (SciPy is not a dependency): the t quantile comes from integrating the
t density numerically, which tests/test_significance.py checks against printed t tables.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

REPRODUCED, NOT_REPRODUCED, OPEN = "reproduced", "not reproduced", "open"


def _t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (Simpson's rule on the density)."""
    if t == 0:
        return 0.5
    x = np.linspace(0.0, abs(t), 20001)  # even number of intervals, as Simpson's rule needs
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    dens = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    h = x[1] - x[0]
    area = h / 3 * (dens[0] + dens[-1] + 4 * dens[1:-1:2].sum() + 2 * dens[2:-1:2].sum())
    return float(0.5 + math.copysign(area, t))


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` >= 1 degrees of freedom (bisection on the CDF)."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class PairedInterval:
    """Mean of paired differences a - b with its Student-t confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_t_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedInterval:
    """Interval for the mean of ``a[i] - b[i]`` (one pair per seed); NaN bounds below two pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = int(d.size)
    if n == 0:
        raise ValueError("no pairs")
    mean = float(d.mean())
    if n < 2:
        return PairedInterval(mean, math.nan, math.nan, n, math.nan, confidence)
    sd = float(d.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedInterval(mean, mean - half, mean + half, n, sd, confidence)


def claim_verdict(iv: PairedInterval, paper_effect: float | None) -> str:
    """Verdict on a claim whose effect the paper reports as ``paper_effect`` (> 0: the claimed direction).

    ``reproduced``: the interval excludes 0 on the paper's side. ``not reproduced``: it excludes 0
    on the other side, or (still containing 0) it lies wholly below the paper's effect size, so an
    effect as large as the paper's is ruled out. ``open`` otherwise (also with fewer than 2 seeds).
    """
    if math.isnan(iv.low) or math.isnan(iv.high):
        return OPEN
    if iv.low > 0:
        return REPRODUCED
    if iv.high < 0:
        return NOT_REPRODUCED
    if paper_effect is not None and iv.high < paper_effect:
        return NOT_REPRODUCED
    return OPEN


def paired_bootstrap(
    a: Sequence[float | None], b: Sequence[float | None], n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
) -> PairedInterval:
    """Percentile bootstrap interval for mean(a - b) over paired items (queries); items None on either side are left out.

    Queries are resampled with replacement ``n_boot`` times (a fixed seed, so the interval is
    reproducible); ``sd`` is the bootstrap standard error.
    """
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        raise ValueError("no pairs")
    d = np.asarray([x - y for x, y in pairs], dtype=np.float64)  # (n,)
    n = d.size
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, min(n_boot, 50_000_000 // max(n, 1)))  # bounded memory: (step, n) indices at a time
    for i in range(0, n_boot, step):
        k = min(step, n_boot - i)
        means[i : i + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return PairedInterval(float(d.mean()), float(lo), float(hi), n, float(means.std(ddof=1)), confidence)


def paired_ratio_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedInterval:
    """Interval for the ratio a / b from paired runs: a Student-t interval on the mean of log(a_i / b_i),
    exponentiated back (``mean`` is the geometric mean of the ratios; ``sd`` stays on the log scale).
    Pairs where either side is 0 or below are left out (no log)."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x > 0 and y > 0]
    if not pairs:
        raise ValueError("no pairs with both sides above 0")
    la = [math.log(x) for x, _ in pairs]
    lb = [math.log(y) for _, y in pairs]
    iv = paired_t_interval(la, lb, confidence)
    return PairedInterval(math.exp(iv.mean), math.exp(iv.low), math.exp(iv.high), iv.n, iv.sd, confidence)


def ratio_verdict(low: float, high: float, paper_ratio: float | None) -> str:
    """Verdict on a claim from an interval for the ratio a / b (a better than b: above 1).

    ``reproduced``: the interval lies above 1. ``not reproduced``: it lies below 1, or wholly below
    the paper's ratio (an effect as large as the paper's, relative to its baseline, is ruled out).
    ``open`` otherwise. The rule docs/claims-protocol.md fixes before the runs.
    """
    if math.isnan(low) or math.isnan(high):
        return OPEN
    if low > 1:
        return REPRODUCED
    if high < 1 or (paper_ratio is not None and high < paper_ratio):
        return NOT_REPRODUCED
    return OPEN


def identity_weights(persons: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, Q) weights of the queries when the persons are drawn with replacement, n_boot times:
    a query counts as often as its person was drawn (a person's queries go together)."""
    uniq, index = np.unique(persons, return_inverse=True)  # index: (Q,) person of each query
    draws = rng.integers(0, uniq.size, size=(n_boot, uniq.size))  # (n_boot, P)
    counts = np.zeros((n_boot, uniq.size), dtype=np.float64)
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, index]  # (n_boot, Q)


def _run_means(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(n_boot, R) mean of each run's per-query values x (R, Q) under the query weights w (n_boot, Q)."""
    return (w @ x.T) / w.sum(1, keepdims=True)


@dataclass(frozen=True)
class BootstrapEffect:
    """An effect of a over b (difference in points and ratio of means) with percentile intervals."""

    points: float
    ratio: float
    points_interval: dict[float, tuple[float, float]]  # confidence -> (low, high)
    ratio_interval: dict[float, tuple[float, float]]
    n_boot: int

    def as_dict(self) -> dict[str, Any]:
        return {"points": self.points, "ratio": self.ratio, "n_boot": self.n_boot,
                "points_interval": {f"{c:g}": list(v) for c, v in self.points_interval.items()},
                "ratio_interval": {f"{c:g}": list(v) for c, v in self.ratio_interval.items()}}


def two_level_bootstrap(
    groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], confidences: Sequence[float] = (0.95, 0.99),
    n_boot: int = 2000, seed: int = 0,
) -> BootstrapEffect:
    """Paired bootstrap over training seeds and query identities, one group per data seed.

    Each group is ``(a, b, persons)``: per-query values of arm a and arm b, (S, Q) each with the same
    S training seeds in the same order (row s of a and b share a seed), and the (Q,) person of each
    query. A draw resamples, per group, the persons (their queries go together) and the seeds (the
    same rows for a and b); the effect is the mean over groups of mean_a - mean_b (points, in the
    values' unit times 100) and the ratio of the means over groups. Percentile intervals.
    """
    rng = np.random.default_rng(seed)
    sum_a = np.zeros(n_boot)
    sum_b = np.zeros(n_boot)
    point_a = point_b = 0.0
    for a, b, persons in groups:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)  # (S, Q)
        if a.shape != b.shape or a.shape[1] != len(persons):
            raise ValueError(f"arms differ in shape or queries: {a.shape} vs {b.shape}, {len(persons)} persons")
        w = identity_weights(np.asarray(persons), n_boot, rng)  # (n_boot, Q)
        per_run_a, per_run_b = _run_means(w, a), _run_means(w, b)  # (n_boot, S)
        rows = rng.integers(0, a.shape[0], size=(n_boot, a.shape[0]))  # (n_boot, S) seeds drawn
        sum_a += np.take_along_axis(per_run_a, rows, 1).mean(1)
        sum_b += np.take_along_axis(per_run_b, rows, 1).mean(1)
        point_a += float(a.mean())
        point_b += float(b.mean())
    k = len(groups)
    ma, mb = 100 * sum_a / k, 100 * sum_b / k  # (n_boot,) in points
    diff, ratio = ma - mb, np.divide(ma, mb, out=np.full(n_boot, np.nan), where=mb > 0)

    def pct(x: np.ndarray, c: float) -> tuple[float, float]:
        lo, hi = np.nanquantile(x, [(1 - c) / 2, 1 - (1 - c) / 2])
        return float(lo), float(hi)

    pa, pb = 100 * point_a / k, 100 * point_b / k
    return BootstrapEffect(pa - pb, pa / pb if pb > 0 else math.nan, {c: pct(diff, c) for c in confidences},
                           {c: pct(ratio, c) for c in confidences}, n_boot)


def discordance(
    groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
) -> dict[str, Any]:
    """How often two metrics order two runs differently, with a bootstrap interval over query identities.

    Each group is ``(x, y, persons)``: per-query values of metric x (say AP) and metric y (say SD),
    (R, Q) for the R runs evaluated on the same Q queries, and the (Q,) person of each query. Over
    every pair of runs in a group, a pair is discordant when the means of x and of y order the two
    runs differently (a pair equal on either is not counted). Returns the share of discordant pairs
    over all groups, its percentile interval, and the counts.
    """

    def share(mx: np.ndarray, my: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(discordant, counted) pair counts; mx, my: (..., R) run means."""
        i, j = np.triu_indices(mx.shape[-1], 1)
        sx, sy = np.sign(mx[..., i] - mx[..., j]), np.sign(my[..., i] - my[..., j])
        counted = (sx != 0) & (sy != 0)
        return ((sx != sy) & counted).sum(-1), counted.sum(-1)

    rng = np.random.default_rng(seed)
    disc, count = np.zeros(n_boot), np.zeros(n_boot)
    d0 = c0 = 0
    for x, y, persons in groups:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)  # (R, Q)
        d, c = share(x.mean(1), y.mean(1))
        d0, c0 = d0 + int(d), c0 + int(c)
        w = identity_weights(np.asarray(persons), n_boot, rng)  # (n_boot, Q)
        wx, wy = _run_means(w, x), _run_means(w, y)  # (n_boot, R)
        d, c = share(wx, wy)
        disc += d
        count += c
    rates = np.divide(disc, count, out=np.full(n_boot, np.nan), where=count > 0)
    lo, hi = np.nanquantile(rates, [(1 - confidence) / 2, 1 - (1 - confidence) / 2]) if np.isfinite(rates).any() else (math.nan, math.nan)
    return {"share": d0 / c0 if c0 else math.nan, "low": float(lo), "high": float(hi), "discordant_pairs": d0, "pairs": c0,
            "confidence": confidence, "n_boot": n_boot}


def share_verdict(low: float, high: float, threshold: float = 0.05) -> str:
    """D's rule (docs/claims-protocol.md): reproduced when the interval's lower end is above
    ``threshold``, not reproduced when its upper end is below, open otherwise."""
    if math.isnan(low) or math.isnan(high):
        return OPEN
    return REPRODUCED if low > threshold else (NOT_REPRODUCED if high < threshold else OPEN)
