"""Re-ranking each query's top K: the matcher's logit and the attribute check, blended with the cosine.

score = cos / T + w x matcher logit + v x attribute check, inside the dual encoder's top K. Only
the order inside the top K changes (every similarity keeps its value), so R@K and mAP show the
re-ranker's effect and mSD is computed on the same values. The blend (w, v) is chosen on val at
training time at one depth K (:class:`RerankBlend` keeps all three) and read from the checkpoint,
so test and 3C figures never choose it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ufinebench.errors import UFineBenchError
from ufinebench.evaluate.features import Features
from ufinebench.metrics import MsdVariant, RetrievalResult, metrics_from_blocks, unit_rows
from ufinebench.model.cfam import RetrievalModel

RERANK_TOPK = 10  # the re-ranking depth whose blend training tunes on val (the demo's --rerank-topk)
RERANK_WEIGHTS: tuple[float | None, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, None)  # None: the matcher's order alone
CHECK_WEIGHTS: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)  # the attribute check's weights tried beside each (models with a word head)


@dataclass(frozen=True)
class RerankBlend:
    """A re-ranking blend: the matcher's weight (None: the matcher's order alone), the attribute
    check's weight, and the top-K depth it was chosen at."""

    matcher: float | None
    check: float = 0.0
    topk: int = RERANK_TOPK

    @property
    def name(self) -> str:
        """How the blend is written in tables and logs: "matcher", "0.5", "0.5 + check 4"."""
        return blend_name(self.matcher, self.check)

    def to_meta(self) -> dict[str, Any]:
        """The checkpoint's meta.json keys."""
        return {"rerank_weight": self.matcher, "rerank_check_weight": self.check, "rerank_topk": self.topk}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> RerankBlend:
        """The blend a checkpoint keeps; the matcher alone at the default depth for checkpoints without one."""
        w = meta.get("rerank_weight")
        return cls(None if w is None else float(w), float(meta.get("rerank_check_weight") or 0.0), int(meta.get("rerank_topk") or RERANK_TOPK))


@dataclass(frozen=True)
class BlendScore:
    """One blend's validation figures, as :func:`tune_rerank_weight` measured them."""

    blend: RerankBlend
    R1: float
    mAP: float


def blend_name(weight: float | None, check_weight: float = 0.0) -> str:
    """How a re-ranking blend is written in tables: "matcher", "0.5", "0.5 + check 4"."""
    if weight is None:
        return "matcher"
    return f"{weight:g}" if check_weight <= 0 else f"{weight:g} + check {check_weight:g}"


def logit_scale(model: Any) -> float:
    """1 / temperature of the model's global similarity (1 for a model without one)."""
    return float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 1.0


