"""Validation at the end of an epoch: val metrics, and the re-ranking blend chosen on val only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ufinebench.config import Config
from ufinebench.data.transforms import ImageTransform
from ufinebench.evaluate import RERANK_TOPK, extract_features, grid_meta, tune_rerank_weight
from ufinebench.metrics import metrics_from_features
from ufinebench.training.data import TrainData
from ufinebench.training.state import TrainState


@dataclass
class Validation:
    """One validation's figures: the metrics of val's own captions, and the blend chosen on val (models with a matcher)."""

    metrics: dict[str, Any]
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)  # the blend and its grid, kept in the checkpoint
    log: dict[str, Any] = field(default_factory=dict)  # what the epoch's log line adds


def validate(st: TrainState, data: TrainData, cfg: Config) -> Validation:
    """Val metrics of the current weights; with a matcher, the re-ranking blend tuned on val's captions
    and (with a vocabulary) their shortened copies (:func:`~ufinebench.training.data.with_shortened_captions`)."""
    eval_tf = ImageTransform(size=(cfg.model.image_size[0], cfg.model.image_size[1]))
    model = st.model
    has_matcher = model.matcher is not None
    samples = data.val_with_shortened if has_matcher else data.val_samples
    f = extract_features(model, samples, data.tokenizer, eval_tf, batch_size=max(16, cfg.train.batch_size), device=st.device,
                         keep_tokens=has_matcher, vocabulary=data.vocabulary)
    own = np.array([not tags.get("shortened") for tags in f.query_tags])  # (Q,): val's own captions
    res = metrics_from_features(f.query_features[own], f.gallery_features, f.query_ids[own], f.gallery_ids)
    out = Validation(dict(res.as_dict()))
    out.log = {f"val_{k}": v for k, v in out.metrics.items()}
    if has_matcher:  # the re-ranking blend, chosen on val only (never on test or 3C)
        blend, grid = tune_rerank_weight(model, f, RERANK_TOPK, device=st.device)
        out.checkpoint_meta = {**blend.to_meta(), "rerank_val": grid_meta(grid)}
        out.log["val_rerank_weight"] = blend.name
    return out
