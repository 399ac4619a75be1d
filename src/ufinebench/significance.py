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
