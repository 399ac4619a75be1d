"""Feature extraction and evaluation of a model on an annotated split.

Encodes the gallery (unique images) and the queries (every caption) in batches, then scores them
with the metrics engine. Similarity is the model's own: cosine of ``retrieval_features`` (global
embedding, plus the granularity embeddings for CFAM).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ufinebench.data.annotations import Sample
from ufinebench.data.datasets import collate, eval_sets
from ufinebench.metrics import RetrievalResult, metrics_from_features


@torch.no_grad()
def extract_features(
    model: Any, samples: Sequence[Sample], tokenizer: Any, transform: Any, *, batch_size: int = 64, workers: int = 0,
    device: str | torch.device = "cpu", progress: bool = False,
) -> dict[str, Any]:
    """Gallery and query retrieval features (float32, CPU) with their ids and query tags."""
    gallery, queries = eval_sets(samples, tokenizer, transform, model.cfg.context_length)
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(gallery) + len(queries), unit="item", desc="encoding", leave=False)
    gfeat, qfeat = [], []
    for batch in DataLoader(gallery, batch_size=batch_size, num_workers=workers, collate_fn=collate):
        gfeat.append(model.retrieval_features(model.encode_image(batch["image"].to(device))).cpu())
        if bar is not None:
            bar.update(len(batch["index"]))
    for batch in DataLoader(queries, batch_size=batch_size, num_workers=0, collate_fn=collate):
        qfeat.append(model.retrieval_features(model.encode_text(batch["tokens"].to(device))).cpu())
        if bar is not None:
            bar.update(len(batch["index"]))
    if bar is not None:
        bar.close()
    model.train(was_training)
    return {
        "gallery_features": torch.cat(gfeat).numpy(),  # (G, F)
        "query_features": torch.cat(qfeat).numpy(),  # (Q, F)
        "gallery_ids": gallery.person_ids,
        "query_ids": queries.person_ids,
        "query_tags": [q.tags for q in queries.queries],
        "query_texts": [q.text for q in queries.queries],
        "gallery_paths": [str(s.image_path) for s in gallery.samples],
        "query_image_index": np.asarray([q.image_index for q in queries.queries], dtype=np.int64),
    }


def evaluate_samples(model: Any, samples: Sequence[Sample], tokenizer: Any, transform: Any, **kw: Any) -> RetrievalResult:
    """Text-to-image metrics of ``model`` on ``samples`` (R@K, mAP, mINP, mSD)."""
    f = extract_features(model, samples, tokenizer, transform, **kw)
    return metrics_from_features(f["query_features"], f["gallery_features"], f["query_ids"], f["gallery_ids"])
