"""The evaluation paradigm: encode a split, score it, break it down, optionally re-rank.

* :mod:`.features`: encoding a split into :class:`Features` (ids, tags, texts, retrieval features,
  re-ranking inputs);
* :mod:`.breakdown`: metrics per source / granularity / style / caption length, per-query records;
* :mod:`.rerank`: re-ordering each query's top K by the matcher and the attribute check, with the
  blend chosen on val (:class:`RerankBlend`);
* :mod:`.run`: one checkpoint or one score file evaluated (:func:`evaluate_checkpoint`,
  :func:`evaluate_scores`), and a whole ``ufinebench eval`` request (:func:`run_eval`).

Similarity is the model's own: cosine of ``retrieval_features``. Re-ranking changes only the order
inside the top K (every similarity keeps its value), so R@K and mAP show its effect and mSD is
computed on the same values.
"""

from ufinebench.evaluate.breakdown import BREAKDOWN_KEYS, breakdown, per_query_record, rerank_r1_by_tag, score_rows, tag_groups
from ufinebench.evaluate.features import Features, extract_features
from ufinebench.evaluate.rerank import (
    CHECK_WEIGHTS,
    RERANK_TOPK,
    RERANK_WEIGHTS,
    BlendScore,
    RerankBlend,
    attribute_check,
    blend_name,
    check_weight_without_matcher,
    features_check,
    grid_meta,
    logit_scale,
    matcher_topk,
    rerank,
    rerank_from_logits,
    tune_rerank_weight,
)
from ufinebench.evaluate.run import EvalRequest, EvalRun, evaluate_checkpoint, evaluate_scores, run_eval

__all__ = ["BREAKDOWN_KEYS", "CHECK_WEIGHTS", "RERANK_TOPK", "RERANK_WEIGHTS", "BlendScore", "EvalRequest", "EvalRun", "Features",
           "RerankBlend", "attribute_check", "blend_name", "breakdown", "check_weight_without_matcher", "evaluate_checkpoint",
           "evaluate_scores", "extract_features", "features_check", "grid_meta", "logit_scale", "matcher_topk", "per_query_record", "rerank",
           "rerank_from_logits", "rerank_r1_by_tag", "run_eval", "score_rows", "tag_groups", "tune_rerank_weight"]
