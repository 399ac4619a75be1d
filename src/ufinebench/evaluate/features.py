"""Encoding a split: the :class:`Features` record every evaluation step reads (metrics, breakdowns, re-ranking, reports).

The gallery is the split's unique images, the queries every caption; both are encoded in batches
(shared between ``torchrun`` processes) into the model's retrieval features, whose cosine is the
model's similarity (global embedding, plus the granularity embeddings for CFAM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ufinebench.data.annotations import Sample
from ufinebench.data.datasets import Query, collate, eval_sets, evaluation_keys, queries_of, unique_images
from ufinebench.distributed import group_ranks
from ufinebench.metrics import PerQuery
from ufinebench.model.cfam import RetrievalModel
from ufinebench.vocab import AttributeVocabulary
from ufinebench.vocab.tokens import AttributeTable, head_has_pairs, named_groups


@dataclass
class Features:
    """One split as a model (or a similarity matrix from elsewhere) sees it: what evaluation needs.

    Rows follow the split's evaluation order (``evaluation_keys``): Q queries (every caption), G
    gallery images (unique images). ``query_features`` / ``gallery_features`` are (Q, F) / (G, F)
    float32 (F = 0 when the scores came as a ``similarity`` matrix, (Q, G)). The re-ranking
    inputs are kept only when asked for: the image tokens and the matcher's text side, and for a
    model with a word head what its attribute check reads (each image's log-probability of every
    attribute group [and pair], each query's named groups [and pairs]). ``per_query`` /
    ``rerank_per_query`` are filled in by evaluation.
    """

    query_ids: np.ndarray  # (Q,) int64
    gallery_ids: np.ndarray  # (G,) int64
    query_tags: list[dict[str, Any]]
    query_texts: list[str]
    gallery_paths: list[str]
    query_image_index: np.ndarray  # (Q,) int64: the gallery row of the image each caption describes
    query_keys: list[str]  # FILE_PATH#N, for pairing results across models
    query_features: np.ndarray  # (Q, F)
    gallery_features: np.ndarray  # (G, F)
    similarity: np.ndarray | None = None  # (Q, G) scores of a model that is not ours (then F = 0)
    gallery_tokens: torch.Tensor | None = None  # (G, 1+N, D) float16
    query_match_seq: list[torch.Tensor] | None = None  # Q tensors (T_i, D): lengths differ between batches
    query_match_mask: list[torch.Tensor] | None = None  # Q tensors (T_i,)
    gallery_word_logp: np.ndarray | None = None  # (G, outputs) float32
    query_word_groups: np.ndarray | None = None  # (Q, outputs) bool
    per_query: PerQuery | None = field(default=None, repr=False)
    rerank_per_query: PerQuery | None = field(default=None, repr=False)

    @classmethod
    def of_split(cls, samples: Sequence[Sample], query_features: np.ndarray | None = None,
                 gallery_features: np.ndarray | None = None) -> Features:
        """A record with the split's ids, tags, texts and keys (and, if given, features in evaluation order)."""
        gallery = unique_images(samples)
        queries = queries_of(samples, {s.image_path: i for i, s in enumerate(gallery)})
        return cls(*_split_columns(gallery, queries), evaluation_keys(samples)[0],
                   query_features if query_features is not None else np.zeros((len(queries), 0), np.float32),
                   gallery_features if gallery_features is not None else np.zeros((len(gallery), 0), np.float32))


def _split_columns(gallery: Sequence[Sample], queries: Sequence[Query]) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], list[str],
                                                                                  list[str], np.ndarray]:
    """(query ids, gallery ids, query tags, query texts, gallery paths, query image index)."""
    return (np.asarray([q.person_id for q in queries], dtype=np.int64), np.asarray([s.person_id for s in gallery], dtype=np.int64),
            [q.tags for q in queries], [q.text for q in queries], [str(s.image_path) for s in gallery],
            np.asarray([q.image_index for q in queries], dtype=np.int64))


@dataclass
class _Parts:
    """What one process encoded (its share of the gallery and the queries)."""

    gfeat: list[torch.Tensor] = field(default_factory=list)
    qfeat: list[torch.Tensor] = field(default_factory=list)
    gtok: list[torch.Tensor] = field(default_factory=list)
    qseq: list[torch.Tensor] = field(default_factory=list)
    qmask: list[torch.Tensor] = field(default_factory=list)
    gword: list[torch.Tensor] = field(default_factory=list)
    qword: list[torch.Tensor] = field(default_factory=list)


