"""Breakdowns of a split's results by the query tags the annotations carry, and per-query records.

By UFine3C's ``source``, ``granularity`` and ``style``, always by caption length (``words``:
<= 30, 31-60, > 60), and for UFine-Synth above ``easy`` by the ``detail`` that separates a person
from its look-alikes and by ``gallery`` (a 3C person shown in held-out domains only, or not); each
value in the annotation's subset order.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ufinebench.data.annotations import subset_sort_key
from ufinebench.evaluate.features import Features
from ufinebench.metrics import MsdVariant, metrics_from_features, metrics_from_similarity, unit_rows

BREAKDOWN_KEYS = ("source", "granularity", "style", "words", "detail", "gallery")  # detail / gallery: UFine-Synth's look-alikes, domain test


def tag_groups(features: Features) -> dict[str, dict[str, np.ndarray]]:
    """{tag key: {value: query indices}} for every key of ``BREAKDOWN_KEYS`` the queries carry, values in subset order."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in BREAKDOWN_KEYS:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(features.query_tags):
            if key in t:
                groups[str(t[key])].append(i)
        if groups:
            out[key] = {value: np.asarray(groups[value]) for value in sorted(groups, key=subset_sort_key)}
    return out


def breakdown(features: Features, msd: MsdVariant = "paper") -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per value of every tag key present (source, granularity, style, words)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, groups in tag_groups(features).items():
        out[key] = {}
        for value, idx in groups.items():
            if features.similarity is not None:  # scores from elsewhere: the rows of those queries
                res = metrics_from_similarity(features.similarity[idx], features.query_ids[idx], features.gallery_ids, msd=msd)
            else:
                res = metrics_from_features(features.query_features[idx], features.gallery_features, features.query_ids[idx],
                                            features.gallery_ids, msd=msd)
            out[key][value] = res.as_dict()
    return out


def rerank_r1_by_tag(features: Features, first_hit_rank: np.ndarray) -> dict[str, dict[str, float]]:
    """R1 per value of every tag key present (as :func:`breakdown`), from each query's first-hit rank (1 = first)."""
    first = np.asarray(first_hit_rank)
    return {key: {v: 100.0 * float(np.mean(first[idx] == 1)) for v, idx in groups.items()} for key, groups in tag_groups(features).items()}


def score_rows(features: Features, rows: np.ndarray) -> np.ndarray:
    """(len(rows), G) similarities of some queries: from a given matrix, or cosines of the features."""
    if features.similarity is not None:
        return np.asarray(features.similarity[rows], dtype=np.float32)
    return unit_rows(features.query_features[rows]) @ unit_rows(features.gallery_features).T


def per_query_record(features: Features) -> dict[str, Any]:
    """Per-query results (``features.per_query``) for the JSON output, None where a query has no
    positive: what paired tests need."""
    per_query = features.per_query
    assert per_query is not None, "per_query_record: evaluate the features first"
    ok = per_query.has_positive

    def col(values: np.ndarray, scale: float = 100.0) -> list[float | None]:
        return [round(float(v) * scale, 6) if o else None for v, o in zip(values, ok, strict=True)]

    return {"query_keys": list(features.query_keys), "R1": col(per_query.first_hit_rank == 1), "AP": col(per_query.ap),
            "SD": col(per_query.sd), "first_hit_rank": [int(r) if o else None for r, o in zip(per_query.first_hit_rank, ok, strict=True)]}
