"""Paired t intervals and claim verdicts (ufinebench.significance)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ufinebench.significance import NOT_REPRODUCED, OPEN, REPRODUCED, PairedInterval, claim_verdict, paired_t_interval, t_quantile


@pytest.mark.parametrize("df,expected", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)])
def test_t_quantile_matches_printed_tables(df, expected):
    # two-sided 95 % critical values as printed in any t table
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1.5e-3)


def test_t_quantile_symmetry_and_normal_limit():
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))
    assert t_quantile(0.975, 100000) == pytest.approx(1.95996, abs=1e-3)
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_paired_interval_by_hand():
    a, b = [10.0, 12.0, 11.0, 15.0, 9.0], [8.0, 11.0, 11.5, 12.0, 8.0]
    d = np.subtract(a, b)
    iv = paired_t_interval(a, b)
    half = 2.776 * d.std(ddof=1) / math.sqrt(5)
    assert iv.n == 5 and iv.mean == pytest.approx(d.mean())
    assert iv.low == pytest.approx(d.mean() - half, abs=2e-3) and iv.high == pytest.approx(d.mean() + half, abs=2e-3)


def test_pairing_removes_shared_seed_noise():
    # a shared per-seed offset hides a constant +1 difference from unpaired spread but not from pairing
    rng = np.random.default_rng(0)
    seed_noise = rng.normal(0, 5, 6)
    b = 50 + seed_noise
    a = b + 1 + rng.normal(0, 0.05, 6)
    iv = paired_t_interval(a.tolist(), b.tolist())
    assert iv.low > 0.8 and iv.high < 1.2


def test_coverage_is_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(2000):
        d = rng.normal(0.7, 2.0, 5)
        iv = paired_t_interval(d.tolist(), [0.0] * 5)
        hits += iv.low <= 0.7 <= iv.high
    assert 0.93 <= hits / 2000 <= 0.97


def test_too_few_pairs():
    assert math.isnan(paired_t_interval([1.0], [0.0]).low)
    with pytest.raises(ValueError):
        paired_t_interval([1.0, 2.0], [0.0])


def _iv(lo: float, hi: float) -> PairedInterval:
    return PairedInterval((lo + hi) / 2, lo, hi, 5, 1.0, 0.95)


def test_verdicts():
    assert claim_verdict(_iv(0.2, 3.0), 2.0) == REPRODUCED
    assert claim_verdict(_iv(0.2, 0.9), 2.0) == REPRODUCED  # right direction, smaller than the paper's: still reproduced
    assert claim_verdict(_iv(-3.0, -0.1), 2.0) == NOT_REPRODUCED
    assert claim_verdict(_iv(-1.0, 1.5), 2.0) == NOT_REPRODUCED  # contains 0 but rules out the paper's +2
    assert claim_verdict(_iv(-1.0, 2.5), 2.0) == OPEN
    assert claim_verdict(_iv(-1.0, 2.5), None) == OPEN
    assert claim_verdict(PairedInterval(1.0, math.nan, math.nan, 1, math.nan, 0.95), 2.0) == OPEN
