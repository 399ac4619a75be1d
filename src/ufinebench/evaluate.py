"""The evaluation paradigm: encode a split, score it, break it down, optionally re-rank.

Encodes the gallery (unique images) and the queries (every caption) in batches, then scores them
with the metrics engine. Similarity is the model's own: cosine of ``retrieval_features`` (global
embedding, plus the granularity embeddings for CFAM). Results are broken down by the query tags
the annotations carry (UFine3C's ``source``, ``granularity``, ``style``) and always by caption
length (``words``: <= 30, 31-60, > 60). Re-ranking re-orders each query's top K by the matcher
head: the set of the top K and every similarity value stay, only their order changes, so R@K and
mAP show the re-ranker's effect and mSD is computed on the same values.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ufinebench.data.annotations import Sample, subset_sort_key
from ufinebench.data.datasets import collate, eval_sets, evaluation_keys
from ufinebench.errors import UFineBenchError
from ufinebench.metrics import (
    MsdVariant,
    RetrievalResult,
    metrics_from_blocks,
    metrics_from_features,
    metrics_from_similarity,
    unit_rows,
)

BREAKDOWN_KEYS = ("source", "granularity", "style", "words")


@torch.no_grad()
def extract_features(
    model: Any, samples: Sequence[Sample], tokenizer: Any, transform: Any, *, batch_size: int = 64, workers: int = 0,
    device: str | torch.device = "cpu", progress: bool = False, keep_tokens: bool = False,
) -> dict[str, Any]:
    """Gallery and query retrieval features (float32, CPU) with ids, tags, and what reports need.

    With ``keep_tokens`` the image tokens and the matcher's text inputs are kept (re-ranking), and
    for a model with a word head (``data.attribute_words``) what its attribute check reads: each
    image's log-probability of every attribute word group, each query's named groups.
    """
    gallery, queries = eval_sets(samples, tokenizer, transform, model.cfg.context_length)
    table = None
    if keep_tokens and getattr(model, "word_head", None) is not None:
        from ufinebench.train import AttributeTable, head_has_pairs, named_groups

        table = AttributeTable.build(tokenizer, tokenizer.vocab_size)
    was_training = model.training
    model.eval()
    rank, world = _process_group()
    g_idx = np.array_split(np.arange(len(gallery)), world)[rank]  # this process's share (all of it alone)
    q_idx = np.array_split(np.arange(len(queries)), world)[rank]
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(g_idx) + len(q_idx), unit="item", desc="encoding", leave=False)
    gfeat, qfeat, gtok, qseq, qmask, gword, qword = [], [], [], [], [], [], []
    g_loader = DataLoader(Subset(gallery, g_idx.tolist()), batch_size=batch_size, num_workers=workers, collate_fn=collate)
    for batch in g_loader:
        enc = model.encode_image(batch["image"].to(device))
        gfeat.append(model.retrieval_features(enc).cpu())
        if keep_tokens:
            gtok.append(enc["tokens"].half().cpu())
        if table is not None:
            gword.append(model.word_log_probs(enc).cpu())  # (b, groups)
        if bar is not None:
            bar.update(len(batch["index"]))
    for batch in DataLoader(Subset(queries, q_idx.tolist()), batch_size=batch_size, num_workers=0, collate_fn=collate):
        enc = model.encode_text(batch["tokens"].to(device))
        qfeat.append(model.retrieval_features(enc).cpu())
        if keep_tokens:
            seq, mask = model.text_match_inputs(enc)
            qseq.extend(seq.half().cpu())
            qmask.extend(mask.cpu())
        if table is not None:
            qword.append(named_groups(batch["tokens"], table, head_has_pairs(model)))  # (b, groups [+ pairs]) bool
        if bar is not None:
            bar.update(len(batch["index"]))
    g_local = torch.cat(gfeat).numpy() if gfeat else np.zeros((0, 0), np.float32)
    q_local = torch.cat(qfeat).numpy() if qfeat else np.zeros((0, 0), np.float32)
    if world > 1:  # every process gets the whole set back, in order
        import torch.distributed as dist

        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, (g_local, q_local, torch.cat(gtok) if gtok else None, qseq, qmask, gword, qword))
        g_local = np.concatenate([p[0] for p in parts if len(p[0])])
        q_local = np.concatenate([p[1] for p in parts if len(p[1])])
        if keep_tokens:
            gtok = [p[2] for p in parts if p[2] is not None]
            qseq = [t for p in parts for t in p[3]]
            qmask = [t for p in parts for t in p[4]]
            gword = [t for p in parts for t in p[5]]
            qword = [t for p in parts for t in p[6]]
    if bar is not None:
        bar.close()
    model.train(was_training)
    out: dict[str, Any] = {
        "gallery_features": g_local,  # (G, F)
        "query_features": q_local,  # (Q, F)
        "gallery_ids": gallery.person_ids,
        "query_ids": queries.person_ids,
        "query_tags": [q.tags for q in queries.queries],
        "query_texts": [q.text for q in queries.queries],
        "gallery_paths": [str(s.image_path) for s in gallery.samples],
        "query_image_index": np.asarray([q.image_index for q in queries.queries], dtype=np.int64),
        "query_keys": evaluation_keys(samples)[0],
    }
    if keep_tokens:
        out["gallery_tokens"] = torch.cat(gtok)  # (G, 1+N, D) float16
        out["query_match_seq"] = qseq  # Q tensors (T_i, D): lengths differ between batches
        out["query_match_mask"] = qmask
    if table is not None and gword and qword:
        out["gallery_word_logp"] = torch.cat(gword).numpy()  # (G, groups) float32
        out["query_word_groups"] = torch.cat(qword).numpy()  # (Q, groups) bool
    return out


def _process_group() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _tag_groups(features: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """{tag key: {value: query indices}} for every key of ``BREAKDOWN_KEYS`` the queries carry, values in subset order."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in BREAKDOWN_KEYS:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(features["query_tags"]):
            if key in t:
                groups[str(t[key])].append(i)
        if groups:
            out[key] = {value: np.asarray(groups[value]) for value in sorted(groups, key=subset_sort_key)}
    return out


