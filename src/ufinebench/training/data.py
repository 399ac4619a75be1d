"""The data part of a training run: annotations, tokenizer, attribute vocabulary, pairs, sampler, validation set."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from ufinebench.config import Config, ConfigError, DataConfig
from ufinebench.data.annotations import Sample, check_split, load_dataset
from ufinebench.data.datasets import TrainPairs, collate
from ufinebench.data.samplers import DistributedBatchSampler, caption_neighbours
from ufinebench.data.tokenizer import ClipTokenizer, TrainedBPETokenizer, TrainedWordTokenizer
from ufinebench.data.transforms import ImageTransform
from ufinebench.errors import UFineBenchError
from ufinebench.vocab import AttributeVocabulary, dataset_vocabulary, load_vocabulary
from ufinebench.vocab.tokens import AttributeTable, PhraseWords, shorten, single_token_id


@dataclass
class TrainData:
    """What the data part of a run gives the rest: tokenizer, pairs, sampler, validation set, vocabulary."""

    tokenizer: Any
    dataset: TrainPairs
    sampler: DistributedBatchSampler
    val_samples: list[Sample]
    steps_per_epoch: int
    vocabulary: AttributeVocabulary | None  # None: the dataset ships none and none was given (no attribute options)

    @cached_property
    def attribute_table(self) -> AttributeTable | None:
        """Attribute words of the tokenizer for ``data.attribute_swap`` / ``attribute_words`` (None: no vocabulary,
        or the tokenizer reads no two words of one class as single tokens)."""
        return None if self.vocabulary is None else AttributeTable.build(self.vocabulary, self.tokenizer)

    @cached_property
    def phrase_words(self) -> PhraseWords:
        """Colour, garment and shape-word token ids for ``data.modifier_order``."""
        assert self.vocabulary is not None  # checked when the data was set up
        return PhraseWords.build(self.vocabulary, self.tokenizer)

    @cached_property
    def val_with_shortened(self) -> list[Sample]:
        """The val samples with a shortened copy of every caption (:func:`with_shortened_captions`), made once
        per run; val as it is without a vocabulary (shortening drops the vocabulary's named words)."""
        return self.val_samples if self.vocabulary is None else with_shortened_captions(self.val_samples, self.vocabulary)

    @cached_property
    def sentence_end(self) -> int | None:
        """The token id of "." (where a caption sentence ends), or None if the tokenizer splits it."""
        return single_token_id(self.tokenizer, ".")


def with_shortened_captions(samples: list[Sample], vocab: AttributeVocabulary, seed: int = 0) -> list[Sample]:
    """``samples`` with a shortened copy of every caption beside it (:func:`~ufinebench.vocab.tokens.shorten`,
    tagged ``shortened``; a hash of (seed, record, caption), the same every validation).

    Validation chooses the re-ranking blend on both: val's own captions name every detail, and on
    them the dual encoder already finds every val person first, so they cannot show what the
    matcher or the attribute check adds for a description that leaves details out.
    """
    out = []
    for s in samples:
        short = tuple(shorten(c, random.Random(f"{seed}:{s.index}:{j}"), vocab) for j, c in enumerate(s.captions))
        out.append(dataclasses.replace(s, captions=s.captions + short,
                                       caption_tags=s.caption_tags + tuple({**t, "shortened": True} for t in s.caption_tags)))
    return out


def held_out_identities(samples: list[Sample], n: int) -> set[int]:
    """``n`` training identities set aside for validation: the same ones for every seed and run.

    Drawn by a fixed generator from the sorted ids, so runs with different training seeds are
    validated (and their best epoch chosen) on the same people.
    """
    if n <= 0:
        return set()
    ids = sorted({s.person_id for s in samples})
    if n >= len(ids):
        raise UFineBenchError(f"data.val_identities {n}: the training split has only {len(ids)} identities")
    order = np.random.default_rng(20240601).permutation(len(ids))
    return {ids[i] for i in order[:n]}


def needs_vocabulary(cfg: Config) -> bool:
    """Whether a run's options read attribute words (and so need an attribute vocabulary)."""
    d = cfg.data
    return bool(d.attribute_swap or d.attribute_words or d.match_attribute_drop > 0 or d.modifier_order > 0
                or cfg.train.match_negatives != "any")


def resolve_vocabulary(d: DataConfig, annotation_file: Any) -> AttributeVocabulary | None:
    """``data.vocabulary`` (a file or a built-in name), else the one the dataset ships beside its annotation, else None."""
    if d.vocabulary:
        return load_vocabulary(d.vocabulary)
    shipped = dataset_vocabulary(annotation_file)
    return load_vocabulary(shipped) if shipped is not None else None


def _tokenizer(d: DataConfig, train_samples: list[Sample]) -> Any:
    """CLIP's tokenizer, or one learnt from the training captions (``data.tokenizer``: bpe | word)."""
    if d.tokenizer == "clip":
        return ClipTokenizer()
    learnt = TrainedBPETokenizer if d.tokenizer == "bpe" else TrainedWordTokenizer
    return learnt.train((c for s in train_samples for c in s.captions), vocab_size=d.bpe_vocab_size)


def setup_data(cfg: Config, tokenizer: Any, vocabulary: AttributeVocabulary | None, rank: int, world: int, progress: bool, *,
               resumed: bool = False) -> TrainData:
    """Parse the annotations, train (or reuse) the tokenizer, find the vocabulary, build the pairs and the sampler.

    ``tokenizer`` / ``vocabulary``: a ``resumed`` run's own (kept as they are, a vocabulary of None
    too); for a new run the tokenizer is learnt and the vocabulary found (:func:`resolve_vocabulary`).
    Training pairs live in memory (decoded once) when they fit ``data.in_memory_mb``; else they
    are decoded per item by DataLoader workers, as for large real datasets.
    """
    t, d, m = cfg.train, cfg.data, cfg.model
    ann = load_dataset(d.dataset, d.format, split=d.train_split)
    split_samples = ann.split(d.train_split)
    held = held_out_identities(split_samples, d.val_identities)
    train_samples = [s for s in split_samples if s.person_id not in held]  # validation people never reach training (nor the tokenizer)
    tokenizer = tokenizer if resumed else _tokenizer(d, train_samples)
    vocabulary = vocabulary if resumed else resolve_vocabulary(d, ann.path)
    transform = ImageTransform(size=(m.image_size[0], m.image_size[1]), train=True, hflip=d.hflip, pad=d.pad, color_jitter=d.color_jitter,
                               erase_prob=d.erase_prob, camera=d.camera)
    n_images = len({s.image_path for s in train_samples})
    in_memory = n_images * 3 * m.image_size[0] * m.image_size[1] <= d.in_memory_mb * 2**20
    dataset = TrainPairs(train_samples, tokenizer, transform, context_length=m.context_length, seed=t.seed, in_memory=in_memory,
                         workers=max(1, d.workers), progress=progress and rank == 0,
                         sentence_drop=d.sentence_drop, sentence_shuffle=d.sentence_shuffle,
                         sentence_keep_first=d.sentence_keep_first)
    neighbours = None
    if d.sampler == "neighbours":  # from the training captions alone: who reads alike
        texts: dict[int, list[str]] = {}
        for s in train_samples:
            texts.setdefault(int(dataset.labels_of[s.person_id]), []).extend(s.captions)
        neighbours = caption_neighbours(texts, k=4 * d.neighbour_group)
    sampler = DistributedBatchSampler(
        len(dataset), t.batch_size, strategy=d.sampler, labels=dataset.labels.tolist(), num_instances=d.num_instances,
        neighbours=neighbours, group_size=d.neighbour_group, neighbours_from=d.neighbours_from,
        seed=t.seed, rank=rank, world_size=world, drop_last=True,
    )
    if len(sampler) == 0:
        raise UFineBenchError(f"train.batch_size {t.batch_size} is larger than the {len(dataset)} training pairs")
    val_samples: list[Sample] = []
    if d.val_split and t.eval_every > 0 and rank == 0:
        check_split(ann, d.val_split)  # the file is already parsed: no second read
        val_samples = ann.split(d.val_split)
    elif held and t.eval_every > 0 and rank == 0:
        val_samples = [s for s in split_samples if s.person_id in held]
    if t.eval_limit > 0:
        val_samples = val_samples[: t.eval_limit]
    steps = len(sampler) if t.max_steps_per_epoch <= 0 else min(len(sampler), t.max_steps_per_epoch)
    out = TrainData(tokenizer, dataset, sampler, val_samples, steps, vocabulary)
    _check_data(cfg, out)
    return out


def _check_data(cfg: Config, data: TrainData) -> None:
    """Options the tokenizer or the vocabulary cannot serve: a one-line config error before any step."""
    d = cfg.data
    if d.match_sentence_drop > 0 and data.sentence_end is None:
        raise ConfigError("data.match_sentence_drop: the tokenizer has no single token for '.', so sentences cannot be told apart")
    if not needs_vocabulary(cfg):
        return
    options = "data.attribute_swap / attribute_words / match_attribute_drop / modifier_order, train.match_negatives"
    if data.vocabulary is None:
        raise ConfigError(f"{options} read attribute words, and the dataset ships no attribute vocabulary (vocabulary.json beside "
                          f"its annotation file): give data.vocabulary=FILE.json (see ufinebench.vocab) or a built-in name (ufine-synth-1)")
    if data.attribute_table is None:
        raise ConfigError(f"{options}: the tokenizer reads no two attribute words of one class of vocabulary "
                          f"{data.vocabulary.name!r} as single tokens")


def epoch_batches(data: TrainData, epoch: int, workers: int) -> Iterator[dict[str, Any]]:
    """The epoch's batches: built from memory, or loaded by DataLoader workers (streaming)."""
    data.sampler.set_epoch(epoch)
    if data.dataset.images is not None:
        for keys in data.sampler:
            yield data.dataset.batch(keys)
        return
    yield from DataLoader(data.dataset, batch_sampler=data.sampler, num_workers=workers, collate_fn=collate, persistent_workers=False)
