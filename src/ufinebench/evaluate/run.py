"""Evaluating checkpoints and other models' scores on a split: what ``ufinebench eval`` and the demo report.

:func:`evaluate_checkpoint` encodes a split with one of our checkpoints and scores it (overall,
per tag, optionally re-ranked); :func:`evaluate_scores` scores a model that is not ours from its
similarity matrix or features; :func:`run_eval` runs a whole evaluation request (several models,
one split, under ``torchrun`` too). Each result is a JSON-shaped dict whose ``_features`` is the
split's :class:`~ufinebench.evaluate.features.Features` (for reports and per-query records).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ufinebench.data.annotations import Sample, load_dataset
from ufinebench.data.datasets import evaluation_keys
from ufinebench.distributed import setup
from ufinebench.errors import UFineBenchError
from ufinebench.evaluate.breakdown import breakdown, per_query_record, rerank_r1_by_tag
from ufinebench.evaluate.features import Features, extract_features
from ufinebench.evaluate.rerank import RerankBlend, rerank
from ufinebench.io import load_scores_npz
from ufinebench.metrics import MsdVariant, metrics_from_features, metrics_from_similarity
from ufinebench.model.checkpoint import from_checkpoint


def _align(given: Sequence[str] | None, canonical: list[str], n: int, what: str) -> np.ndarray | None:
    """Index into the given order for each canonical key (None: the given order is the canonical one)."""
    if given is None:
        if n != len(canonical):
            raise UFineBenchError(f"{n} {what} rows but the split has {len(canonical)} {what}s; give {what}_keys in the npz, "
                                  f"or write them in the order `ufinebench eval --write-order` gives")
        return None
    given = [str(k) for k in given]
    if len(given) != n:
        raise UFineBenchError(f"{len(given)} {what}_keys for {n} {what} rows")
    pos = {k: i for i, k in enumerate(given)}
    if len(pos) != len(given):
        dup = sorted(k for k, n in Counter(given).items() if n > 1)[:3]  # one pass (count() per key was quadratic)
        raise UFineBenchError(f"{what}_keys repeat: {', '.join(dup)}")
    missing = [k for k in canonical if k not in pos]
    extra = sorted(set(given) - set(canonical))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if extra:
            parts.append(f"{len(extra)} not in the split ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
        raise UFineBenchError(f"{what}_keys do not match the split: " + "; ".join(parts))
    return np.asarray([pos[k] for k in canonical], dtype=np.int64)


def evaluate_scores(
    similarity: np.ndarray | None, query_keys: Sequence[str] | None, gallery_keys: Sequence[str] | None, samples: Sequence[Sample],
    *, query_features: np.ndarray | None = None, gallery_features: np.ndarray | None = None, msd: MsdVariant = "paper",
    name: str = "scores",
) -> dict[str, Any]:
    """Score a model that is not ours: a similarity matrix (higher = more similar) or query/gallery features.

    Rows and columns are matched to the split by key (``evaluation_keys``: ``FILE_PATH#N`` for a
    query, ``FILE_PATH`` for an image), in any order; with keys None they must already be in the
    order ``evaluation_keys`` (``eval --write-order``) gives. Person ids, tags and texts come from
    the annotation. Returns what ``evaluate_checkpoint`` returns (overall, breakdown, and the
    ``_features`` the report and the per-query JSON read), so ``compare`` and the report accept it.
    """
    qk, gk = evaluation_keys(samples)
    if similarity is None and (query_features is None or gallery_features is None):
        raise UFineBenchError("give a similarity matrix, or both query and gallery features")
    feats = Features.of_split(samples)
    t0 = time.perf_counter()
    if similarity is not None:
        sim = np.asarray(similarity)
        if sim.ndim != 2:
            raise UFineBenchError(f"similarity must be 2-D (queries x gallery), has shape {sim.shape}")
        qi, gi = _align(query_keys, qk, sim.shape[0], "query"), _align(gallery_keys, gk, sim.shape[1], "gallery")
        sim = sim if qi is None else sim[qi]
        sim = sim if gi is None else sim[:, gi]
        feats.similarity = np.ascontiguousarray(sim)  # (Q, G) in the split's order
        res = metrics_from_similarity(feats.similarity, feats.query_ids, feats.gallery_ids, msd=msd, per_query=True)
    else:
        assert query_features is not None and gallery_features is not None
        qf, gf = np.asarray(query_features), np.asarray(gallery_features)
        qi, gi = _align(query_keys, qk, qf.shape[0], "query"), _align(gallery_keys, gk, gf.shape[0], "gallery")
        feats.query_features = qf if qi is None else qf[qi]  # (Q, F)
        feats.gallery_features = gf if gi is None else gf[gi]  # (G, F)
        res = metrics_from_features(feats.query_features, feats.gallery_features, feats.query_ids, feats.gallery_ids,
                                    msd=msd, per_query=True)
    feats.per_query = res.per_query
    return {"name": name, "arch": "scores", "overall": res.as_dict(), "breakdown": breakdown(feats, msd),
            "seconds": {"metrics": round(time.perf_counter() - t0, 3)}, "msd_variant": msd, "_features": feats}


def evaluate_checkpoint(
    checkpoint: str, samples: Sequence[Sample], *, rerank_topk: int = 0, msd: MsdVariant = "paper", device: str = "cpu",
    batch_size: int = 64, progress: bool = False, rerank_weight: float | None | str = "checkpoint",
    granularity_weight: float | None = None, check_weight: float | str = "checkpoint",
) -> dict[str, Any]:
    """Everything ``ufinebench eval`` reports for one checkpoint (plus the features, for reports).

    ``rerank_weight``: "checkpoint" takes the blend weight tuned on val during training (the
    matcher alone for checkpoints without one), a number or None (matcher alone) overrides it;
    ``check_weight`` likewise for the attribute check (models with a word head; 0: off). Re-ranking
    at a depth other than the one the blend was tuned at says so in ``rerank["note"]``.
    ``granularity_weight`` (not None) replaces the model's weight of the granularity cosine in the
    retrieval score (CFAM; the trained weights are unchanged, so one run can be scored at several).
    """
    loaded = from_checkpoint(checkpoint, device=device)
    if granularity_weight is not None:
        loaded.model.cfg = dataclasses.replace(loaded.model.cfg, granularity_weight=float(granularity_weight))
    t0 = time.perf_counter()
    feats = extract_features(loaded.model, samples, loaded.tokenizer, loaded.transform, batch_size=batch_size, device=device,
                             progress=progress, keep_tokens=rerank_topk > 0, vocabulary=loaded.vocabulary)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = metrics_from_features(feats.query_features, feats.gallery_features, feats.query_ids, feats.gallery_ids, msd=msd, per_query=True)
    t_metrics = time.perf_counter() - t0
    out: dict[str, Any] = {
        "checkpoint": str(loaded.path),
        "arch": loaded.model.cfg.arch,
        "overall": res.as_dict(),
        "breakdown": breakdown(feats, msd),
        "seconds": {"encode": round(t_enc, 3), "metrics": round(t_metrics, 3)},
        "config": loaded.meta.get("config", {}),
        "msd_variant": msd,
        "granularity_weight": loaded.model.cfg.granularity_weight,
    }
    if rerank_topk > 0:
        out["rerank"] = _rerank_result(loaded, feats, rerank_topk, rerank_weight, check_weight, device, msd)
    feats.per_query = res.per_query
    out["_features"] = feats
    return out


def _rerank_result(loaded: Any, feats: Features, topk: int, rerank_weight: float | None | str, check_weight: float | str, device: str,
                   msd: MsdVariant) -> dict[str, Any]:
    """The re-ranked figures of one checkpoint (the blend from the checkpoint unless given)."""
    tuned = RerankBlend.from_meta(loaded.meta)
    weight = tuned.matcher if rerank_weight == "checkpoint" else rerank_weight
    if isinstance(weight, str):
        raise ValueError(f"rerank_weight: a number, None or 'checkpoint', got {weight!r}")
    check = tuned.check if check_weight == "checkpoint" else float(check_weight)
    if feats.gallery_word_logp is None:
        check = 0.0  # no word head: no attribute check
    rr, secs, _, _ = rerank(loaded.model, feats, topk, weight=weight, check_weight=check, device=device, msd=msd)
    out: dict[str, Any] = {"topk": topk, "weight": weight, "check_weight": check, "overall": rr.as_dict(), "seconds": round(secs, 3)}
    from_checkpoint_blend = rerank_weight == "checkpoint" or check_weight == "checkpoint"
    if from_checkpoint_blend and "rerank_weight" in loaded.meta and topk != tuned.topk:
        out["note"] = (f"the re-ranking blend was chosen on val at top {tuned.topk}; re-ranking top {topk} uses it unchanged "
                       f"(--rerank-weight / --check-weight set it by hand)")
    if rr.per_query is not None:
        out["R1_by"] = rerank_r1_by_tag(feats, rr.per_query.first_hit_rank)
    feats.rerank_per_query = rr.per_query
    return out


@dataclass(frozen=True)
class EvalRequest:
    """One ``ufinebench eval``: models (our checkpoints, others' score files) on one split of a dataset."""

    data: str
    split: str = "test"
    format: str | None = None
    checkpoints: tuple[str, ...] = ()
    scores: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # a name for each score file, in order (default: its file name)
    rerank_topk: int = 0
    rerank_weight: float | None | str = "checkpoint"
    check_weight: float | str = "checkpoint"
    granularity_weight: float | None = None
    msd: MsdVariant = "paper"
    device: str | None = None  # None: CUDA when available
    batch_size: int = 64
    progress: bool = False


@dataclass
class EvalRun:
    """What :func:`run_eval` gives back: the split, and one result per model (in request order)."""

    dataset: Path
    split: str
    samples: list[Sample]
    results: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0  # this process's rank: only rank 0 reports


def _unique(name: str, taken: list[str]) -> str:
    while name in taken:
        name += "'"
    taken.append(name)
    return name


def checkpoint_name(path: str) -> str:
    """A table name for a checkpoint: its run folder's name (and best / last / epoch_N when given)."""
    p = Path(path).resolve()
    return p.parent.parent.name + "/" + p.name if p.name in ("best", "last") or p.name.startswith("epoch_") else p.name


def run_eval(req: EvalRequest) -> EvalRun:
    """Evaluate every model of ``req`` on its split; under ``torchrun`` the processes share the encoding.

    Every result carries its ``name`` and, on rank 0, its ``per_query`` record (what ``compare``'s
    paired tests read).
    """
    ann = load_dataset(req.data, req.format, split=req.split, check_files=bool(req.checkpoints))  # scores need no images
    run = EvalRun(ann.path, req.split, ann.split(req.split))
    procs = setup(req.device) if req.checkpoints else None
    run.rank = procs.rank if procs is not None else 0
    names: list[str] = []
    for ck in req.checkpoints:
        assert procs is not None
        r = evaluate_checkpoint(ck, run.samples, rerank_topk=req.rerank_topk, msd=req.msd, device=str(procs.device),
                                batch_size=req.batch_size, progress=req.progress, rerank_weight=req.rerank_weight,
                                granularity_weight=req.granularity_weight, check_weight=req.check_weight)
        r["name"] = _unique(checkpoint_name(ck), names)
        run.results.append(r)
    for i, path in enumerate(req.scores):
        z = load_scores_npz(path)
        name = _unique(req.names[i] if i < len(req.names) else Path(path).stem, names)
        try:
            run.results.append(evaluate_scores(z.get("similarity"), z.get("query_keys"), z.get("gallery_keys"), run.samples,
                                               query_features=z.get("query_features"), gallery_features=z.get("gallery_features"),
                                               msd=req.msd, name=name))
        except UFineBenchError as exc:
            raise UFineBenchError(f"{path}: {exc}") from None
    if run.rank == 0:
        for r in run.results:  # per-query results in the JSON: what paired comparisons (`compare`) need
            r["per_query"] = per_query_record(r["_features"])
    return run
