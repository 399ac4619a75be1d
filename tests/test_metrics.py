"""The metrics engine against the naive reference in tests/reference.py and the DESIGN toy values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import reference_metrics
from ufinebench import metrics as M
from ufinebench.metrics import MetricsInputError, metrics_from_features, metrics_from_similarity, msd_single

BACKENDS = ["numba", "torch"]


def _close(res, ref: dict, tol: float = 1e-6) -> None:
    d = res.as_dict()
    for k, v in ref["summary"].items():
        assert d[k] == pytest.approx(v, abs=tol, rel=2e-6), k  # float32 scores: mSD of 100 carries ~1e-6 of rounding


def _problem(rng: np.random.Generator, nq: int, ng: int, nid: int, levels: int | None):
    """Random similarities; ``levels`` quantises them so that ties are everywhere."""
    sim = rng.uniform(-1, 1, size=(nq, ng))
    if levels:
        sim = np.round(sim * levels) / levels
    gids = rng.integers(0, nid, size=ng)
    qids = rng.integers(0, nid + 2, size=nq)  # some ids never in the gallery -> no positive
    return sim.astype(np.float32), qids, gids


# --- toy values from DESIGN.md -------------------------------------------------------------


def test_toy_values_single_list():
    assert msd_single([0.81, 0.79, 0.77, 0.76, 0.75], [1, 0, 1, 0, 0]) == pytest.approx(0.536, abs=5e-4)
    assert msd_single([0.81, 0.79, 0.77, 0.15, 0.12], [1, 0, 1, 0, 0]) == pytest.approx(0.744, abs=5e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_toy_values_through_engine(backend):
    u = np.array([[0.81, 0.79, 0.77, 0.76, 0.75], [0.81, 0.79, 0.77, 0.15, 0.12]])
    res = metrics_from_similarity(2 * u - 1, [7, 7], [7, 1, 7, 2, 3], per_query=True, backend=backend)
    assert res.per_query.sd == pytest.approx([0.5360, 0.7442], abs=5e-4)
    assert res.per_query.ap == pytest.approx([0.8333333, 0.8333333])  # same AP, different SD
    assert res.mAP == pytest.approx(83.333333)
    assert res.recall[1] == 100.0


# --- equality with the naive reference -------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("levels", [None, 4, 20])
@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_with_ties(backend, levels, seed):
    rng = np.random.default_rng(seed)
    sim, qids, gids = _problem(rng, nq=37, ng=53, nid=9, levels=levels)
    ks = (1, 2, 5, 10, 60)
    res = metrics_from_similarity(sim, qids, gids, ks=ks, per_query=True, backend=backend, chunk_size=8)
    ref = reference_metrics(sim, qids, gids, ks=ks)
    _close(res, ref)
    for i, r in enumerate(ref["per_query"]):
        if r is None:
            assert not res.per_query.has_positive[i]
            assert res.per_query.first_hit_rank[i] == -1 and np.isnan(res.per_query.sd[i])
            continue
        first, ap, inp, sd = r
        assert res.per_query.first_hit_rank[i] == first
        assert res.per_query.ap[i] == pytest.approx(ap, abs=1e-12)
        assert res.per_query.inp[i] == pytest.approx(inp, abs=1e-12)
        assert res.per_query.sd[i] == pytest.approx(sd, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(3))
def test_official_variant_matches_description(backend, seed):
    rng = np.random.default_rng(100 + seed)
    sim, qids, gids = _problem(rng, nq=40, ng=61, nid=6, levels=None)  # tie-free
    res = metrics_from_similarity(sim, qids, gids, msd="official", per_query=True, backend=backend)
    ref = reference_metrics(sim, qids, gids, msd="official")
    _close(res, ref)
    assert res.msd_variant == "official"


def test_official_variant_many_positives_uses_sort_path(monkeypatch):
    rng = np.random.default_rng(5)
    sim, qids, gids = _problem(rng, nq=20, ng=80, nid=2, levels=None)
    ref = reference_metrics(sim, qids, gids, msd="official")
    monkeypatch.setattr(M, "SORT_THRESHOLD", 3)
    _close(metrics_from_similarity(sim, qids, gids, msd="official"), ref)


@pytest.mark.parametrize("levels", [None, 5])
def test_sort_path_equals_count_path(monkeypatch, levels):
    rng = np.random.default_rng(11)
    sim, qids, gids = _problem(rng, nq=50, ng=90, nid=4, levels=levels)  # ~20 positives per query
    ref = reference_metrics(sim, qids, gids)
    a = metrics_from_similarity(sim, qids, gids, per_query=True)
    monkeypatch.setattr(M, "SORT_THRESHOLD", 0)
    b = metrics_from_similarity(sim, qids, gids, per_query=True)
    _close(a, ref)
    _close(b, ref)
    np.testing.assert_array_equal(a.per_query.first_hit_rank, b.per_query.first_hit_rank)


@settings(max_examples=60, deadline=None)
@given(
    nq=st.integers(1, 12),
    ng=st.integers(1, 15),
    nid=st.integers(1, 5),
    levels=st.sampled_from([1, 2, 3, 10]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_against_reference(nq, ng, nid, levels, seed):
    rng = np.random.default_rng(seed)
    sim, qids, gids = _problem(rng, nq, ng, nid, levels)
    ref = reference_metrics(sim, qids, gids, ks=(1, 3))
    for backend in BACKENDS:
        _close(metrics_from_similarity(sim, qids, gids, ks=(1, 3), backend=backend), ref)


# --- invariances -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_paper_msd_is_invariant_to_gallery_shuffle_official_is_not(backend):
    rng = np.random.default_rng(3)
    sim, qids, gids = _problem(rng, nq=60, ng=120, nid=15, levels=None)
    perm = rng.permutation(sim.shape[1])
    a = metrics_from_similarity(sim, qids, gids, backend=backend)
    b = metrics_from_similarity(sim[:, perm], qids, gids[perm], backend=backend)
    assert a.as_dict() == pytest.approx(b.as_dict(), abs=1e-6)  # float32 sums in another order
    oa = metrics_from_similarity(sim, qids, gids, msd="official", backend=backend)
    ob = metrics_from_similarity(sim[:, perm], qids, gids[perm], msd="official", backend=backend)
    assert abs(oa.mSD - ob.mSD) > 1e-3  # the released algorithm depends on gallery order


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, None])
def test_chunk_size_invariance(chunk):
    rng = np.random.default_rng(8)
    sim, qids, gids = _problem(rng, nq=45, ng=70, nid=8, levels=10)
    base = metrics_from_similarity(sim, qids, gids, per_query=True, chunk_size=1000)
    res = metrics_from_similarity(sim, qids, gids, per_query=True, chunk_size=chunk)
    assert res.as_dict() == base.as_dict()
    np.testing.assert_array_equal(res.per_query.first_hit_rank, base.per_query.first_hit_rank)
    np.testing.assert_allclose(res.per_query.sd, base.per_query.sd, rtol=0, atol=1e-12)
    qf, gf = rng.standard_normal((45, 16)), rng.standard_normal((70, 16))
    fa = metrics_from_features(qf, gf, qids, gids, per_query=True, chunk_size=chunk)
    fb = metrics_from_features(qf, gf, qids, gids, per_query=True, chunk_size=1000)
    np.testing.assert_array_equal(fa.per_query.first_hit_rank, fb.per_query.first_hit_rank)
    assert fa.as_dict() == pytest.approx(fb.as_dict(), abs=1e-6)  # BLAS may round per chunk shape


# --- features path -----------------------------------------------------------------------------


def _sign_features(rng, n, d=16):
    """+-1 vectors: after normalisation every dot product is a multiple of 1/d, exact in float32."""
    return rng.choice([-1.0, 1.0], size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_features_with_exact_ties_match_reference(backend, direction):
    rng = np.random.default_rng(21)
    q, g = _sign_features(rng, 40), _sign_features(rng, 30)
    g[5] = g[3]  # duplicate images: exact ties in every row
    qids, gids = rng.integers(0, 8, 40), rng.integers(0, 8, 30)
    exact = (q @ g.T) / 16.0  # exact cosine similarities
    ref_sim, ref_q, ref_g = (exact, qids, gids) if direction == "t2i" else (exact.T, gids, qids)
    ref = reference_metrics(ref_sim, ref_q, ref_g)
    res = metrics_from_features(q, g, qids, gids, direction=direction, backend=backend, chunk_size=7)
    _close(res, ref)
    res_sim = metrics_from_similarity(exact, qids, gids, direction=direction, backend=backend, chunk_size=5)
    _close(res_sim, ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_tensor_inputs_and_dtypes(dtype):
    rng = np.random.default_rng(4)
    q, g = _sign_features(rng, 25), _sign_features(rng, 20)
    qids, gids = rng.integers(0, 5, 25), rng.integers(0, 5, 20)
    ref = reference_metrics((q @ g.T) / 16.0, qids, gids)
    qt, gt = torch.from_numpy(q).to(dtype), torch.from_numpy(g).to(dtype)  # +-1 exact in every dtype
    for backend in ("auto", "torch"):
        _close(metrics_from_features(qt, gt, torch.from_numpy(qids), torch.from_numpy(gids), backend=backend), ref)


def test_numpy_float16_features():
    rng = np.random.default_rng(9)
    q, g = rng.standard_normal((30, 32)), rng.standard_normal((40, 32))
    qids, gids = rng.integers(0, 6, 30), rng.integers(0, 6, 40)
    q16, g16 = q.astype(np.float16), g.astype(np.float16)
    qn = q16.astype(np.float64) / np.linalg.norm(q16.astype(np.float64), axis=1, keepdims=True)
    gn = g16.astype(np.float64) / np.linalg.norm(g16.astype(np.float64), axis=1, keepdims=True)
    ref = reference_metrics(qn @ gn.T, qids, gids)
    _close(metrics_from_features(q16, g16, qids, gids), ref, tol=1e-4)


def test_zero_feature_vectors_do_not_produce_nan():
    q = np.zeros((3, 8), np.float32)
    g = np.eye(8, dtype=np.float32)[:4]
    res = metrics_from_features(q, g, [0, 1, 2], [0, 1, 2, 3], per_query=True)
    assert res.num_queries == 3
    # all similarities are 0 -> ties -> ranks by gallery index
    assert list(res.per_query.first_hit_rank) == [1, 2, 3]
    assert np.isfinite(res.mSD)


# --- queries without positives, degenerate galleries -------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_query_has_a_positive(backend):
    res = metrics_from_similarity(np.zeros((4, 3)), [10, 11, 12, 13], [1, 2, 3], backend=backend)
    d = res.as_dict()
    assert d["queries"] == 0 and d["queries_without_positive"] == 4
    assert all(np.isfinite(v) and v == 0.0 for k, v in d.items() if k not in ("queries", "queries_without_positive"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_gallery_items_positive(backend):
    sim = np.array([[0.2, 0.9, -0.1]])
    res = metrics_from_similarity(sim, [1], [1, 1, 1], per_query=True, backend=backend)
    assert res.mAP == pytest.approx(100.0) and res.mINP == pytest.approx(100.0)
    assert res.mSD == pytest.approx(100.0)  # PNR = 1 with no negatives; ASP = 1
    assert res.as_dict() == pytest.approx(reference_metrics(sim, [1], [1, 1, 1])["summary"])


def test_ids_are_compared_raw_not_by_position():
    sim = np.array([[0.1, 0.9], [0.9, 0.1]])
    res = metrics_from_similarity(sim, np.array([10**12, -3]), np.array([-3, 10**12]))
    assert res.recall[1] == 100.0


def test_float_integral_ids_accepted_and_large_ks():
    sim = np.array([[0.1, 0.9, 0.3]])
    res = metrics_from_similarity(sim, np.array([2.0]), np.array([1.0, 3.0, 2.0]), ks=(1, 2, 100))
    assert res.recall == {1: 0.0, 2: 100.0, 100: 100.0}


# --- input errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(similarity=np.zeros((2, 3)), query_ids=[1, 2, 3], gallery_ids=[1, 2, 3]), "shape"),
        (dict(similarity=np.zeros(3), query_ids=[1], gallery_ids=[1, 2, 3]), "2-D"),
        (dict(similarity=np.array([[np.nan, 0.0]]), query_ids=[1], gallery_ids=[1, 2]), "NaN"),
        (dict(similarity=np.array([[np.inf, 0.0]]), query_ids=[1], gallery_ids=[1, 2]), "NaN or inf"),
        (dict(similarity=np.zeros((1, 2)), query_ids=[1.5], gallery_ids=[1, 2]), "integers"),
        (dict(similarity=np.zeros((1, 2)), query_ids=["a"], gallery_ids=[1, 2]), "integers"),
        (dict(similarity=np.zeros((0, 2)), query_ids=np.array([], int), gallery_ids=[1, 2]), "no queries"),
        (dict(similarity=np.zeros((1, 0)), query_ids=[1], gallery_ids=np.array([], int)), "empty"),
        (dict(similarity=np.zeros((1, 2), dtype=int), query_ids=[1], gallery_ids=[1, 2]), "floating"),
    ],
)
def test_bad_similarity_inputs_raise_clear_errors(kwargs, message):
    with pytest.raises(MetricsInputError, match=message):
        metrics_from_similarity(**kwargs)


def test_bad_feature_inputs_and_options():
    q, g = np.ones((2, 4)), np.ones((3, 5))
    with pytest.raises(MetricsInputError, match="dimensions differ"):
        metrics_from_features(q, g, [1, 2], [1, 2, 3])
    with pytest.raises(MetricsInputError, match="NaN"):
        metrics_from_features(np.full((2, 4), np.nan), np.ones((3, 4)), [1, 2], [1, 2, 3])
    with pytest.raises(MetricsInputError, match="rows"):
        metrics_from_features(np.ones((2, 4)), np.ones((3, 4)), [1, 2, 3], [1, 2, 3])
    with pytest.raises(MetricsInputError, match="msd"):
        metrics_from_similarity(np.zeros((1, 1)), [1], [1], msd="bogus")
    with pytest.raises(MetricsInputError, match="ks"):
        metrics_from_similarity(np.zeros((1, 1)), [1], [1], ks=(0,))