def breakdown(features: dict[str, Any], msd: MsdVariant = "paper") -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per value of every tag key present (source, granularity, style, words)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, groups in _tag_groups(features).items():
        out[key] = {}
        for value, idx in groups.items():
            if "similarity" in features:  # scores from elsewhere: the rows of those queries
                res = metrics_from_similarity(features["similarity"][idx], features["query_ids"][idx], features["gallery_ids"], msd=msd)
            else:
                res = metrics_from_features(features["query_features"][idx], features["gallery_features"], features["query_ids"][idx],
                                            features["gallery_ids"], msd=msd)
            out[key][value] = res.as_dict()
    return out


def rerank_r1_by_tag(features: dict[str, Any], first_hit_rank: np.ndarray) -> dict[str, dict[str, float]]:
    """R1 per value of every tag key present (as :func:`breakdown`), from each query's first-hit rank (1 = first)."""
    first = np.asarray(first_hit_rank)
    return {key: {v: 100.0 * float(np.mean(first[idx] == 1)) for v, idx in groups.items()} for key, groups in _tag_groups(features).items()}


def score_rows(features: dict[str, Any], rows: np.ndarray) -> np.ndarray:
    """(len(rows), G) similarities of some queries: from a given matrix, or cosines of the features."""
    if "similarity" in features:
        return np.asarray(features["similarity"][rows], dtype=np.float32)
    return unit_rows(features["query_features"][rows]) @ unit_rows(features["gallery_features"]).T


