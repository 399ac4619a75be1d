"""torch Datasets over plain records: training pairs, evaluation gallery and queries.

One shared set of classes for every format (records come from ``annotations``). Texts are
tokenized once, up front. Training items draw their augmentation from a generator seeded by
(seed, epoch, item), so they are the same whatever the number of workers or processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ufinebench.data.annotations import Sample, label_map, word_count_bucket
from ufinebench.data.tokenizer import TextTokenizer
from ufinebench.data.transforms import ImageTransform, load_image


def _split_key(key: Any) -> tuple[int, int]:
    """Items are addressed by ``index`` or by ``(index, epoch)`` (from our batch samplers)."""
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), 0


class TrainPairs(Dataset):
    """One item per (image, caption) pair of the given samples.

    Item: ``image`` (3, H, W) float32, ``tokens`` (L,) int64, ``label`` (contiguous identity
    label), ``person_id`` (raw), ``image_index`` (position among unique images), ``index``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        tokenizer: TextTokenizer,
        transform: ImageTransform,
        *,
        context_length: int = 77,
        seed: int = 0,
    ) -> None:
        if not samples:
            raise ValueError("no training samples")
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed
        self.labels_of = label_map(s.person_id for s in self.samples)
        paths = list(dict.fromkeys(s.image_path for s in self.samples))
        self.image_index_of = {p: i for i, p in enumerate(paths)}
        pairs = [(si, ci) for si, s in enumerate(self.samples) for ci in range(len(s.captions))]
        self.pairs = np.asarray(pairs, dtype=np.int64)  # (N, 2): sample, caption
        self.tokens = tokenizer.encode([self.samples[si].captions[ci] for si, ci in pairs], context_length)  # (N, L)
        self.labels = np.asarray([self.labels_of[self.samples[si].person_id] for si, _ in pairs], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.labels_of)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        i, epoch = _split_key(key)
        si, _ = self.pairs[i]
        s = self.samples[si]
        rng = np.random.default_rng([self.seed, epoch, i])
        image = self.transform(load_image(s.image_path), rng if self.transform.train else None)
        return {
            "image": image,
            "tokens": self.tokens[i],
            "label": int(self.labels[i]),
            "person_id": s.person_id,
            "image_index": self.image_index_of[s.image_path],
            "index": i,
        }


@dataclass(frozen=True)
class Query:
    """One evaluation query: a caption, its person, the image it describes, and its tags."""

    text: str
    person_id: int
    image_index: int  # into the gallery of the same evaluation set
    tags: dict[str, Any]


class GalleryImages(Dataset):
    """The unique images of the given samples (first occurrence order). Item: image, index."""

    def __init__(self, samples: Sequence[Sample], transform: ImageTransform) -> None:
        first: dict[Any, Sample] = {}
        for s in samples:
            first.setdefault(s.image_path, s)
        self.samples = list(first.values())
        self.transform = transform
        self.person_ids = np.asarray([s.person_id for s in self.samples], dtype=np.int64)  # (G,)
        self.index_of = {s.image_path: i for i, s in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.transform(load_image(self.samples[i].image_path)), "index": i}


class QueryTexts(Dataset):
    """Every caption of the given samples as a query, tokenized once. Item: tokens, index.

    Each query's tags merge the image's tags (``source``), the caption's own tags
    (``granularity``, ``style``, ...) and ``words``: the word-count bucket, for breakdowns of
    untagged data.
    """

    def __init__(self, samples: Sequence[Sample], gallery: GalleryImages, tokenizer: TextTokenizer, context_length: int = 77) -> None:
        self.queries: list[Query] = []
        for s in samples:
            gi = gallery.index_of[s.image_path]
            for text, tags in zip(s.captions, s.caption_tags):
                merged = {**s.image_tags, **tags, "words": word_count_bucket(text)}
                self.queries.append(Query(text, s.person_id, gi, merged))
        self.person_ids = np.asarray([q.person_id for q in self.queries], dtype=np.int64)  # (Q,)
        self.tokens = tokenizer.encode([q.text for q in self.queries], context_length)  # (Q, L)

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"tokens": self.tokens[i], "index": i}


def eval_sets(
    samples: Sequence[Sample], tokenizer: TextTokenizer, transform: ImageTransform, context_length: int = 77
) -> tuple[GalleryImages, QueryTexts]:
    """The gallery (unique images) and the queries (all captions) of an evaluation split."""
    gallery = GalleryImages(samples, transform)
    return gallery, QueryTexts(samples, gallery, tokenizer, context_length)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, turn ints into int64 tensors: the DataLoader's ``collate_fn``."""
    out: dict[str, Any] = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        elif isinstance(vals[0], (int, np.integer)):
            out[k] = torch.as_tensor(vals, dtype=torch.long)
        else:
            out[k] = vals
    return out
