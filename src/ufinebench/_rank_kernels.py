"""Numba kernels behind :mod:`ufinebench.metrics` on the CPU.

Every retrieval metric we report depends on a query's row of similarities only through the
rank of each positive and a few sums over the items ranked at or before it. So instead of
sorting the whole query x gallery matrix (what peers do) the kernel makes, for each positive,
one vectorised pass over its row counting the items that rank ahead of it and summing their
similarities. Rows with many positives fall back to a stable sort, which is then cheaper.

Ranking rule (shared with the torch path and documented in ``metrics``): descending similarity,
ties broken by ascending gallery index.
"""

from __future__ import annotations

import numba as nb
import numpy as np

# 'reassoc' lets LLVM vectorise the float reduction (the count is exact either way; the sum
# differs from a sequential sum only in rounding). No 'nnan'/'ninf': inputs are validated
# finite, but comparisons must stay IEEE if that ever changes.
_FASTMATH = {"reassoc", "nsz", "contract"}


@nb.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _count_above(row, t, zero):
    """(#items > t, #items == t, sum of items > t) over one row, in one vectorised pass.

    int32 counters and an accumulator in the row's dtype keep all lanes the same width, which
    is what lets LLVM use full-width SIMD here (int64 counters halve the throughput).
    """
    c = np.int32(0)
    eq = np.int32(0)
    acc = zero
    for j in range(row.shape[0]):
        v = row[j]
        c += np.int32(v > t)
        eq += np.int32(v == t)
        acc += v if v > t else zero
    return c, eq, acc


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def positive_ranks(
    sim,  # (C, G) float32/float64 similarities of C queries to the whole gallery
    pos,  # (C, P) int64 gallery indices of each query's positives; first npos[r] valid
    npos,  # (C,) int64 number of positives per query
    qlab,  # (C,) int64 contiguous label of each query
    glab,  # (G,) int64 contiguous label of each gallery item
    sort_threshold,  # int: rows with more positives than this use the sort path
    want_official,  # bool: also fill off_prefix / off_val (the released-script variant)
    # Outputs, each (C, P) with the first npos[r] slots of a row in ascending rank order:
    rank,  # int64: 1-based rank of the positive
    above,  # float64: sum of raw similarity over items ranked <= that rank
    psim,  # float64: the positive's own similarity
    off_prefix,  # float64: sum of sim[0 .. rank - 1] in gallery order (official variant)
    off_val,  # float64: sim[rank - 1], the value at that gallery position (official variant)
):
    """Fill per-positive ranks and prefix sums for a block of query rows (see module doc).

    Serial and GIL-free: the caller runs one block per thread.
    """
    C, G = sim.shape
    for r in range(C):
        n = npos[r]
        if n == 0:
            continue
        row = sim[r]
        zero = row[0] - row[0]  # 0 in the row's dtype (rows are validated finite)
        if n > sort_threshold:
            # Stable sort of the negated row = descending order, ties by ascending index.
            order = np.argsort(-row, kind="mergesort")
            acc = 0.0
            k = 0
            target = qlab[r]
            for rr in range(G):
                j = order[rr]
                v = row[j]
                acc += v
                if glab[j] == target:
                    rank[r, k] = rr + 1
                    above[r, k] = acc
                    psim[r, k] = v
                    k += 1
                    if k == n:
                        break
        else:
            for i in range(n):
                p = pos[r, i]
                t = row[p]
                c, eq, acc = _count_above(row, t, zero)
                before = 0  # ties ranked ahead of p: equal value, smaller gallery index
                if eq > 1:
                    for j in range(p):
                        before += 1 if row[j] == t else 0
                rank[r, i] = c + before + 1
                above[r, i] = np.float64(acc) + np.float64(t) * (before + 1)
                psim[r, i] = t
            # insertion sort of the n slots by rank (n is small here)
            for i in range(1, n):
                rk, ab, ps = rank[r, i], above[r, i], psim[r, i]
                k = i - 1
                while k >= 0 and rank[r, k] > rk:
                    rank[r, k + 1], above[r, k + 1], psim[r, k + 1] = rank[r, k], above[r, k], psim[r, k]
                    k -= 1
                rank[r, k + 1], above[r, k + 1], psim[r, k + 1] = rk, ab, ps
        if want_official:
            acc = 0.0
            m = 0
            last = rank[r, n - 1]
            for j in range(last):
                acc += row[j]
                while m < n and rank[r, m] - 1 == j:
                    off_prefix[r, m] = acc
                    off_val[r, m] = row[j]
                    m += 1
