"""Retrieval metrics for text-based person retrieval: R@K, mAP, mINP and mSD.

Pure functions. Inputs are either a similarity matrix or query and gallery features (cosine
similarity is then computed a chunk of queries at a time, never the whole Q x G matrix), plus
the person id of every query and gallery item. numpy arrays and torch tensors (CPU or CUDA)
are accepted; features may be float16, bfloat16, float32 or float64 (they are compared in float32).

Ranking rule
    For each query the gallery is ordered by descending similarity; ties are broken by
    ascending gallery index (a stable sort). Every metric is computed from that order.

Queries without a positive in the gallery are left out of every metric and counted in
``RetrievalResult.num_without_positive`` (never a NaN, never a division by zero).

Metrics (all reported in percent, mean over evaluated queries)
    R@K   first positive at rank <= K.
    AP    mean over positives i (in rank order) of i / rank_i.
    INP   |positives| / rank of the last positive (Ye et al., TPAMI 2021).
    SD    mean Similarity Distribution (UFineBench, Zuo et al., CVPR 2024), the ``paper``
          variant: with similarities mapped from cosine [-1, 1] to [0, 1] by s/2 + 0.5 and the
          gallery in rank order,
            PNR = 1 - exp(-mean(s over positives) / mean(s over negatives))
            ASP = mean over positive ranks k of  sum(s_j: j <= k, j positive) / sum(s_j: j <= k)
            SD  = PNR * ASP.
          The ``official`` variant reproduces the released ``mSD_Calculator.py``: it takes
          the cumulative sums over the row in *gallery* order while the positive mask is in
          *rank* order, so its value changes when the gallery is shuffled. Use it only to
          compare with published tables (see docs/metrics.md).

Edge cases of mSD (not covered by the paper, chosen here): a query whose gallery is all
positives has PNR = 1; a zero mean negative similarity gives PNR = 1 (or 1 - e^-1 when the
positive mean is zero too); a zero cumulative sum up to rank k counts as precision at k.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from tqdm.auto import tqdm

from ufinebench.errors import UFineBenchError

MsdVariant = Literal["paper", "official"]
Direction = Literal["t2i", "i2t"]
Backend = Literal["auto", "numba", "torch"]

_CPU_CHUNK_ELEMENTS = 2 * 1024 * 1024  # ~8 MB of float32 similarities per thread: stays in cache
_CPU_CHUNK_MAX_ROWS = 256
_CUDA_CHUNK_ELEMENTS = 32 * 1024 * 1024
SORT_THRESHOLD = 64  # rows with more positives than this are ranked by a full stable sort


class MetricsInputError(UFineBenchError, ValueError):
    """Inputs that cannot be evaluated (shapes, dtypes, non-finite values, bad ids)."""


@dataclass(frozen=True)
class PerQuery:
    """Per-query values aligned with the input queries (after ``direction`` is applied).

    Queries without a positive have ``has_positive`` False, ``first_hit_rank`` -1 and NaN in
    the float arrays; they are excluded from every summary figure.
    """

    has_positive: np.ndarray  # (Q,) bool
    num_positives: np.ndarray  # (Q,) int64
    first_hit_rank: np.ndarray  # (Q,) int64, 1-based
    ap: np.ndarray  # (Q,) float64 in [0, 1]
    inp: np.ndarray  # (Q,) float64 in [0, 1]
    sd: np.ndarray  # (Q,) float64 in [0, 1], the requested mSD variant


@dataclass(frozen=True)
class RetrievalResult:
    """Summary metrics in percent, plus counts and optional per-query values."""

    recall: dict[int, float]  # k -> R@k in percent
    mAP: float
    mINP: float
    mSD: float
    num_queries: int  # queries evaluated (with at least one positive)
    num_without_positive: int  # queries left out
    msd_variant: str = "paper"
    per_query: PerQuery | None = field(default=None, repr=False)
    msd_note: str | None = None  # why mSD is not reported (then ``as_dict`` gives None for it)

    def as_dict(self) -> dict[str, Any]:
        """Flat dict: ``R1, R5, ... mAP, mINP, mSD, queries, queries_without_positive``."""
        out: dict[str, Any] = {f"R{k}": float(v) for k, v in self.recall.items()}
        out.update(
            mAP=float(self.mAP),
            mINP=float(self.mINP),
            mSD=None if self.msd_note else float(self.mSD),
            queries=int(self.num_queries),
            queries_without_positive=int(self.num_without_positive),
        )
        return out


# --------------------------------------------------------------------------------------------
# Public entry points


def metrics_from_similarity(
    similarity: Any,
    query_ids: Any,
    gallery_ids: Any,
    *,
    ks: Sequence[int] = (1, 5, 10),
    msd: MsdVariant = "paper",
    direction: Direction = "t2i",
    per_query: bool = False,
    chunk_size: int | None = None,
    backend: Backend = "auto",
    progress: bool = False,
) -> RetrievalResult:
    """Evaluate a (Q, G) similarity matrix of text queries (rows) against gallery images.

    ``direction="i2t"`` evaluates the transpose: images query the texts. The matrix is read a
    chunk of rows (or columns) at a time; it is never copied whole.
    """
    _check_options(ks, msd, direction, backend)
    sim = _as_array(similarity, "similarity")
    if sim.ndim != 2:
        raise MetricsInputError(f"similarity must be 2-D (queries x gallery), got shape {tuple(sim.shape)}")
    qids = _as_ids(query_ids, "query_ids")
    gids = _as_ids(gallery_ids, "gallery_ids")
    if sim.shape[0] != len(qids) or sim.shape[1] != len(gids):
        raise MetricsInputError(
            f"similarity has shape {tuple(sim.shape)} but there are {len(qids)} query ids "
            f"and {len(gids)} gallery ids"
        )
    _check_nonempty(sim.shape[0], sim.shape[1])
    if direction == "i2t":
        qids, gids = gids, qids
    num_q, num_g = len(qids), len(gids)
    use_torch = _use_torch(backend, sim)
    outside = [False]  # any score outside [-1, 1]: not cosines, so no mSD

    if use_torch:
        t = _to_torch(sim)
        chunk = chunk_size or _default_chunk(num_g, t.is_cuda)
        if not t.is_floating_point():
            raise MetricsInputError("similarity must be a floating-point array")

        def rows_t(i0: int, i1: int) -> torch.Tensor:
            block = t[i0:i1] if direction == "t2i" else t[:, i0:i1].T
            block = block.to(torch.float64 if block.dtype == torch.float64 else torch.float32)
            if not bool(torch.isfinite(block).all()):
                raise MetricsInputError("similarity contains NaN or inf")
            outside[0] = outside[0] or bool(block.abs().max() > 1 + COSINE_SLACK)
            return block.contiguous()

        res = _evaluate(rows_t, qids, gids, num_q, num_g, ks, msd, per_query, chunk, progress, "torch")
        return _without_msd(res) if outside[0] else res

    arr = _to_numpy(sim)
    if arr.dtype.kind != "f":
        raise MetricsInputError(f"similarity must be a floating-point array, got dtype {arr.dtype}")

    def block_np(i0: int, i1: int) -> tuple[np.ndarray, np.ndarray]:
        block = arr[i0:i1] if direction == "t2i" else arr[:, i0:i1].T
        dtype = np.float64 if block.dtype == np.float64 else np.float32
        block = np.ascontiguousarray(block, dtype=dtype)  # (n, G)
        if not np.isfinite(block).all():
            raise MetricsInputError("similarity contains NaN or inf")
        outside[0] = outside[0] or bool(np.abs(block).max(initial=0.0) > 1 + COSINE_SLACK)
        return block, block.sum(axis=1, dtype=np.float64)

    chunk = chunk_size or _default_chunk(num_g, False)
    res = _evaluate(block_np, qids, gids, num_q, num_g, ks, msd, per_query, chunk, progress, "numba")
    return _without_msd(res) if outside[0] else res


COSINE_SLACK = 1e-4  # float rounding of a cosine may pass 1 slightly


def _without_msd(res: RetrievalResult) -> RetrievalResult:
    """The result for scores that are not cosines: rank metrics kept, mSD withheld with the reason."""

    return dataclasses.replace(res, msd_note="scores outside [-1, 1] are not cosine similarities, which mSD assumes: "
                                             "mSD is not reported (R@K, mAP and mINP do not depend on the scale)")


def metrics_from_features(
    query_features: Any,
    gallery_features: Any,
    query_ids: Any,
    gallery_ids: Any,
    *,
    ks: Sequence[int] = (1, 5, 10),
    msd: MsdVariant = "paper",
    direction: Direction = "t2i",
    per_query: bool = False,
    chunk_size: int | None = None,
    backend: Backend = "auto",
    progress: bool = False,
) -> RetrievalResult:
    """Evaluate by cosine similarity between (Q, D) text features and (G, D) image features.

    Features are L2-normalised here (zero vectors stay zero); the similarity is computed in
    float32 a chunk of queries at a time. ``direction="i2t"`` lets the images query the texts.
    """
    _check_options(ks, msd, direction, backend)
    qf = _as_array(query_features, "query_features")
    gf = _as_array(gallery_features, "gallery_features")
    for name, f in (("query_features", qf), ("gallery_features", gf)):
        if f.ndim != 2:
            raise MetricsInputError(f"{name} must be 2-D (items x dim), got shape {tuple(f.shape)}")
    if qf.shape[1] != gf.shape[1]:
        raise MetricsInputError(
            f"feature dimensions differ: query_features {qf.shape[1]} vs gallery_features {gf.shape[1]}"
        )
    qids = _as_ids(query_ids, "query_ids")
    gids = _as_ids(gallery_ids, "gallery_ids")
    if qf.shape[0] != len(qids):
        raise MetricsInputError(f"query_features has {qf.shape[0]} rows but there are {len(qids)} query ids")
    if gf.shape[0] != len(gids):
        raise MetricsInputError(f"gallery_features has {gf.shape[0]} rows but there are {len(gids)} gallery ids")
    _check_nonempty(qf.shape[0], gf.shape[0])
    if qf.shape[1] == 0:
        raise MetricsInputError("features have dimension 0")
    if direction == "i2t":
        qf, gf, qids, gids = gf, qf, gids, qids
    num_q, num_g = len(qids), len(gids)
    use_torch = _use_torch(backend, qf, gf)

    if use_torch:
        qt, gt = _to_torch(qf), _to_torch(gf)
        if qt.device != gt.device:
            raise MetricsInputError(f"query and gallery features are on different devices ({qt.device}, {gt.device})")
        if not (qt.is_floating_point() and gt.is_floating_point()):
            raise MetricsInputError("features must be floating-point")
        chunk = chunk_size or _default_chunk(num_g, qt.is_cuda)
        g_n = _normalise_torch(gt.to(torch.float32), "gallery_features")  # (G, D)

        def rows_t(i0: int, i1: int) -> torch.Tensor:
            q_n = _normalise_torch(qt[i0:i1].to(torch.float32), "query_features")  # (n, D)
            return q_n @ g_n.T  # (n, G)

        return _evaluate(rows_t, qids, gids, num_q, num_g, ks, msd, per_query, chunk, progress, "torch")

    qa, ga = _to_numpy(qf), _to_numpy(gf)
    for name, a in (("query_features", qa), ("gallery_features", ga)):
        if a.dtype.kind != "f":
            raise MetricsInputError(f"{name} must be floating-point, got dtype {a.dtype}")
    chunk = chunk_size or _default_chunk(num_g, False)
    g_t = _normalise_np(ga, "gallery_features", transpose=True)  # (D, G) float32, unit columns
    # (D,) sum of gallery rows: q . g_sum is a row sum of S without another pass over S
    g_sum = g_t.sum(axis=1, dtype=np.float64).astype(np.float32)
    local = threading.local()  # one similarity buffer per worker thread

    def block_np(i0: int, i1: int) -> tuple[np.ndarray, np.ndarray]:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty((chunk, num_g), dtype=np.float32)
        q_n = _normalise_np(qa[i0:i1], "query_features")  # (n, D)
        out = buf[: i1 - i0]
        np.matmul(q_n, g_t, out=out)  # (n, G) cosine similarities
        return out, (q_n @ g_sum).astype(np.float64)

    return _evaluate(block_np, qids, gids, num_q, num_g, ks, msd, per_query, chunk, progress, "numba")


def metrics_from_blocks(
    block_fn: Callable[[int, int], np.ndarray],
    query_ids: Any,
    gallery_ids: Any,
    *,
    ks: Sequence[int] = (1, 5, 10),
    msd: MsdVariant = "paper",
    per_query: bool = False,
    chunk_size: int | None = None,
    progress: bool = False,
) -> RetrievalResult:
    """Evaluate a similarity matrix that the caller produces a block of query rows at a time.

    ``block_fn(i0, i1)`` returns the (i1 - i0, G) float32 similarities of queries i0..i1-1. It
    may be called from several threads at once (numpy work only, please). Used for re-ranking,
    where only a few entries per row change, without holding the Q x G matrix.
    """
    _check_options(ks, msd, "t2i", "numba")
    qids = _as_ids(query_ids, "query_ids")
    gids = _as_ids(gallery_ids, "gallery_ids")
    _check_nonempty(len(qids), len(gids))
    chunk = chunk_size or _default_chunk(len(gids), False)

    def block_np(i0: int, i1: int) -> tuple[np.ndarray, np.ndarray]:
        block = np.ascontiguousarray(block_fn(i0, i1), dtype=np.float32)
        if block.shape != (i1 - i0, len(gids)):
            raise MetricsInputError(f"block_fn returned shape {block.shape}, expected {(i1 - i0, len(gids))}")
        if not np.isfinite(block).all():
            raise MetricsInputError("similarity contains NaN or inf")
        return block, block.sum(axis=1, dtype=np.float64)

    return _evaluate(block_np, qids, gids, len(qids), len(gids), ks, msd, per_query, chunk, progress, "numba")


# --------------------------------------------------------------------------------------------
# Driver


def _evaluate(
    block_fn: Callable[[int, int], Any],
    qids: np.ndarray,
    gids: np.ndarray,
    num_q: int,
    num_g: int,
    ks: Sequence[int],
    msd: MsdVariant,
    want_per_query: bool,
    chunk: int,
    progress: bool,
    backend: str,
) -> RetrievalResult:
    """Run the chosen kernel over blocks of query rows and reduce to a RetrievalResult.

    ``block_fn(i0, i1)`` gives the similarities of queries i0..i1-1 to the whole gallery: a
    torch tensor (torch backend) or a ``(block, row_sums)`` pair of numpy arrays (numba).

    CPU (numba) path: each worker thread computes its own block with single-threaded BLAS and
    ranks it straight away while the block is still in cache. This beats multi-threaded BLAS
    followed by a parallel scan: no idle spinning of one thread pool while the other runs, and
    the block is read from cache rather than memory.
    """
    qlab, glab = _contiguous_labels(qids, gids)
    order = np.argsort(glab, kind="stable")  # gallery indices grouped by label
    counts = np.bincount(glab, minlength=int(max(qlab.max(initial=-1), glab.max(initial=-1))) + 1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    npos_all = counts[qlab].astype(np.int64)  # (Q,) positives per query
    official = msd == "official"

    first = np.full(num_q, -1, dtype=np.int64)
    ap = np.full(num_q, np.nan)
    inp = np.full(num_q, np.nan)
    sd = np.full(num_q, np.nan)

    def process(i0: int, i1: int) -> int:
        npos = npos_all[i0:i1]
        if npos.max() == 0:  # no query here has a positive: skip the similarity work
            return i1 - i0
        ql = qlab[i0:i1]
        width = int(npos.max())
        slot = np.arange(width)
        if backend == "torch":
            out = _torch_chunk(block_fn(i0, i1), ql, glab, npos, width, official)
        else:
            pos = order[np.minimum(starts[ql][:, None] + slot[None, :], num_g - 1)]  # (n, P)
            block, row_sums = block_fn(i0, i1)
            out = _numba_chunk(block, pos, npos, ql, glab, width, official) + (row_sums,)
        f, a, n_, s_ = _finalize(*out, npos=npos, num_g=num_g, official=official)
        first[i0:i1], ap[i0:i1], inp[i0:i1], sd[i0:i1] = f, a, n_, s_
        return i1 - i0

    spans = [(i0, min(i0 + chunk, num_q)) for i0 in range(0, num_q, chunk)]
    bar = _progress_bar(num_q, progress)
    try:
        if backend == "torch" or len(spans) == 1:
            for i0, i1 in spans:
                bar.update(process(i0, i1))
        else:
            with _blas_controller().limit(limits=1, user_api="blas"):
                with ThreadPoolExecutor(max_workers=_num_workers()) as pool:
                    futures = [pool.submit(process, i0, i1) for i0, i1 in spans]
                    try:
                        for fut in as_completed(futures):
                            bar.update(fut.result())
                    except BaseException:
                        for fut in futures:
                            fut.cancel()
                        raise
    finally:
        bar.close()

    valid = npos_all > 0
    n_valid = int(valid.sum())
    if n_valid:
        recall = {int(k): 100.0 * float(np.mean(first[valid] <= k)) for k in ks}
        m_ap, m_inp, m_sd = (100.0 * float(np.mean(x[valid])) for x in (ap, inp, sd))
    else:
        recall = {int(k): 0.0 for k in ks}
        m_ap = m_inp = m_sd = 0.0
    pq = None
    if want_per_query:
        pq = PerQuery(valid, npos_all, first, ap, inp, sd)
    return RetrievalResult(recall, m_ap, m_inp, m_sd, n_valid, num_q - n_valid, msd, pq)


_CONTROLLER: Any = None


def _blas_controller() -> Any:
    """A cached threadpoolctl controller (building one scans the loaded libraries: ~10 ms)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def _num_workers() -> int:
    """CPU cores this process may use (respects affinity masks, e.g. under taskset or cgroups)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _numba_chunk(
    block: np.ndarray, pos: np.ndarray, npos: np.ndarray, ql: np.ndarray, glab: np.ndarray, width: int, official: bool
) -> tuple:
    from ufinebench._rank_kernels import positive_ranks  # numba: its import and JIT cost seconds, paid only on this path

    n = block.shape[0]
    rank = np.full((n, width), np.iinfo(np.int64).max, dtype=np.int64)
    above = np.zeros((n, width))
    psim = np.zeros((n, width))
    off_prefix = np.zeros((n, width))
    off_val = np.zeros((n, width))
    positive_ranks(
        block, pos, npos, ql, glab, SORT_THRESHOLD, official, rank, above, psim, off_prefix, off_val
    )
    return rank, above, psim, off_prefix, off_val


def _torch_chunk(block: torch.Tensor, ql: np.ndarray, glab: np.ndarray, npos: np.ndarray, width: int, official: bool) -> tuple:
    """Same outputs as the numba kernel, by a stable sort of each row (the GPU path)."""

    dev = block.device
    n, num_g = block.shape
    vals, idx = torch.sort(block, dim=1, descending=True, stable=True)  # (n, G)
    g_lab = torch.as_tensor(glab, device=dev)
    q_lab = torch.as_tensor(ql, device=dev)
    match = g_lab[idx] == q_lab[:, None]  # (n, G) positive at each rank
    rows_i, cols_i = match.nonzero(as_tuple=True)  # row-major: ranks ascend within a row
    npos_t = torch.as_tensor(npos, device=dev)
    offsets = torch.cumsum(npos_t, 0) - npos_t
    slots = torch.arange(rows_i.numel(), device=dev) - offsets[rows_i]
    cum = torch.cumsum(vals, dim=1, dtype=torch.float64)  # (n, G) prefix sums in rank order

    rank = torch.full((n, width), torch.iinfo(torch.int64).max, dtype=torch.int64, device=dev)
    above = torch.zeros((n, width), dtype=torch.float64, device=dev)
    psim = torch.zeros((n, width), dtype=torch.float64, device=dev)
    rank[rows_i, slots] = cols_i + 1
    above[rows_i, slots] = cum[rows_i, cols_i]
    psim[rows_i, slots] = vals[rows_i, cols_i].double()
    off_prefix = torch.zeros((n, width), dtype=torch.float64, device=dev)
    off_val = torch.zeros((n, width), dtype=torch.float64, device=dev)
    if official:
        cum_gal = torch.cumsum(block, dim=1, dtype=torch.float64)  # (n, G) in gallery order
        off_prefix[rows_i, slots] = cum_gal[rows_i, cols_i]  # position rank-1 == cols_i
        off_val[rows_i, slots] = block[rows_i, cols_i].double()
    rowsum = block.sum(dim=1, dtype=torch.float64)
    return tuple(t.cpu().numpy() for t in (rank, above, psim, off_prefix, off_val, rowsum))


def _finalize(
    rank: np.ndarray,  # (n, P) 1-based ranks, ascending; padding slots hold int64 max
    above: np.ndarray,  # (n, P) raw similarity summed over items ranked <= rank
    psim: np.ndarray,  # (n, P) raw similarity of the positive
    off_prefix: np.ndarray,  # (n, P) sum of row[0 .. rank-1] in gallery order
    off_val: np.ndarray,  # (n, P) row[rank - 1]
    rowsum: np.ndarray,  # (n,) sum of the raw row
    *,
    npos: np.ndarray,  # (n,)
    num_g: int,
    official: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-query first-hit rank, AP, INP and SD from per-positive ranks and sums.

    Both kernels deliver each row's positives in ascending rank order.
    """
    n, width = rank.shape
    valid_q = npos > 0
    r_sorted, a_sorted, p_sorted = rank, above, psim
    slot = np.arange(1, width + 1, dtype=np.float64)  # (P,) 1-based position among positives
    valid = slot[None, :] <= npos[:, None]  # (n, P)
    r_f = np.where(valid, r_sorted, 1).astype(np.float64)
    safe_n = np.maximum(npos, 1).astype(np.float64)

    first = np.where(valid_q, r_sorted[:, 0], -1)
    ap = np.where(valid, slot[None, :] / r_f, 0.0).sum(axis=1) / safe_n
    last = np.take_along_axis(r_f, np.maximum(npos - 1, 0)[:, None], axis=1)[:, 0]
    inp = npos / last

    neg = num_g - npos  # (n,)
    row_u = rowsum / 2.0 + 0.5 * num_g  # sum of mapped similarities over the whole row
    if not official:
        u_pos = np.where(valid, p_sorted / 2.0 + 0.5, 0.0)  # (n, P) mapped positive sims
        cum_pos = np.cumsum(u_pos, axis=1)
        cum_all = a_sorted / 2.0 + 0.5 * r_f  # mapped sum over ranks <= r
        sum_pos = cum_pos[:, -1]
    else:
        u_val = np.where(valid, off_val / 2.0 + 0.5, 0.0)
        cum_pos = np.cumsum(u_val, axis=1)
        cum_all = off_prefix / 2.0 + 0.5 * r_f
        sum_pos = cum_pos[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cum_all > 0, cum_pos / np.where(cum_all > 0, cum_all, 1.0), slot[None, :] / r_f)
        asp = np.where(valid, ratio, 0.0).sum(axis=1) / safe_n
        mean_pos = sum_pos / safe_n
        mean_neg = (row_u - sum_pos) / np.maximum(neg, 1)
        pnr = _pnr(mean_pos, mean_neg, neg)
    sd = pnr * asp
    nan = np.nan
    return (
        first,
        np.where(valid_q, ap, nan),
        np.where(valid_q, inp, nan),
        np.where(valid_q, sd, nan),
    )