@torch.no_grad()
def extract_features(
    model: RetrievalModel, samples: Sequence[Sample], tokenizer: Any, transform: Any, *, batch_size: int = 64, workers: int = 0,
    device: str | torch.device = "cpu", progress: bool = False, keep_tokens: bool = False, vocabulary: AttributeVocabulary | None = None,
) -> Features:
    """Gallery and query retrieval features (float32, CPU) with ids, tags, and what reports need.

    With ``keep_tokens`` the image tokens and the matcher's text inputs are kept (re-ranking), and
    for a model with a word head (``data.attribute_words``) and its ``vocabulary`` what its
    attribute check reads: each image's log-probability of every attribute group, each query's
    named groups.
    """
    gallery, queries = eval_sets(samples, tokenizer, transform, model.cfg.context_length)
    table = None
    if keep_tokens and model.word_head is not None and vocabulary is not None:
        table = AttributeTable.build(vocabulary, tokenizer)
    pairs = vocabulary is not None and head_has_pairs(model.cfg.attribute_words, vocabulary)
    was_training = model.training
    model.eval()
    rank, world = group_ranks()
    g_idx = np.array_split(np.arange(len(gallery)), world)[rank]  # this process's share (all of it alone)
    q_idx = np.array_split(np.arange(len(queries)), world)[rank]
    bar = tqdm(total=len(g_idx) + len(q_idx), unit="item", desc="encoding", leave=False) if progress and rank == 0 else None
    p = _Parts()
    for batch in DataLoader(Subset(gallery, g_idx.tolist()), batch_size=batch_size, num_workers=workers, collate_fn=collate):
        enc = model.encode_image(batch["image"].to(device))
        p.gfeat.append(model.retrieval_features(enc).cpu())
        if keep_tokens:
            p.gtok.append(enc["tokens"].half().cpu())
        if table is not None:
            p.gword.append(model.word_log_probs(enc).cpu())  # (b, groups)
        if bar is not None:
            bar.update(len(batch["index"]))
    for batch in DataLoader(Subset(queries, q_idx.tolist()), batch_size=batch_size, num_workers=0, collate_fn=collate):
        enc = model.encode_text(batch["tokens"].to(device))
        p.qfeat.append(model.retrieval_features(enc).cpu())
        if keep_tokens:
            seq, mask = model.text_match_inputs(enc)
            p.qseq.extend(seq.half().cpu())
            p.qmask.extend(mask.cpu())
        if table is not None:
            p.qword.append(named_groups(batch["tokens"], table, pairs))  # (b, groups [+ pairs]) bool
        if bar is not None:
            bar.update(len(batch["index"]))
    if bar is not None:
        bar.close()
    model.train(was_training)
    return _assemble(p, world, keep_tokens, table is not None, gallery, queries, samples)


def _assemble(p: _Parts, world: int, keep_tokens: bool, checked: bool, gallery: Any, queries: Any, samples: Sequence[Sample]) -> Features:
    """Every process's parts put together, in order, into one :class:`Features`."""
    g_local = torch.cat(p.gfeat).numpy() if p.gfeat else np.zeros((0, 0), np.float32)
    q_local = torch.cat(p.qfeat).numpy() if p.qfeat else np.zeros((0, 0), np.float32)
    gtok = p.gtok
    if world > 1:  # every process gets the whole set back, in order
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, (g_local, q_local, torch.cat(p.gtok) if p.gtok else None, p.qseq, p.qmask, p.gword, p.qword))
        g_local = np.concatenate([x[0] for x in parts if len(x[0])])
        q_local = np.concatenate([x[1] for x in parts if len(x[1])])
        if keep_tokens:
            gtok = [x[2] for x in parts if x[2] is not None]
            p.qseq = [t for x in parts for t in x[3]]
            p.qmask = [t for x in parts for t in x[4]]
            p.gword = [t for x in parts for t in x[5]]
            p.qword = [t for x in parts for t in x[6]]
    out = Features(*_split_columns(gallery.samples, queries.queries), evaluation_keys(samples)[0], q_local, g_local)
    if keep_tokens:
        out.gallery_tokens = torch.cat(gtok)  # (G, 1+N, D) float16
        out.query_match_seq, out.query_match_mask = p.qseq, p.qmask
    if checked and p.gword and p.qword:
        out.gallery_word_logp = torch.cat(p.gword).numpy()  # (G, groups) float32
        out.query_word_groups = torch.cat(p.qword).numpy()  # (Q, groups) bool
    return out
