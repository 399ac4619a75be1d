"""torch Datasets over plain records: training pairs, evaluation gallery and queries.

One shared set of classes for every format (records come from ``annotations``). Texts are
tokenized once, up front. Training items draw their augmentation from a generator seeded by
(seed, epoch, item), so they are the same whatever the number of workers or processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ufinebench.data.annotations import Sample, label_map, word_count_bucket
from ufinebench.data.tokenizer import TextTokenizer
from ufinebench.data.transforms import ImageTransform, augment_batch, augment_caption, decode_images, load_image, swap_sides


def _split_key(key: Any) -> tuple[int, int]:
    """Items are addressed by ``index`` or by ``(index, epoch)`` (from our batch samplers)."""
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), 0


class TrainPairs(Dataset):
    """One item per (image, caption) pair of the given samples.

    Item: ``image`` (3, H, W) float32, ``tokens`` (L,) int64, ``label`` (contiguous identity
    label), ``person_id`` (raw), ``image_index`` (position among unique images), ``index``.

    With ``in_memory`` every unique image is decoded once into one uint8 tensor and
    :meth:`batch` builds whole augmented batches without a DataLoader (the fast path for small
    training sets); otherwise items are decoded per access (``__getitem__``), as for data that
    does not fit. Either way an item's augmentation is a function of (seed, epoch, index) only.
    A horizontally flipped image is paired with its caption's "left"/"right" swapped.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        tokenizer: TextTokenizer,
        transform: ImageTransform,
        *,
        context_length: int = 77,
        seed: int = 0,
        in_memory: bool = False,
        workers: int = 1,
        progress: bool = False,
        sentence_drop: float = 0.0,
        sentence_shuffle: bool = False,
        sentence_keep_first: bool = True,
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
        texts = [self.samples[si].captions[ci] for si, ci in pairs]
        self.texts = texts
        self.tokenizer, self.context_length = tokenizer, context_length
        self.sentence_drop, self.sentence_shuffle, self.sentence_keep_first = sentence_drop, sentence_shuffle, sentence_keep_first
        self.tokens = tokenizer.encode(texts, context_length)  # (N, L)
        self.tokens_mirrored = tokenizer.encode([swap_sides(t) for t in texts], context_length) if transform.hflip else self.tokens
        self.labels = np.asarray([self.labels_of[self.samples[si].person_id] for si, _ in pairs], dtype=np.int64)
        self.person_ids = np.asarray([self.samples[si].person_id for si, _ in pairs], dtype=np.int64)
        self.pair_image = np.asarray([self.image_index_of[self.samples[si].image_path] for si, _ in pairs], dtype=np.int64)
        self.images = decode_images(paths, transform.size, workers=workers, progress=progress) if in_memory else None  # (I, 3, H, W)

    def batch(self, keys: Sequence[Any]) -> dict[str, Any]:
        """A collated, augmented batch from the in-memory images (keys as for ``__getitem__``)."""
        if self.images is None:
            raise RuntimeError("batch() needs in_memory=True")
        split = [_split_key(k) for k in keys]
        idx = np.asarray([i for i, _ in split], dtype=np.int64)  # (B,)
        imgs = self.images[torch.from_numpy(self.pair_image[idx])]  # (B, 3, H, W) uint8
        tf = self.transform
        if not tf.train:  # evaluation mode: no augmentation at all
            tf = dataclasses.replace(tf, hflip=False, pad=0, color_jitter=0.0, erase_prob=0.0)
        rngs = [np.random.default_rng([self.seed, epoch, i]) for i, epoch in split]
        images, flipped = augment_batch(imgs, rngs, tf)  # (B, 3, H, W), (B,)
        if self.text_augmented:
            tokens = self.tokenizer.encode(
                [self._caption(i, epoch, bool(f)) for (i, epoch), f in zip(split, flipped, strict=False)], self.context_length
            )  # (B, L)
        else:
            tokens = torch.where(torch.from_numpy(flipped)[:, None], self.tokens_mirrored[idx], self.tokens[idx])
        t = torch.from_numpy
        return {"image": images, "tokens": tokens, "label": t(self.labels[idx]), "person_id": t(self.person_ids[idx]),
                "image_index": t(self.pair_image[idx]), "index": t(idx)}

    @property
    def text_augmented(self) -> bool:
        """Whether captions change per epoch (sentence drop/shuffle): then they are tokenized per batch."""
        return self.transform.train and (self.sentence_drop > 0 or self.sentence_shuffle)

    def _caption(self, i: int, epoch: int, mirrored: bool) -> str:
        """Pair i's caption at this epoch: sentences dropped/shuffled by its own random stream."""
        rng = np.random.default_rng([self.seed, epoch, i, 1])  # apart from the image's stream [seed, epoch, i]
        text = augment_caption(self.texts[i], rng, self.sentence_drop, self.sentence_shuffle, self.sentence_keep_first)
        return swap_sides(text) if mirrored else text

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
        tf = self.transform
        mirrored = False
        if tf.train and tf.hflip:  # draw the flip here (ImageTransform's first draw) to pick the matching caption
            mirrored = bool(rng.random() < 0.5)
            rng = np.random.default_rng([self.seed, epoch, i])
        image = tf(load_image(s.image_path), rng if tf.train else None)
        return {
            "image": image,
            "tokens": (self.tokenizer.encode([self._caption(i, epoch, mirrored)], self.context_length)[0]
                       if self.text_augmented else self.tokens_mirrored[i] if mirrored else self.tokens[i]),
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


def unique_images(samples: Sequence[Sample]) -> list[Sample]:
    """One sample per image, in order of first appearance: the gallery of an evaluation split."""
    first: dict[Any, Sample] = {}
    for s in samples:
        first.setdefault(s.image_path, s)
    return list(first.values())


class GalleryImages(Dataset):
    """The unique images of the given samples (first occurrence order). Item: image, index."""

    def __init__(self, samples: Sequence[Sample], transform: ImageTransform) -> None:
        self.samples = unique_images(samples)
        self.transform = transform
        self.person_ids = np.asarray([s.person_id for s in self.samples], dtype=np.int64)  # (G,)
        self.index_of = {s.image_path: i for i, s in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.transform(load_image(self.samples[i].image_path)), "index": i}


def queries_of(samples: Sequence[Sample], index_of: dict[Any, int]) -> list[Query]:
    """Every caption of ``samples`` as a query, in evaluation order, with its merged tags."""
    out: list[Query] = []
    for s in samples:
        gi = index_of[s.image_path]
        for text, tags in zip(s.captions, s.caption_tags, strict=True):
            merged = {**s.image_tags, **tags, "words": word_count_bucket(text)}
            out.append(Query(text, s.person_id, gi, merged))
    return out


def evaluation_keys(samples: Sequence[Sample]) -> tuple[list[str], list[str]]:
    """(query keys, gallery keys) in the order evaluation encodes them.

    A query is ``FILE_PATH#N`` (the record's ``file_path`` as written in the annotation file, and
    the caption's index in that record); a gallery item is ``FILE_PATH`` (each image once, in
    order of first appearance). Scores computed elsewhere are matched to the dataset by these.
    """
    return [f"{s.file_path}#{n}" for s in samples for n in range(len(s.captions))], [s.file_path for s in unique_images(samples)]


class QueryTexts(Dataset):
    """Every caption of the given samples as a query, tokenized once. Item: tokens, index.

    Each query's tags merge the image's tags (``source``), the caption's own tags
    (``granularity``, ``style``, ...) and ``words``: the word-count bucket, for breakdowns of
    untagged data.
    """

    def __init__(self, samples: Sequence[Sample], gallery: GalleryImages, tokenizer: TextTokenizer, context_length: int = 77) -> None:
        self.queries = queries_of(samples, gallery.index_of)
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
