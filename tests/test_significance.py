"""Paired t intervals and claim verdicts (ufinebench.significance)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ufinebench.significance import (
    NOT_REPRODUCED,
    OPEN,
    REPRODUCED,
    PairedInterval,
    claim_verdict,
    discordance,
    identity_weights,
    paired_ratio_interval,
    paired_t_interval,
    ratio_verdict,
    share_verdict,
    t_quantile,
    two_level_bootstrap,
)


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


def test_ratio_interval_is_the_t_interval_of_log_ratios():
    a, b = [30.0, 33.0, 28.0, 31.0], [25.0, 30.0, 27.0, 26.0]
    iv = paired_ratio_interval(a, b)
    logs = paired_t_interval(np.log(a), np.log(b))
    assert iv.mean == pytest.approx(math.exp(logs.mean)) and iv.low == pytest.approx(math.exp(logs.low))
    assert iv.low < np.mean(np.divide(a, b)) < iv.high and iv.n == 4
    assert paired_ratio_interval([0.0, 2.0, 3.0], [1.0, 1.0, 2.0]).n == 2  # a zero has no log: that pair is left out


def test_ratio_verdicts():
    assert ratio_verdict(1.01, 1.3, 1.14) == REPRODUCED
    assert ratio_verdict(0.7, 0.95, 1.14) == NOT_REPRODUCED  # the other direction
    assert ratio_verdict(0.9, 1.1, 1.14) == NOT_REPRODUCED  # the paper's 14 % ruled out
    assert ratio_verdict(0.9, 1.2, 1.14) == OPEN
    assert ratio_verdict(0.9, 1.05, None) == OPEN and ratio_verdict(0.8, 0.99, None) == NOT_REPRODUCED
    assert share_verdict(0.06, 0.2) == REPRODUCED and share_verdict(0.0, 0.04) == NOT_REPRODUCED and share_verdict(0.01, 0.1) == OPEN


def test_identity_weights_keep_a_persons_queries_together():
    persons = np.array([7, 7, 7, 9, 4, 4])
    w = identity_weights(persons, 500, np.random.default_rng(0))
    assert w.shape == (500, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all() and (w[:, 4] == w[:, 5]).all()
    assert (w[:, [0, 3, 4]].sum(1) == 3).all()  # three persons drawn each time
    assert 0.9 < w[:, 3].mean() < 1.1  # each person drawn once on average


def test_two_level_bootstrap_points_ratio_and_coverage():
    rng = np.random.default_rng(1)
    persons = np.repeat(np.arange(60), 4)  # (240,)
    a = (rng.random((3, 240)) < 0.4).astype(float)
    b = (rng.random((3, 240)) < 0.3).astype(float)
    eff = two_level_bootstrap([(a, b, persons), (a[::-1], b[::-1], persons)], n_boot=400)
    assert eff.points == pytest.approx(100 * (a.mean() - b.mean())) and eff.ratio == pytest.approx(a.mean() / b.mean())
    lo95, hi95 = eff.points_interval[0.95]
    lo99, hi99 = eff.points_interval[0.99]
    assert lo99 <= lo95 < eff.points < hi95 <= hi99
    same = two_level_bootstrap([(a, a, persons)], n_boot=200)
    assert same.points_interval[0.95] == (0.0, 0.0) and same.ratio_interval[0.95] == (1.0, 1.0)  # a paired draw cancels
    # coverage: arms drawn from the same hit rate, the 95 % interval holds 0 in about 95 % of the draws
    hits = 0
    for k in range(60):
        g = np.random.default_rng(100 + k)
        x, y = (g.random((3, 240)) < 0.35).astype(float), (g.random((3, 240)) < 0.35).astype(float)
        lo, hi = two_level_bootstrap([(x, y, persons)], n_boot=300, seed=k).points_interval[0.95]
        hits += lo <= 0 <= hi
    assert hits >= 51
    with pytest.raises(ValueError):
        two_level_bootstrap([(a, b[:2], persons)])


def test_discordance_counts_pairs_ordered_differently():
    persons = np.arange(4)
    # three runs: x orders them 0 < 1 < 2, y orders them 0 < 2 < 1 -> one pair of three discordant
    x = np.array([[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5], [0.9, 0.9, 0.9, 0.9]])
    y = np.array([[0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5]])
    d = discordance([(x, y, persons)], n_boot=50)
    assert d["discordant_pairs"] == 1 and d["pairs"] == 3 and d["share"] == pytest.approx(1 / 3)
    assert d["low"] == pytest.approx(1 / 3) and d["high"] == pytest.approx(1 / 3)  # equal rows: every draw the same
    same = discordance([(x, x, persons)], n_boot=50)
    assert same["discordant_pairs"] == 0 and same["high"] == 0.0