def per_query_record(features: dict[str, Any]) -> dict[str, Any]:
    """Per-query results (``features["per_query"]``) for the JSON output, None where a query has no
    positive: what paired tests need."""
    per_query = features["per_query"]
    ok = per_query.has_positive

    def col(values: np.ndarray, scale: float = 100.0) -> list[float | None]:
        return [round(float(v) * scale, 6) if o else None for v, o in zip(values, ok, strict=True)]

    return {"query_keys": list(features["query_keys"]), "R1": col(per_query.first_hit_rank == 1), "AP": col(per_query.ap),
            "SD": col(per_query.sd), "first_hit_rank": [int(r) if o else None for r, o in zip(per_query.first_hit_rank, ok, strict=True)]}


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
        dup = sorted({k for k in given if given.count(k) > 1})[:3]
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
    from ufinebench.data.datasets import evaluation_keys, queries_of, unique_images

    qk, gk = evaluation_keys(samples)
    if similarity is None and (query_features is None or gallery_features is None):
        raise UFineBenchError("give a similarity matrix, or both query and gallery features")
    gallery = unique_images(samples)
    queries = queries_of(samples, {s.image_path: i for i, s in enumerate(gallery)})
    feats: dict[str, Any] = {
        "gallery_ids": np.asarray([s.person_id for s in gallery], dtype=np.int64),
        "query_ids": np.asarray([q.person_id for q in queries], dtype=np.int64),
        "query_tags": [q.tags for q in queries], "query_texts": [q.text for q in queries], "gallery_paths": [str(s.image_path) for s in gallery],
        "query_image_index": np.asarray([q.image_index for q in queries], dtype=np.int64), "query_keys": qk,
    }
    t0 = time.perf_counter()
    if similarity is not None:
        sim = np.asarray(similarity)
        if sim.ndim != 2:
            raise UFineBenchError(f"similarity must be 2-D (queries x gallery), has shape {sim.shape}")
        qi, gi = _align(query_keys, qk, sim.shape[0], "query"), _align(gallery_keys, gk, sim.shape[1], "gallery")
        sim = sim if qi is None else sim[qi]
        sim = sim if gi is None else sim[:, gi]
        feats["similarity"] = np.ascontiguousarray(sim)  # (Q, G) in the split's order
        res = metrics_from_similarity(feats["similarity"], feats["query_ids"], feats["gallery_ids"], msd=msd, per_query=True)
    else:
        assert query_features is not None and gallery_features is not None
        qf, gf = np.asarray(query_features), np.asarray(gallery_features)
        qi, gi = _align(query_keys, qk, qf.shape[0], "query"), _align(gallery_keys, gk, gf.shape[0], "gallery")
        feats["query_features"] = qf if qi is None else qf[qi]  # (Q, F)
        feats["gallery_features"] = gf if gi is None else gf[gi]  # (G, F)
        res = metrics_from_features(feats["query_features"], feats["gallery_features"], feats["query_ids"], feats["gallery_ids"],
                                    msd=msd, per_query=True)
    feats["per_query"] = res.per_query
    return {"name": name, "arch": "scores", "overall": res.as_dict(), "breakdown": breakdown(feats, msd),
            "seconds": {"metrics": round(time.perf_counter() - t0, 3)}, "msd_variant": msd, "_features": feats}


RERANK_TOPK = 10  # the re-ranking depth whose blend weight training tunes on val (the demo's --rerank-topk)
RERANK_WEIGHTS: tuple[float | None, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, None)  # None: the matcher's order alone
CHECK_WEIGHTS: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)  # the attribute check's weights tried beside each (models with a word head)