def _top_cosines(features: Features, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's top ``k`` gallery rows by cosine: (Q, k) indices in descending order, (Q, k) cosines."""
    qn, gn = unit_rows(features.query_features), unit_rows(features.gallery_features)
    n = qn.shape[0]
    top = np.empty((n, k), dtype=np.int64)
    cos = np.empty((n, k), dtype=np.float32)
    for i0 in range(0, n, 1024):
        s = qn[i0 : i0 + 1024] @ gn.T  # (b, G)
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
        top[i0 : i0 + 1024] = np.take_along_axis(part, order, axis=1)
        cos[i0 : i0 + 1024] = np.take_along_axis(s, top[i0 : i0 + 1024], axis=1)
    return top, cos


@torch.no_grad()
def matcher_topk(model: RetrievalModel, features: Features, k: int, *, device: str | torch.device = "cpu",
                 batch_pairs: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's top ``k`` gallery images by the dual encoder and the matcher's logits for them.

    Returns (top (Q, k) gallery indices in descending cosine, cosines (Q, k), matcher logits (Q, k)).
    """
    if model.matcher is None:
        raise UFineBenchError("--rerank-topk needs a model with a matcher head (arch cfam, or model.matching: true)")
    if features.gallery_tokens is None or features.query_match_seq is None or features.query_match_mask is None:
        raise UFineBenchError("re-ranking needs the image tokens and the matcher's text side (extract_features(keep_tokens=True))")
    nq = features.query_features.shape[0]
    k = max(1, min(k, features.gallery_features.shape[0]))
    top, cos = _top_cosines(features, k)
    gt = features.gallery_tokens
    model.eval()
    logits = np.empty((nq, k), dtype=np.float32)
    step = max(1, batch_pairs // k)  # queries per matcher batch; each query meets its k images
    for q0 in range(0, nq, step):
        q1 = min(q0 + step, nq)
        seq = torch.nn.utils.rnn.pad_sequence([features.query_match_seq[i].float() for i in range(q0, q1)], batch_first=True)
        mask = torch.nn.utils.rnn.pad_sequence([features.query_match_mask[i] for i in range(q0, q1)], batch_first=True)
        imgs = gt[torch.from_numpy(top[q0:q1].ravel())].float()  # (b*k, 1+N, D)
        lg = model.match_logits(seq.repeat_interleave(k, 0).to(device), mask.repeat_interleave(k, 0).to(device), imgs.to(device))
        logits[q0:q1] = lg.float().cpu().numpy().reshape(q1 - q0, k)
    return top, cos, logits


def attribute_check(gallery_word_logp: np.ndarray | None, query_word_groups: np.ndarray | None, top: np.ndarray) -> np.ndarray | None:
    """(Q, k): for each query and each of its top-k images, the mean log-probability the image's word
    head gives the attribute words the query names (``gallery_word_logp`` (G, outputs),
    ``query_word_groups`` (Q, outputs) bool), and the colour-garment pairs for a head trained with
    ``data.attribute_pairs`` (0 when it names none); None without a word head.

    The re-ranker's attribute check: it reads only what a description says ("sandals" without a
    colour, no word about a bag) and asks whether the picture has it, where the dual encoder's
    cosine also weighs everything a short description leaves out (docs/training.md).
    """
    if gallery_word_logp is None or query_word_groups is None:
        return None
    named = query_word_groups.astype(np.float32)  # (Q, groups)
    logp = gallery_word_logp[top]  # (Q, k, groups)
    return np.einsum("qg,qkg->qk", named, logp) / np.maximum(named.sum(1, keepdims=True), 1.0)  # (Q, k)


def features_check(features: Features, top: np.ndarray) -> np.ndarray | None:
    """:func:`attribute_check` of a split's features."""
    return attribute_check(features.gallery_word_logp, features.query_word_groups, top)


def rerank_from_logits(features: Features, top: np.ndarray, cos: np.ndarray, logits: np.ndarray, weight: float | None,
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
    qn, gn = unit_rows(features.query_features), unit_rows(features.gallery_features)

    def block(i0: int, i1: int) -> np.ndarray:
        s = (qn[i0:i1] @ gn.T).astype(np.float32)  # (b, G) dual-encoder similarities
        rows = np.arange(i1 - i0)[:, None]
        vals = s[rows, top[i0:i1]]  # (b, k), descending
        s[rows, np.take_along_axis(top[i0:i1], new_order[i0:i1], axis=1)] = vals  # same values, new order
        return s

    res = metrics_from_blocks(block, features.query_ids, features.gallery_ids, msd=msd, per_query=per_query)
    return res, new_order


def tune_rerank_weight(model: RetrievalModel, features: Features, k: int, *, device: str | torch.device = "cpu",
                       weights: Sequence[float | None] = RERANK_WEIGHTS, check_weights: Sequence[float] = CHECK_WEIGHTS,
                       ) -> tuple[RerankBlend, list[BlendScore]]:
    """The blend (matcher weight, attribute-check weight) at depth ``k`` with the best R1 on these
    (validation) features, ties broken by mAP, then to the smaller weights; and every blend's figures.

    The check's weights are tried only for a model with a word head. Tuned on ``val`` at training
    time and kept in the checkpoint, so that test and 3C numbers never choose it. mAP breaks R1
    ties because a model that finds every val person first (R1 100) leaves R1 nothing to choose
    by, while the order of the other true images below the first still differs.
    """
    top, cos, logits = matcher_topk(model, features, k, device=device)
    check = features_check(features, top)
    scale = logit_scale(model)
    grid: list[BlendScore] = []
    best: tuple[float, float, RerankBlend] = (-1.0, -1.0, RerankBlend(0.0, 0.0, k))
    for w in weights:
        for v in (check_weights if check is not None and w is not None else (0.0,)):
            m = rerank_from_logits(features, top, cos, logits, w, scale, check=check, check_weight=v, per_query=False)[0].as_dict()
            score = BlendScore(RerankBlend(w, v, k), round(m["R1"], 4), round(m["mAP"], 4))
            grid.append(score)
            if (score.R1, score.mAP) > best[:2]:
                best = (score.R1, score.mAP, score.blend)
    return best[2], grid


def grid_meta(grid: list[BlendScore]) -> list[dict[str, Any]]:
    """The validation grid as the checkpoint keeps it (``rerank_val``): one entry per blend."""
    return [{"matcher": s.blend.matcher, "check": s.blend.check, "topk": s.blend.topk, "R1": s.R1, "mAP": s.mAP} for s in grid]


def check_weight_without_matcher(meta: dict[str, Any]) -> float:
    """The attribute check's weight that validation chose with the matcher's weight at 0 (R1, then
    mAP, then the smaller weight; 0 if none): what search uses, which runs no matcher.

    Read from the checkpoint's ``rerank_val`` grid; checkpoints written before it kept the grid as
    ``rerank_val_R1`` / ``rerank_val_mAP`` keyed by :func:`blend_name`.
    """
    best: tuple[float, float, float] = (-1.0, -1.0, 0.0)
    if isinstance(meta.get("rerank_val"), list):
        for e in meta["rerank_val"]:
            if e.get("matcher") == 0 and (e["R1"], e["mAP"]) > best[:2]:
                best = (e["R1"], e["mAP"], float(e["check"]))
        return best[2]
    r1s, maps = meta.get("rerank_val_R1") or {}, meta.get("rerank_val_mAP") or {}
    for v in CHECK_WEIGHTS:
        name = blend_name(0.0, v)
        if name in r1s and (r1s[name], maps.get(name, 0.0)) > best[:2]:
            best = (r1s[name], maps.get(name, 0.0), v)
    return best[2]


def rerank(model: RetrievalModel, features: Features, k: int, *, weight: float | None = None, check_weight: float = 0.0,
           device: str | torch.device = "cpu", msd: MsdVariant = "paper") -> tuple[RetrievalResult, float, np.ndarray, np.ndarray]:
    """Re-order each query's top ``k`` by ``cos / T + weight * matcher logit + check_weight *
    attribute check`` (``weight`` None: the matcher alone); returns (metrics, seconds, top-k idx, new order)."""
    t0 = time.perf_counter()
    top, cos, logits = matcher_topk(model, features, k, device=device)
    check = features_check(features, top)
    seconds = time.perf_counter() - t0
    res, new_order = rerank_from_logits(features, top, cos, logits, weight, logit_scale(model), check=check, check_weight=check_weight,
                                        msd=msd)
    return res, seconds, top, new_order