def _pnr(mean_pos: np.ndarray, mean_neg: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """1 - exp(-mean_pos / mean_neg) with the edge cases documented in the module."""
    tiny = 1e-12
    ratio = np.where(mean_neg > tiny, mean_pos / np.maximum(mean_neg, tiny), np.where(mean_pos > tiny, np.inf, 1.0))
    pnr = 1.0 - np.exp(-ratio)
    return np.where(neg > 0, pnr, 1.0)


# --------------------------------------------------------------------------------------------
# Input handling


def _check_options(ks: Sequence[int], msd: str, direction: str, backend: str) -> None:
    if msd not in ("paper", "official"):
        raise MetricsInputError(f"msd must be 'paper' or 'official', got {msd!r}")
    if direction not in ("t2i", "i2t"):
        raise MetricsInputError(f"direction must be 't2i' or 'i2t', got {direction!r}")
    if backend not in ("auto", "numba", "torch"):
        raise MetricsInputError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise MetricsInputError(f"ks must be positive integers, got {list(ks)}")


def _check_nonempty(num_q: int, num_g: int) -> None:
    if num_q == 0:
        raise MetricsInputError("there are no queries")
    if num_g == 0:
        raise MetricsInputError("the gallery is empty")


def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch")


def _is_cuda(x: Any) -> bool:
    return _is_torch(x) and x.device.type != "cpu"


def _as_array(x: Any, name: str) -> Any:
    """numpy array or torch tensor as given; lists become numpy arrays."""
    if _is_torch(x) or isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is bad input
        raise MetricsInputError(f"{name} cannot be read as an array: {exc}") from None


def _to_numpy(x: Any) -> np.ndarray:
    if _is_torch(x):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _to_torch(x: Any) -> torch.Tensor:
    if _is_torch(x):
        return x.detach()
    return torch.from_numpy(np.ascontiguousarray(x))


def _use_torch(backend: str, *arrays: Any) -> bool:
    if backend == "torch":
        return True
    if backend == "numba":
        if any(_is_cuda(a) for a in arrays):
            raise MetricsInputError("the numba backend runs on the CPU; move the tensors or use backend='torch'")
        return False
    return any(_is_cuda(a) for a in arrays)


def _default_chunk(num_g: int, cuda: bool) -> int:
    """Query rows per block: a fixed similarity budget, capped on the CPU for load balance."""
    if cuda:
        return max(1, _CUDA_CHUNK_ELEMENTS // max(num_g, 1))
    return max(1, min(_CPU_CHUNK_MAX_ROWS, _CPU_CHUNK_ELEMENTS // max(num_g, 1)))


def exact_float_limit(dtype: Any) -> float:
    """The largest integer up to which every integer is exact in a float ``dtype`` (2^53 for float64, 2^24 for float32)."""
    return float(2 ** (np.finfo(dtype).nmant + 1))


def _as_ids(x: Any, name: str) -> np.ndarray:
    """Person ids as a 1-D int64 array; integral floats are accepted, anything else is refused."""
    arr = _to_numpy(_as_array(x, name))
    if arr.ndim != 1:
        raise MetricsInputError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise MetricsInputError(f"{name} has ids too large for int64")
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise MetricsInputError(f"{name} must be integers, found non-integral values")
        if arr.size and np.abs(arr).max() > exact_float_limit(arr.dtype):
            raise MetricsInputError(f"{name}: ids above {exact_float_limit(arr.dtype):.0f} are not exact in {arr.dtype} (different ids "
                                    "may have become one); store them as integers")
        return arr.astype(np.int64)
    raise MetricsInputError(f"{name} must be integers, got dtype {arr.dtype}")


def _contiguous_labels(qids: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids to 0..L-1 over the union of query and gallery ids."""
    _, inv = np.unique(np.concatenate([qids, gids]), return_inverse=True)
    inv = inv.astype(np.int64).reshape(-1)
    return inv[: len(qids)], inv[len(qids):]


# Rows whose largest entry lies outside this range are divided by it before the L2 norm: squaring
# 1e-35 underflows and 1e30 overflows float32, which turned such rows into zeros (ties) or "inf".
# Rows inside the range are left bit-for-bit as they were, so ordinary figures do not move.
_SAFE_SCALE = (1e-15, 1e15)


def _rescaled_np(x: np.ndarray) -> np.ndarray:
    """(n, D) as float32, with rows of extreme scale divided by their largest absolute entry (cosines are scale-free)."""
    if x.dtype.kind != "f" or x.size == 0:
        return x.astype(np.float32, copy=False)
    m = np.abs(x).max(axis=1).astype(np.float64)  # (n,)
    odd = (m > 0) & np.isfinite(m) & ((m < _SAFE_SCALE[0]) | (m > _SAFE_SCALE[1]))
    if odd.any():
        x = x.copy()
        x[odd] = x[odd] / m[odd, None]
    return x.astype(np.float32, copy=False)


def _normalise_np(x: np.ndarray, name: str, transpose: bool = False) -> np.ndarray:
    """(n, D) -> float32 rows of unit L2 norm (zero rows stay zero); (D, n) with ``transpose``.

    The transposed form is written in the same pass, saving a separate copy for BLAS.
    """
    x = _rescaled_np(np.asarray(x))
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # (n,)
    if not np.isfinite(norms).all():
        raise MetricsInputError(f"{name} contains NaN or inf")
    inv = (1.0 / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
    if transpose:
        out = np.empty((x.shape[1], x.shape[0]), dtype=np.float32)
        np.multiply(x.T, inv[None, :], out=out)
        return out
    return x * inv[:, None]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, D) -> float32 rows of unit L2 norm (zero rows stay zero): the cosine convention used everywhere."""
    return _normalise_np(x, "features")


def _normalise_torch(x: torch.Tensor, name: str) -> torch.Tensor:
    if not bool(torch.isfinite(x).all()):
        raise MetricsInputError(f"{name} contains NaN or inf")
    if x.is_floating_point() and x.numel():
        m = x.abs().amax(dim=1, keepdim=True)  # (n, 1)
        odd = (m > 0) & ((m < _SAFE_SCALE[0]) | (m > _SAFE_SCALE[1]))
        if bool(odd.any()):
            x = torch.where(odd, x / torch.where(odd, m, torch.ones_like(m)), x)
    return torch.nn.functional.normalize(x, dim=1, eps=1e-12)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()

    return tqdm(total=total, unit="query", desc="ranking", leave=False)


def msd_single(similarities: Sequence[float], positive: Sequence[bool]) -> float:
    """SD of one already-mapped ranked list (values in [0, 1], best first): the paper's formula.

    A tiny, readable reference used in the docs and tests; the fast path is ``metrics_from_*``.
    """
    s = np.asarray(similarities, dtype=np.float64)
    m = np.asarray(positive, dtype=bool)
    if s.shape != m.shape or s.ndim != 1:
        raise MetricsInputError("similarities and positive must be 1-D of equal length")
    if not m.any():
        raise MetricsInputError("the list has no positive")
    neg = ~m
    mean_pos = s[m].mean()
    pnr = 1.0 if not neg.any() else float(_pnr(np.array([mean_pos]), np.array([s[neg].mean()]), np.array([neg.sum()]))[0])
    cum_all = np.cumsum(s)
    cum_pos = np.cumsum(np.where(m, s, 0.0))
    k = np.nonzero(m)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(cum_all[k] > 0, cum_pos[k] / cum_all[k], (np.arange(len(k)) + 1) / (k + 1))
    return float(pnr * ratios.mean())


__all__ = [
    "MetricsInputError",
    "PerQuery",
    "RetrievalResult",
    "metrics_from_blocks",
    "metrics_from_features",
    "metrics_from_similarity",
    "msd_single",
    "unit_rows",
    "SORT_THRESHOLD",
]