@torch.no_grad()
def matcher_topk(model: Any, features: dict[str, Any], k: int, *, device: str | torch.device = "cpu",
                 batch_pairs: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's top ``k`` gallery images by the dual encoder and the matcher's logits for them.

    Returns (top (Q, k) gallery indices in descending cosine, cosines (Q, k), matcher logits (Q, k)).
    """
    if getattr(model, "matcher", None) is None:
        from ufinebench.errors import UFineBenchError

        raise UFineBenchError("--rerank-topk needs a model with a matcher head (arch cfam, or model.matching: true)")
    q, g = features["query_features"], features["gallery_features"]
    qn, gn = unit_rows(q), unit_rows(g)
    k = max(1, min(k, g.shape[0]))
    top = np.empty((q.shape[0], k), dtype=np.int64)
    cos = np.empty((q.shape[0], k), dtype=np.float32)
    for i0 in range(0, q.shape[0], 1024):
        s = qn[i0 : i0 + 1024] @ gn.T  # (b, G)
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
        top[i0 : i0 + 1024] = np.take_along_axis(part, order, axis=1)
        cos[i0 : i0 + 1024] = np.take_along_axis(s, top[i0 : i0 + 1024], axis=1)
    gt = features["gallery_tokens"]
    model.eval()
    logits = np.empty((q.shape[0], k), dtype=np.float32)
    step = max(1, batch_pairs // k)  # queries per matcher batch; each query meets its k images
    for q0 in range(0, q.shape[0], step):
        q1 = min(q0 + step, q.shape[0])
        seq = torch.nn.utils.rnn.pad_sequence([features["query_match_seq"][i].float() for i in range(q0, q1)], batch_first=True)
        mask = torch.nn.utils.rnn.pad_sequence([features["query_match_mask"][i] for i in range(q0, q1)], batch_first=True)
        imgs = gt[torch.from_numpy(top[q0:q1].ravel())].float()  # (b*k, 1+N, D)
        lg = model.match_logits(seq.repeat_interleave(k, 0).to(device), mask.repeat_interleave(k, 0).to(device), imgs.to(device))
        logits[q0:q1] = lg.float().cpu().numpy().reshape(q1 - q0, k)
    return top, cos, logits


def _logit_scale(model: Any) -> float:
    """1 / temperature of the model's global similarity (1 for a model without one)."""
    return float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 1.0


def attribute_check(features: dict[str, Any], top: np.ndarray) -> np.ndarray | None:
    """(Q, k): for each query and each of its top-k images, the mean log-probability the image's word
    head gives the attribute words the query names, and the colour-garment pairs for a head trained
    with ``data.attribute_pairs`` (0 when it names none); None without a word head.

    The re-ranker's attribute check: it reads only what a description says ("sandals" without a
    colour, no word about a bag) and asks whether the picture has it, where the dual encoder's
    cosine also weighs everything a short description leaves out (docs/training.md).
    """
    if "gallery_word_logp" not in features or "query_word_groups" not in features:
        return None
    named = features["query_word_groups"].astype(np.float32)  # (Q, groups)
    logp = features["gallery_word_logp"][top]  # (Q, k, groups)
    return np.einsum("qg,qkg->qk", named, logp) / np.maximum(named.sum(1, keepdims=True), 1.0)  # (Q, k)


def rerank_from_logits(features: dict[str, Any], top: np.ndarray, cos: np.ndarray, logits: np.ndarray, weight: float | None,
                       scale: float, *, check: np.ndarray | None = None, check_weight: float = 0.0, msd: MsdVariant = "paper",
                       per_query: bool = True) -> tuple[RetrievalResult, np.ndarray]:
    """Metrics after re-ordering each top k by ``scale * cos + weight * matcher logit + check_weight * check``.

    ``scale`` is the model's logit scale (1 / temperature), so the terms are logits; ``weight``
    None orders by the matcher alone, 0 keeps the dual encoder's order; ``check`` (Q, k) is
    :func:`attribute_check`. Only the order inside the top k changes (the similarities keep their
    values), so mSD stays comparable.
    """
    score = logits if weight is None else scale * cos + weight * logits  # (Q, k)
    if weight is not None and check is not None and check_weight > 0:
        score = score + check_weight * check
    new_order = np.argsort(-score, axis=1, kind="stable")  # (Q, k): positions within the top k
    qn, gn = unit_rows(features["query_features"]), unit_rows(features["gallery_features"])

    def block(i0: int, i1: int) -> np.ndarray:
        s = (qn[i0:i1] @ gn.T).astype(np.float32)  # (b, G) dual-encoder similarities
        rows = np.arange(i1 - i0)[:, None]
        vals = s[rows, top[i0:i1]]  # (b, k), descending
        s[rows, np.take_along_axis(top[i0:i1], new_order[i0:i1], axis=1)] = vals  # same values, new order
        return s

    res = metrics_from_blocks(block, features["query_ids"], features["gallery_ids"], msd=msd, per_query=per_query)
    return res, new_order


def blend_name(weight: float | None, check_weight: float = 0.0) -> str:
    """How a re-ranking blend is written in tables and checkpoints: "matcher", "0.5", "0.5 + check 4"."""
    if weight is None:
        return "matcher"
    return f"{weight:g}" if check_weight <= 0 else f"{weight:g} + check {check_weight:g}"


def tune_rerank_weight(model: Any, features: dict[str, Any], k: int, *, device: str | torch.device = "cpu",
                       weights: Sequence[float | None] = RERANK_WEIGHTS, check_weights: Sequence[float] = CHECK_WEIGHTS,
                       ) -> tuple[float | None, float, dict[str, float], dict[str, float]]:
    """The blend (matcher weight, attribute-check weight) with the best R1 on these (validation)
    features, ties broken by mAP, then to the smaller weights.

    Returns (weight, check weight, {blend name: R1}, {blend name: mAP}); the check's weights are
    tried only for a model with a word head. Tuned on ``val`` at training time and kept in the
    checkpoint, so that test and 3C numbers never choose it. mAP breaks R1 ties because a model
    that finds every val person first (R1 100) leaves R1 nothing to choose by, while the order of
    the other true images below the first still differs.
    """
    top, cos, logits = matcher_topk(model, features, k, device=device)
    check = attribute_check(features, top)
    scale = _logit_scale(model)
    r1s: dict[str, float] = {}
    maps: dict[str, float] = {}
    best: tuple[float, float, float | None, float] = (-1.0, -1.0, 0.0, 0.0)
    for w in weights:
        for v in (check_weights if check is not None and w is not None else (0.0,)):
            m = rerank_from_logits(features, top, cos, logits, w, scale, check=check, check_weight=v, per_query=False)[0].as_dict()
            name = blend_name(w, v)
            r1s[name], maps[name] = round(m["R1"], 4), round(m["mAP"], 4)
            if (r1s[name], maps[name]) > best[:2]:
                best = (r1s[name], maps[name], w, v)
    return best[2], best[3], r1s, maps


def rerank(model: Any, features: dict[str, Any], k: int, *, weight: float | None = None, check_weight: float = 0.0,
           device: str | torch.device = "cpu", msd: MsdVariant = "paper") -> tuple[RetrievalResult, float, np.ndarray, np.ndarray]:
    """Re-order each query's top ``k`` by ``cos / T + weight * matcher logit + check_weight *
    attribute check`` (``weight`` None: the matcher alone); returns (metrics, seconds, top-k idx, new order)."""
    t0 = time.perf_counter()
    top, cos, logits = matcher_topk(model, features, k, device=device)
    check = attribute_check(features, top)
    seconds = time.perf_counter() - t0
    scale = _logit_scale(model)
    res, new_order = rerank_from_logits(features, top, cos, logits, weight, scale, check=check, check_weight=check_weight, msd=msd)
    return res, seconds, top, new_order


def evaluate_checkpoint(
    checkpoint: str, samples: Sequence[Sample], *, rerank_topk: int = 0, msd: MsdVariant = "paper", device: str = "cpu",
    batch_size: int = 64, progress: bool = False, rerank_weight: float | None | str = "checkpoint",
    granularity_weight: float | None = None, check_weight: float | str = "checkpoint",
) -> dict[str, Any]:
    """Everything ``ufinebench eval`` reports for one checkpoint (plus the features, for reports).

    ``rerank_weight``: "checkpoint" takes the blend weight tuned on val during training (the
    matcher alone for checkpoints without one), a number or None (matcher alone) overrides it;
    ``check_weight`` likewise for the attribute check (models with a word head; 0: off).
    ``granularity_weight`` (not None) replaces the model's weight of the granularity cosine in the
    retrieval score (CFAM; the trained weights are unchanged, so one run can be scored at several).
    """
    import dataclasses

    from ufinebench.model.checkpoint import from_checkpoint

    loaded = from_checkpoint(checkpoint, device=device)
    if granularity_weight is not None:
        loaded.model.cfg = dataclasses.replace(loaded.model.cfg, granularity_weight=float(granularity_weight))
    t0 = time.perf_counter()
    feats = extract_features(loaded.model, samples, loaded.tokenizer, loaded.transform, batch_size=batch_size, device=device,
                             progress=progress, keep_tokens=rerank_topk > 0)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = metrics_from_features(feats["query_features"], feats["gallery_features"], feats["query_ids"], feats["gallery_ids"],
                                msd=msd, per_query=True)
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
        weight = loaded.meta.get("rerank_weight") if rerank_weight == "checkpoint" else rerank_weight
        if isinstance(weight, str):
            raise ValueError(f"rerank_weight: a number, None or 'checkpoint', got {weight!r}")
        check = float(loaded.meta.get("rerank_check_weight") or 0.0) if check_weight == "checkpoint" else float(check_weight)
        if "gallery_word_logp" not in feats:
            check = 0.0  # no word head: no attribute check
        rr, secs, top, order = rerank(loaded.model, feats, rerank_topk, weight=weight, check_weight=check, device=device, msd=msd)
        out["rerank"] = {"topk": rerank_topk, "weight": weight, "check_weight": check, "overall": rr.as_dict(), "seconds": round(secs, 3)}
        if rr.per_query is not None:
            out["rerank"]["R1_by"] = rerank_r1_by_tag(feats, rr.per_query.first_hit_rank)
        feats["rerank_per_query"] = rr.per_query
    feats["per_query"] = res.per_query
    out["_features"] = feats
    return out
