"""Training: one process or many under ``torchrun`` (gloo on CPU, nccl on GPU).

N processes see exactly the batches one process would (``DistributedBatchSampler``); losses
that need the whole batch gather it (``ufinebench.losses``): global SDM, granularity SDM, the
matcher's hard negatives and the MLM token count. So with the same global batch size, N
processes reach the same weights as one, up to float rounding (tests/test_train.py checks 2
processes on the CPU).

Each epoch ends with an atomic checkpoint (weights, config, tokenizer, optimizer, scheduler,
RNG states), optional validation with the metrics engine, a best checkpoint by a chosen metric,
JSONL log lines and TensorBoard events (when tensorboard is installed). ``resume`` continues a
killed run from its last checkpoint to the same weights an uninterrupted run reaches (exactly,
on the CPU): data order, augmentation and negatives are functions of (seed, epoch, step).

On the CPU a run is also bit-identical to a rerun at the same thread count: training runs under
``torch.use_deterministic_algorithms`` (``deterministic_cpu``), because the backward of advanced
indexing with repeated indices (``x[idx]``: hard negatives, pooling) accumulates with atomic adds
across threads in a varying order otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ufinebench.config import Config, ConfigError, dump_config, load_config
from ufinebench.data.annotations import check_split, load_dataset
from ufinebench.data.datasets import TrainPairs, collate
from ufinebench.data.lexicon import N_ATTRIBUTE_GROUPS, N_ATTRIBUTE_PAIRS
from ufinebench.data.samplers import DistributedBatchSampler
from ufinebench.data.tokenizer import ClipTokenizer, TrainedBPETokenizer, TrainedWordTokenizer, tokenizer_from_state
from ufinebench.data.transforms import ImageTransform
from ufinebench.errors import UFineBenchError
from ufinebench.losses import DistContext, compute_losses
from ufinebench.model.cfam import RetrievalModel
from ufinebench.model.checkpoint import load_weights, read_meta, resolve_checkpoint, save_checkpoint

NO_DECAY_NAMES = ("bias", "positional_embedding", "class_embedding", "logit_scale", "queries", "token_embedding")


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up from 0, then cosine decay to ``min_ratio``: a pure function of the step."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float, multipliers: dict[str, float]) -> list[dict[str, Any]]:
    """AdamW groups: decay or not (biases, norms, embeddings, queries: no), times per-prefix lr multipliers."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = 1.0
        for prefix, m in sorted(multipliers.items(), key=lambda kv: -len(kv[0])):
            if name.startswith(prefix):
                mult = m
                break
        decay = 0.0 if (p.ndim < 2 or any(n in name for n in NO_DECAY_NAMES)) else weight_decay
        groups.setdefault((mult, decay), []).append(p)
    return [{"params": ps, "lr": lr * m, "weight_decay": wd, "lr_mult": m} for (m, wd), ps in groups.items()]


class _Logger:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.fh = open(run_dir / "log.jsonl", "a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled or self.fh is None:
            return
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)

    def close(self) -> None:
        if self.fh:
            self.fh.close()
        if self.tb is not None:
            self.tb.close()


def mlm_mask(
    tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, mask_id: int, vocab: int, specials: set[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """IRRA-style masking (15 %: 80 % mask token, 10 % random, 10 % kept), seeded per item.

    tokens (B, L), index (B,) -> masked tokens (B, L), labels (B, L) (-100: not predicted). Each
    row's draws come from a generator seeded by (seed, epoch, item), so a pair is masked alike in
    any batch, process or resumed run; the work is vectorised over the row.
    """
    b, length = tokens.shape
    u = torch.empty(b, length)  # (B, L) uniforms deciding which tokens are predicted and how
    rand_ids = torch.empty(b, length, dtype=torch.long)
    for r in range(b):
        g = torch.Generator().manual_seed(seed * 7919 + epoch * 104729 + int(index[r]))
        u[r] = torch.rand(length, generator=g)
        rand_ids[r] = torch.randint(0, vocab, (length,), generator=g)
    special = torch.zeros_like(tokens, dtype=torch.bool)
    for sp in specials:
        special |= tokens == sp
    chosen = (u < 0.15) & ~special
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    v = u / 0.15
    masked = torch.where(chosen & (v < 0.8), torch.full_like(tokens, mask_id), tokens)
    masked = torch.where(chosen & (v >= 0.8) & (v < 0.9), rand_ids, masked)
    return masked, labels


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash of int64 values (xor-shift-multiply rounds; products stay in int64)."""
    m = 0xFFFFFFFF
    h = x & m
    for _ in range(3):
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & m
    return h ^ (h >> 16)


def _pair_hash(index: torch.Tensor, epoch: int, seed: int, salt: int) -> torch.Tensor:
    """(B,) pair indices -> (B,) 32-bit hashes of (seed, epoch, pair, salt)."""
    return _hash32(index.long() * 0x9E3779B1 + seed * 0x85EBCA6B + epoch * 0xC2B2AE35 + salt * 0x27D4EB2F)


def position_offsets(index: torch.Tensor, epoch: int, seed: int, jitter: int) -> torch.Tensor:
    """Each pair's text start position for the position jitter: (B,) ints in [0, jitter].

    A hash of (seed, epoch, pair index), vectorised, so a pair gets the same offset in any batch,
    process or resumed run (as ``mlm_mask``'s draws and the image augmentation).
    """
    return _pair_hash(index, epoch, seed, 1) % (jitter + 1)


def _words(tokens: torch.Tensor, specials: set[int]) -> torch.Tensor:
    """(B, L) ids -> (B, L) bool: True where a caption word stands (not a start, end or padding token)."""
    words = torch.ones_like(tokens, dtype=torch.bool)
    for sp in specials:
        words &= tokens != sp
    return words


def token_noise(
    tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, *, drop: float, unk: float, unk_id: int | None, specials: set[int],
    pad_id: int = 0, salt: int = 2, shuffle: int = 0, sentence_drop: float = 0.0, sentence_end: int | None = None,
) -> torch.Tensor:
    """Word-level caption noise: each word dropped with probability ``drop`` or replaced by the
    unknown token with probability ``unk`` (never the start/end/padding tokens), and with
    ``shuffle`` = k > 0 the remaining words locally shuffled: each moves at most k places (sorted
    by position + a uniform draw in [0, k + 1), the local shuffle of Lample et al., 2018).

    tokens (B, L) -> (B, L): dropped words close up, padding refills the end. Teaches the text
    encoder that a description still matches with words missing or unknown (terse notes, free
    text with words the vocabulary lacks). Per-pair draws hash (seed, epoch, pair, position), as
    ``position_offsets``; ``salt`` tells independent views of one caption apart.

    ``sentence_drop`` > 0 drops each sentence (words up to and including the ``sentence_end``
    token, e.g. ".") with that probability, one draw per pair and sentence, the first sentence
    too (a caption that would lose all keeps its first): a shorter description with whole details
    missing ("no word about the shoes"), which the matcher must still accept as a match, made from
    the training caption alone. Keeping the first sentence always (who: gender, age, hair) taught
    the matcher to lean on it, and descriptions without it (3C's coarse ones) then lost (docs/training.md).
    """
    b, length = tokens.shape
    pos = torch.arange(length)[None, :]  # (1, L)
    u = _hash32(_pair_hash(index, epoch, seed, salt)[:, None] * 0x1000193 + pos).double() / 2**32  # (B, L) in [0, 1)
    content = _words(tokens, specials)  # (B, L)
    dropped = content & (u < drop)
    if sentence_drop > 0 and sentence_end is not None:
        ends = (tokens == sentence_end).long()  # (B, L)
        sentence = torch.cumsum(ends, dim=1) - ends  # (B, L): 0 for the first sentence, its "." included
        w = _hash32(_pair_hash(index, epoch, seed, salt + 200)[:, None] * 0x1000193 + sentence).double() / 2**32  # (B, L), one per sentence
        cut = content & (w < sentence_drop)  # (B, L): any sentence, the first too (no detail is always there)
        emptied = ~(content & ~cut).any(dim=1, keepdim=True)  # (B, 1): rows that would lose every sentence keep their first
        dropped = dropped | (cut & ~(emptied & (sentence == 0)))
    out = tokens
    if unk_id is not None and unk > 0:
        out = torch.where(content & ~dropped & (u < drop + unk), torch.full_like(tokens, unk_id), out)
    if drop > 0 or sentence_drop > 0:
        order = torch.sort(dropped.to(torch.int8), dim=1, stable=True).indices  # kept words first, in order
        out = torch.gather(torch.where(dropped, torch.full_like(out, pad_id), out), 1, order)  # the dropped become padding at the end
    if shuffle > 0:
        content = _words(out, specials)  # (B, L): where the words are after dropping
        v = _hash32(_pair_hash(index, epoch, seed, salt + 100)[:, None] * 0x1000193 + pos).double() / 2**32  # (B, L), another stream
        # content words: position + U[0, k + 1); the start token before them, end and padding after, in order
        key = torch.where(content, pos + v * (shuffle + 1), torch.where(pos == 0, -1.0, length + pos.double()))  # (B, L)
        out = torch.gather(out, 1, torch.sort(key, dim=1, stable=True).indices)
    return out


def single_token_id(tokenizer: Any, word: str) -> int | None:
    """The id of ``word`` when the tokenizer reads it as one known token, else None (split or unknown)."""
    ids = tokenizer.text_ids(word)
    return ids[0] if len(ids) == 1 and ids[0] != getattr(tokenizer, "unk_id", None) else None


@dataclass(frozen=True)
class AttributeTable:
    """Token ids of the attribute words (``lexicon.ATTRIBUTE_CLASSES``): class and synonym group of each.

    ``cls``, ``group``: (V,) long, -1 for tokens that are no attribute word (``cls`` counts only
    classes with two groups the tokenizer knows, ``group`` every group of the lexicon);
    ``members``: (C, M) long token ids of each such class, padded with -1; ``member_group``: (C, M)
    their groups; ``group_class``: (G,) the lexicon's class of every group; ``group_named``: (G,)
    bool, the group's class is one a fine caption always names (``lexicon.NAMED_CLASSES``);
    ``colour`` / ``slot`` / ``phrase``: (V,) each token's colour group (-1: none), slot
    (``lexicon.ATTRIBUTE_SLOTS``, -1: none) and whether it may stand inside a noun phrase, for
    :func:`attribute_pairs`. For :func:`attribute_swap`, :func:`attribute_targets`,
    :func:`attribute_drop` and :func:`named_groups`.
    """

    cls: torch.Tensor
    group: torch.Tensor
    members: torch.Tensor
    member_group: torch.Tensor
    group_class: torch.Tensor
    group_named: torch.Tensor
    colour: torch.Tensor
    slot: torch.Tensor
    phrase: torch.Tensor

    @classmethod
    def build(cls, tokenizer: Any, vocab_size: int) -> AttributeTable | None:
        """The table for a tokenizer: attribute words it reads as one known token; None if no class has two."""
        from ufinebench.data.lexicon import ATTRIBUTE_CLASSES, NAMED_CLASSES, PAIR_COLOUR_ALIASES, PAIR_PHRASE_WORDS, SLOT_NOUNS

        classes: list[list[tuple[int, int]]] = []  # per class: (token id, group)
        gid = 0
        group_class = [c for c, groups in enumerate(ATTRIBUTE_CLASSES.values()) for _ in groups]
        for groups in ATTRIBUTE_CLASSES.values():
            found: list[tuple[int, int]] = []
            for words in groups:
                ids = [i for i in (single_token_id(tokenizer, w) for w in words) if i is not None]
                found += [(i, gid) for i in dict.fromkeys(ids)]
                gid += 1
            if len({g for _, g in found}) >= 2:
                classes.append(found)
        if not classes:
            return None
        m = max(len(c) for c in classes)
        cls_of = torch.full((vocab_size,), -1, dtype=torch.long)
        group_of = torch.full((vocab_size,), -1, dtype=torch.long)
        members = torch.full((len(classes), m), -1, dtype=torch.long)
        member_group = torch.full((len(classes), m), -1, dtype=torch.long)
        for c, found in enumerate(classes):
            for j, (i, g) in enumerate(found):
                cls_of[i], group_of[i], members[c, j], member_group[c, j] = c, g, i, g
        named = torch.tensor([name in NAMED_CLASSES for name, groups in ATTRIBUTE_CLASSES.items() for _ in groups])
        colour_of = torch.full((vocab_size,), -1, dtype=torch.long)
        slot_of = torch.full((vocab_size,), -1, dtype=torch.long)
        phrase = torch.zeros(vocab_size, dtype=torch.bool)
        colours = {w: c for c, words in enumerate(ATTRIBUTE_CLASSES["colour"]) for w in words}
        colours.update({alias: colours[target] for alias, target in PAIR_COLOUR_ALIASES.items()})

        def mark(table: torch.Tensor, word: str, value: int | bool) -> None:
            i = single_token_id(tokenizer, word)
            if i is not None and i < vocab_size:
                table[i] = value

        for w, c in colours.items():
            mark(colour_of, w, c)
        for s, nouns in enumerate(SLOT_NOUNS.values()):
            for w in nouns:
                mark(slot_of, w, s)
        for w in PAIR_PHRASE_WORDS:
            mark(phrase, w, True)
        return cls(cls_of, group_of, members, member_group, torch.tensor(group_class, dtype=torch.long), named, colour_of, slot_of, phrase)

    def named_group(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L) long: each token's group when it is a word of a named class, else -1."""
        g = self.group[tokens.clamp(0, self.group.shape[0] - 1)]  # (B, L)
        return torch.where((g >= 0) & self.group_named[g.clamp_min(0)], g, -1)


def _multi_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    """(B, L) long in [-1, n) -> (B, n) float: 1 where some position of the row holds that index (-1: nothing)."""
    return torch.zeros(index.shape[0], n + 1).scatter_(1, index + 1, 1.0)[:, 1:]


def attribute_targets(tokens: torch.Tensor, table: AttributeTable, pairs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Which attribute groups each caption names, for the image's word head (``data.attribute_words``).

    tokens (B, L) -> (target (B, G) float: 1 where the caption has a word of the group; known (B, G)
    bool: the caption names some group of that group's class, so the others of the class are taken
    as absent; classes it never mentions say nothing). From the caption's words alone. With
    ``pairs`` (``data.attribute_pairs``) both are (B, G + P): then the colour-garment pairs
    (:func:`attribute_pairs`), known for every colour of a slot the caption gives a colour to.
    """
    if pairs:
        from ufinebench.data.lexicon import ATTRIBUTE_SLOTS

        target, known = attribute_targets(tokens, table)
        p = attribute_pairs(tokens, table)  # (B, P)
        slots = p.view(p.shape[0], -1, len(ATTRIBUTE_SLOTS)).any(1, keepdim=True)  # (B, 1, S): slots given a colour
        known_p = slots.expand(-1, p.shape[1] // len(ATTRIBUTE_SLOTS), -1).reshape(p.shape)  # (B, P)
        return torch.cat([target, p.float()], 1), torch.cat([known, known_p], 1)
    g = table.group[tokens.clamp(0, table.group.shape[0] - 1)]  # (B, L), -1 where no attribute word
    n_groups = table.group_class.shape[0]
    target = _multi_hot(g, n_groups)  # (B, G)
    n_cls = int(table.group_class.max()) + 1
    named = _multi_hot(torch.where(g >= 0, table.group_class[g.clamp_min(0)], -1), n_cls)  # (B, C)
    return target, named[:, table.group_class] > 0


def attribute_pairs(tokens: torch.Tensor, table: AttributeTable) -> torch.Tensor:
    """(B, L) ids -> (B, P) bool: the colour-garment pairs each caption names (``data.attribute_pairs``).

    A phrase is a run of words that may stand in a noun phrase (``lexicon.PAIR_PHRASE_WORDS``: "a
    grey long - sleeved hooded sweatshirt"); every colour word in it pairs with the slot of its last
    garment noun ("sweatshirt": top). Pair index = colour group x len(ATTRIBUTE_SLOTS) + slot.
    "White sneakers with red soles" names white x shoes only: "with" ends the phrase.
    """
    from ufinebench.data.lexicon import ATTRIBUTE_SLOTS, N_ATTRIBUTE_PAIRS

    b, n = tokens.shape
    t = tokens.clamp(0, table.phrase.shape[0] - 1)
    inside = table.phrase[t]  # (B, L)
    run = torch.cumsum((~inside).long(), 1)  # (B, L) in [0, L]: the words of one phrase share it
    slot = table.slot[t]  # (B, L)
    pos = torch.arange(n).expand(b, n)
    last = torch.full((b, n + 1), -1, dtype=torch.long).scatter_reduce(1, run, torch.where(slot >= 0, pos, -1), "amax")  # (B, L + 1)
    head = last.gather(1, run)  # (B, L): the position of the phrase's last garment noun, -1 if none
    head_slot = torch.where(head >= 0, slot.gather(1, head.clamp_min(0)), -1)  # (B, L)
    colour = table.colour[t]  # (B, L)
    pair = torch.where(inside & (colour >= 0) & (head_slot >= 0), colour * len(ATTRIBUTE_SLOTS) + head_slot, -1)  # (B, L)
    return _multi_hot(pair, N_ATTRIBUTE_PAIRS) > 0


def head_has_pairs(model: Any) -> bool:
    """Whether a model's word head was trained with ``data.attribute_pairs`` (it has the pairs' outputs)."""
    return int(getattr(model.cfg, "attribute_words", 0)) > N_ATTRIBUTE_GROUPS


def named_groups(tokens: torch.Tensor, table: AttributeTable, pairs: bool = False) -> torch.Tensor:
    """(B, L) ids -> (B, G) bool: the groups of named classes (colours, garments, shoes, bags, headwear)
    each caption has a word of; with ``pairs`` (a word head trained with ``data.attribute_pairs``)
    (B, G + P): then the colour-garment pairs it names (:func:`attribute_pairs`)."""
    g = table.named_group(tokens)  # (B, L)
    out = _multi_hot(g, table.group_class.shape[0]) > 0
    return torch.cat([out, attribute_pairs(tokens, table)], 1) if pairs else out


def attribute_drop(tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, table: AttributeTable, p: float,
                   pad_id: int = 0) -> torch.Tensor:
    """Each word of a named class ("red", "boots", "backpack") dropped with probability ``p``.

    tokens (B, L) -> (B, L): the dropped words close up, padding refills the end; draws hash (seed,
    epoch, pair, position) as :func:`token_noise` does (salt 8: a stream of its own). What is left reads like a description with
    details missing ("navy denim jeans and sandals": the sandals' colour left out), which 3C's
    medium and coarse queries and people's own descriptions are; made from the training caption
    alone (``data.match_attribute_drop``, the matcher's view).
    """
    pos = torch.arange(tokens.shape[1])[None, :]  # (1, L)
    u = _hash32(_pair_hash(index, epoch, seed, 8)[:, None] * 0x1000193 + pos).double() / 2**32  # (B, L) in [0, 1)
    dropped = (table.named_group(tokens) >= 0) & (u < p)  # (B, L)
    order = torch.sort(dropped.to(torch.int8), dim=1, stable=True).indices  # kept words first, in order
    return torch.gather(torch.where(dropped, torch.full_like(tokens, pad_id), tokens), 1, order)


def attribute_swap(tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, table: AttributeTable) -> tuple[torch.Tensor, torch.Tensor]:
    """A caption that no longer fits its picture: one attribute word swapped for one of its class
    that means something else ("white sneakers" -> "white boots", "blue jeans" -> "red jeans").

    tokens (B, L) -> (swapped (B, L), ok (B,) bool: False for captions without an attribute word,
    which stay as they were). The word and its replacement are hashed from (seed, epoch, pair), as
    every other per-pair draw. Why: the batch's other captions differ from a caption in many
    words at once; a caption one word away teaches the matcher (and the dual encoder) to check
    every attribute, which partial and free descriptions need (docs/training.md).
    """
    b, length = tokens.shape
    cls = table.cls[tokens.clamp(0, table.cls.shape[0] - 1)]  # (B, L): class of each token, -1 if none
    cand = cls >= 0  # (B, L)
    ok = cand.any(dim=1)  # (B,)
    u = _hash32(_pair_hash(index, epoch, seed, 5)[:, None] * 0x1000193 + torch.arange(length)[None, :])  # (B, L)
    pos = torch.where(cand, u, torch.full_like(u, -1)).argmax(dim=1)  # (B,): a random attribute word of each caption
    word = tokens[torch.arange(b), pos]  # (B,)
    c = table.cls[word].clamp_min(0)  # (B,)
    mem, mem_g = table.members[c], table.member_group[c]  # (B, M)
    other = (mem >= 0) & (mem_g != table.group[word][:, None])  # (B, M): members meaning something else
    v = _hash32(_pair_hash(index, epoch, seed, 6)[:, None] * 0x1000193 + torch.arange(mem.shape[1])[None, :])  # (B, M)
    pick = torch.where(other, v, torch.full_like(v, -1)).argmax(dim=1)  # (B,)
    new = mem[torch.arange(b), pick]  # (B,)
    ok = ok & other.any(dim=1)
    out = tokens.clone()
    out[torch.arange(b)[ok], pos[ok]] = new[ok]
    return out, ok


@dataclass(frozen=True)
class PhraseWords:
    """Token ids of :data:`lexicon.PHRASE_*` for :func:`modifier_order` (words the tokenizer splits are left out)."""

    colours: frozenset[int]
    tones: frozenset[int]
    garments: frozenset[int]
    modifiers: frozenset[int]
    hyphen: int | None

    @classmethod
    def build(cls, tokenizer: Any) -> PhraseWords:
        from ufinebench.data import lexicon as lx

        def ids(words: tuple[str, ...]) -> frozenset[int]:
            return frozenset(i for i in (single_token_id(tokenizer, w) for w in words) if i is not None)

        return cls(ids(lx.PHRASE_COLOURS), ids(lx.PHRASE_TONES), ids(lx.PHRASE_GARMENTS), ids(lx.PHRASE_MODIFIERS),
                   single_token_id(tokenizer, "-"))


def modifier_order(tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, words: PhraseWords, p: float) -> torch.Tensor:
    """Move a colour across the shape words beside it within a noun phrase, with probability ``p``
    per phrase: "knee - length beige skirt" <-> "beige knee - length skirt", "grey long - sleeved
    sweater" <-> "long - sleeved grey sweater" (a "dark" / "light" before the colour moves with it).

    tokens (B, L) -> (B, L), same words, same length. The meaning stays; what changes is the order a
    caption generator always uses and a person often does not (a colour that does not stand next to
    its garment was read as another garment's: docs/training.md). Draws hash (seed, epoch, pair, position).
    """
    u = _hash32(_pair_hash(index, epoch, seed, 7)[:, None] * 0x1000193 + torch.arange(tokens.shape[1])[None, :]).double() / 2**32
    out = tokens.clone()
    rows = tokens.tolist()
    draw = (u < p).tolist()  # (B, L): whether the phrase ending at each garment is reordered
    for b, row in enumerate(rows):
        changed = False
        for g, tok in enumerate(row):
            if tok not in words.garments or not draw[b][g]:
                continue
            j = g - 1
            while j >= 0 and row[j] in words.modifiers:
                j -= 1
            mods = row[j + 1 : g]  # shape words right before the garment
            if mods and (mods[0] == words.hyphen or mods[-1] == words.hyphen):
                continue  # "t - shirt" and the like: not a shape word span
            if mods:  # colour, shape words, garment -> shape words, colour, garment
                if j < 0 or row[j] not in words.colours:
                    continue
                c0 = j - 1 if j >= 1 and row[j - 1] in words.tones else j
                row[c0:g] = mods + row[c0 : j + 1]
            else:  # shape words, colour, garment -> colour, shape words, garment
                if g < 1 or row[g - 1] not in words.colours:
                    continue
                c0 = g - 2 if g >= 2 and row[g - 2] in words.tones else g - 1
                k = c0 - 1
                while k >= 0 and row[k] in words.modifiers:
                    k -= 1
                mods = row[k + 1 : c0]
                if not mods or mods[0] == words.hyphen or mods[-1] == words.hyphen:
                    continue
                row[k + 1 : g] = row[c0:g] + mods
            changed = True
        if changed:
            out[b] = torch.tensor(row, dtype=tokens.dtype)
    return out


TRAIN_ENTRIES = ("checkpoints", "log.jsonl", "tensorboard", "config.yaml")


def train(cfg: Config | None = None, *, resume: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Train a model; returns the run folder. With ``resume``, continue that run instead.

    The run folder is the trainer's own output: a folder written by something else is refused,
    one holding the dataset or the initial weights too, and a second trainer on it is locked out.
    """
    from ufinebench.outputs import add_entries, check_outputs, claim_dir, output_lock

    if resume is None and cfg is None:
        raise ConfigError("no config given")
    run_dir = Path(resume) if resume is not None else Path(cfg.train.out_dir)  # type: ignore[union-attr]
    if _dist_info()[1] != 0:
        return _train(cfg, resume=resume, progress=progress)
    if resume is None:
        assert cfg is not None
        check_outputs({"train.out_dir": run_dir}, [cfg.data.dataset, cfg.train.init_from or None], folders=["train.out_dir"])
    with output_lock(run_dir):
        claim_dir(run_dir, "train", legacy=(("checkpoints/last", "log.jsonl", "config.yaml"), TRAIN_ENTRIES))
        if resume is None:
            if not (run_dir / "checkpoints").exists():
                add_entries(run_dir, "train", TRAIN_ENTRIES)
        return _train(cfg, resume=resume, progress=progress)


@contextmanager
def deterministic_cpu(enabled: bool = True) -> Iterator[None]:
    """Within this block, PyTorch picks deterministic kernels; the previous setting comes back after.

    Why: on the CPU, the backward of ``x[idx]`` with repeated indices (``index_put_`` with
    accumulation) adds rows with atomic adds from several threads, so two runs at the same thread
    count differed from the first steps (demo: loss 30.327993 vs 30.328022 at step 20, R1 66.3 vs
    63.0 after 12 epochs). The deterministic kernel sorts the indices first; its cost was within
    the noise of the demo's step time (docs/reliability.md). Only used on the CPU: on CUDA some ops
    (e.g. ``cumsum``) have no deterministic kernel and bit-identity is not claimed there.
    """
    before, warn_before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)


def cpu_amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype ``train.amp`` gives on the CPU: bf16 where the CPU computes it natively
    (AVX512-BF16 or AMX: oneDNN's convolutions and matrix products then run ~2x faster), else
    None (float32: emulated bf16 would be slower than float32). fp16 is CUDA-only."""
    if amp != "bf16":
        return None
    try:  # a private PyTorch check (no public one exists); a build without it counts as "no native bf16"
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return torch.bfloat16 if native else None


@dataclass
class _Data:
    """What the data part of a run gives the rest: tokenizer, pairs, sampler, validation set."""

    tokenizer: Any
    dataset: TrainPairs
    sampler: DistributedBatchSampler
    val_samples: list[Any]
    steps_per_epoch: int

    @cached_property
    def attribute_table(self) -> AttributeTable | None:
        """Attribute words of the tokenizer for ``data.attribute_swap`` / ``attribute_words`` (None: it reads none as one token)."""
        return AttributeTable.build(self.tokenizer, self.tokenizer.vocab_size)

    @cached_property
    def phrase_words(self) -> PhraseWords:
        """Colour, garment and shape-word token ids for ``data.modifier_order``."""
        return PhraseWords.build(self.tokenizer)

    @cached_property
    def val_with_shortened(self) -> list[Any]:
        """The val samples with a shortened copy of every caption (:func:`with_shortened_captions`), made once per run."""
        return with_shortened_captions(self.val_samples)

    @cached_property
    def sentence_end(self) -> int | None:
        """The token id of "." (where a caption sentence ends), or None if the tokenizer splits it."""
        return single_token_id(self.tokenizer, ".")


@dataclass
class _State:
    """The model part of a run: model (and its DDP wrapper), optimizer, schedule, counters."""

    model: RetrievalModel
    ddp: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    amp_dtype: Any
    device: torch.device
    epoch: int = 0
    global_step: int = 0
    best_value: float = -math.inf


def with_shortened_captions(samples: list[Any], seed: int = 0) -> list[Any]:
    """``samples`` with a shortened copy of every caption beside it (``lexicon.shorten``, tagged
    ``shortened``; a hash of (seed, record, caption), the same every validation).

    Validation chooses the re-ranking blend on both: val's own captions name every detail, and on
    them the dual encoder already finds every val person first, so they cannot show what the
    matcher or the attribute check adds for a description that leaves details out.
    """
    import random

    from ufinebench.data.lexicon import shorten

    out = []
    for s in samples:
        short = tuple(shorten(c, random.Random(f"{seed}:{s.index}:{j}")) for j, c in enumerate(s.captions))
        out.append(dataclasses.replace(s, captions=s.captions + short,
                                       caption_tags=s.caption_tags + tuple({**t, "shortened": True} for t in s.caption_tags)))
    return out


def held_out_identities(samples: list[Any], n: int) -> set[int]:
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


def _setup_data(cfg: Config, tokenizer: Any, rank: int, world: int, progress: bool) -> _Data:
    """Parse the annotations, train (or reuse) the tokenizer, build the pairs and the sampler.

    Training pairs live in memory (decoded once) when they fit ``data.in_memory_mb``; else they
    are decoded per item by DataLoader workers, as for large real datasets.
    """
    t, d, m = cfg.train, cfg.data, cfg.model
    ann = load_dataset(d.dataset, d.format, split=d.train_split)
    split_samples = ann.split(d.train_split)
    train_samples = split_samples
    held = held_out_identities(train_samples, d.val_identities)
    if held:  # validation people never reach training (nor the tokenizer)
        train_samples = [s for s in train_samples if s.person_id not in held]
    if tokenizer is None:
        if d.tokenizer == "clip":
            tokenizer = ClipTokenizer()
        else:
            learnt = TrainedBPETokenizer if d.tokenizer == "bpe" else TrainedWordTokenizer
            tokenizer = learnt.train((c for s in train_samples for c in s.captions), vocab_size=d.bpe_vocab_size)
    transform = ImageTransform(size=(m.image_size[0], m.image_size[1]), train=True, hflip=d.hflip, pad=d.pad, color_jitter=d.color_jitter,
                               erase_prob=d.erase_prob)
    n_images = len({s.image_path for s in train_samples})
    in_memory = n_images * 3 * m.image_size[0] * m.image_size[1] <= d.in_memory_mb * 2**20
    dataset = TrainPairs(train_samples, tokenizer, transform, context_length=m.context_length, seed=t.seed, in_memory=in_memory,
                         workers=max(1, d.workers), progress=progress and rank == 0,
                         sentence_drop=d.sentence_drop, sentence_shuffle=d.sentence_shuffle,
                         sentence_keep_first=d.sentence_keep_first)
    sampler = DistributedBatchSampler(
        len(dataset), t.batch_size, strategy=d.sampler, labels=dataset.labels.tolist(), num_instances=d.num_instances,
        seed=t.seed, rank=rank, world_size=world, drop_last=True,
    )
    if len(sampler) == 0:
        raise UFineBenchError(f"train.batch_size {t.batch_size} is larger than the {len(dataset)} training pairs")
    val_samples: list[Any] = []
    if d.val_split and t.eval_every > 0 and rank == 0:
        check_split(ann, d.val_split)  # the file is already parsed: no second read
        val_samples = ann.split(d.val_split)
    elif held and t.eval_every > 0 and rank == 0:
        val_samples = [s for s in split_samples if s.person_id in held]
    if t.eval_limit > 0:
        val_samples = val_samples[: t.eval_limit]
    steps = len(sampler) if t.max_steps_per_epoch <= 0 else min(len(sampler), t.max_steps_per_epoch)
    out = _Data(tokenizer, dataset, sampler, val_samples, steps)
    if d.match_sentence_drop > 0 and out.sentence_end is None:
        raise ConfigError("data.match_sentence_drop: the tokenizer has no single token for '.', so sentences cannot be told apart")
    if (d.attribute_swap or d.attribute_words or d.match_attribute_drop > 0 or cfg.train.match_negatives != "any") and out.attribute_table is None:
        raise ConfigError("data.attribute_swap / attribute_words / match_attribute_drop, train.match_negatives: the tokenizer reads no two"
                          " attribute words of one class as single tokens")
    return out


def _setup_model(cfg: Config, data: _Data, resume_ck: Path | None, device: torch.device, local_rank: int, distributed: bool) -> _State:
    """Build the model (or load it for a resume), its optimizer, schedule and gradient scaler."""
    t = cfg.train
    torch.manual_seed(t.seed)
    model = RetrievalModel(cfg.model)
    if t.init_from and resume_ck is None:
        _init_from(model, t.init_from)
    model.to(device)
    total_steps = data.steps_per_epoch * t.epochs
    warmup = int(round(t.warmup_epochs * data.steps_per_epoch))
    groups = param_groups(model, t.lr, t.weight_decay, t.lr_multipliers)
    opt: torch.optim.Optimizer
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=t.lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW(groups, lr=t.lr, betas=(0.9, 0.98), eps=t.adam_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total_steps, warmup, t.min_lr_ratio))
    amp_dtype = cpu_amp_dtype(t.amp) if device.type == "cpu" else {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    if resume_ck is not None:
        model.load_state_dict(load_weights(resume_ck))
        state = torch.load(resume_ck / "train_state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
    ddp: torch.nn.Module = model
    if distributed:
        m = cfg.model  # the conv tower's token projection is unused when no head reads image tokens
        unused = m.vision == "conv" and not (m.use_granularity or m.use_matching or m.mlm)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None,
                                                        find_unused_parameters=unused)
    return _State(model, ddp, opt, sched, scaler, amp_dtype, device)


def _epoch_batches(data: _Data, epoch: int, workers: int) -> Iterator[dict[str, Any]]:
    """The epoch's batches: built from memory, or loaded by DataLoader workers (streaming)."""
    data.sampler.set_epoch(epoch)
    if data.dataset.images is not None:
        for keys in data.sampler:
            yield data.dataset.batch(keys)
        return
    yield from DataLoader(data.dataset, batch_sampler=data.sampler, num_workers=workers, collate_fn=collate, persistent_workers=False)


class NonFiniteLossError(UFineBenchError):
    """Training met a NaN or infinite loss; the weights were not updated with it."""


def _stop_if_not_finite(loss: torch.Tensor, st: _State, distributed: bool) -> None:
    """Stop before a NaN / inf loss reaches the weights (every process stops together).

    The last epoch checkpoint (``checkpoints/last``) stays as it was: checkpoints are only
    written at the end of an epoch, from weights that never saw the bad step.
    """
    bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0)
    if distributed:
        import torch.distributed as dist

        bad = bad.to(loss.device)
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if float(bad) > 0:
        kept = f"the last good checkpoint is epoch {st.epoch}" if st.epoch > 0 else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"train: the loss became {float(loss.detach()):g} at epoch {st.epoch + 1}, step {st.global_step + 1}; "
            f"stopped before updating the weights ({kept}); try a lower train.lr, or check the data"
        )


def _train_step(st: _State, data: _Data, cfg: Config, batch: dict[str, Any], world: int, distributed: bool) -> dict[str, torch.Tensor]:
    """One optimisation step on one (local share of a global) batch; returns the losses."""
    t, model, device = cfg.train, st.model, st.device
    images = batch["image"].to(device, non_blocking=True)
    length = torch.tensor(int(model.text.eot_index(batch["tokens"]).max()) + 1)
    if distributed:  # every process trims to the same length, so token tensors can be gathered
        import torch.distributed as dist

        dist.all_reduce(length, op=dist.ReduceOp.MAX)
    batch["tokens"] = batch["tokens"][:, : int(length)]
    ids = batch["person_id"].to(device)
    labels = batch["label"].to(device)
    d, tok = cfg.data, data.tokenizer
    noise = {"unk_id": getattr(tok, "unk_id", None), "specials": {tok.sot_id, tok.eot_id, tok.pad_id}, "pad_id": tok.pad_id}
    if d.modifier_order > 0:  # before every other view, so all of them read the reordered caption
        batch["tokens"] = modifier_order(batch["tokens"], batch["index"], st.epoch, t.seed, data.phrase_words, d.modifier_order)
    match_tokens = None
    if model.matcher is not None and (d.match_token_drop > 0 or d.match_token_unk > 0 or d.match_token_shuffle > 0
                                      or d.match_sentence_drop > 0 or d.match_attribute_drop > 0):  # the matcher's own noisy view
        match_tokens = token_noise(batch["tokens"], batch["index"], st.epoch, t.seed, drop=d.match_token_drop, unk=d.match_token_unk,
                                   salt=3, shuffle=d.match_token_shuffle, sentence_drop=d.match_sentence_drop,
                                   sentence_end=data.sentence_end, **noise)
        if d.match_attribute_drop > 0:
            assert data.attribute_table is not None  # checked when the data was set up
            match_tokens = attribute_drop(match_tokens, batch["index"], st.epoch, t.seed, data.attribute_table, d.match_attribute_drop,
                                          pad_id=tok.pad_id)
    match_groups = None
    if model.matcher is not None and t.match_negatives == "contradicting":  # what each view names, what each caption names
        assert data.attribute_table is not None
        view = batch["tokens"] if match_tokens is None else match_tokens
        match_groups = (named_groups(view, data.attribute_table).to(device), named_groups(batch["tokens"], data.attribute_table).to(device))
    if match_tokens is not None:
        match_tokens = match_tokens.to(device)
    word_targets = None
    if d.attribute_words:  # the attribute words of the clean caption, for the image's word head
        assert data.attribute_table is not None
        word_targets = tuple(x.to(device) for x in attribute_targets(batch["tokens"], data.attribute_table, d.attribute_pairs))
    swap_tokens = swap_ok = None
    if d.attribute_swap:  # the clean caption with one attribute word swapped: a negative for its own image
        table = data.attribute_table
        assert table is not None  # checked when the data was set up
        swap_tokens, swap_ok = attribute_swap(batch["tokens"], batch["index"], st.epoch, t.seed, table)
        swap_tokens, swap_ok = swap_tokens.to(device), swap_ok.to(device)
    if d.token_drop > 0 or d.token_unk > 0:
        batch["tokens"] = token_noise(batch["tokens"], batch["index"], st.epoch, t.seed, drop=d.token_drop, unk=d.token_unk, **noise)
    tokens = batch["tokens"].to(device, non_blocking=True)
    mlm_tokens = mlm_labels = None
    if cfg.model.mlm:
        tok = data.tokenizer
        mlm_tokens, mlm_labels = mlm_mask(batch["tokens"], batch["index"], st.epoch, t.seed, model.text.mask_id,  # its own [MASK]
                                          tok.vocab_size, {tok.sot_id, tok.eot_id, tok.pad_id})
        mlm_tokens, mlm_labels = mlm_tokens.to(device), mlm_labels.to(device)
    jitter = model.cfg.text_position_jitter
    offset = position_offsets(batch["index"], st.epoch, t.seed, jitter).to(device) if jitter > 0 else None  # (B,)
    ctx = DistContext.from_process_group(t.seed, st.global_step) if distributed else DistContext(seed=t.seed, step=st.global_step)
    with torch.autocast(device_type=device.type, dtype=st.amp_dtype, enabled=st.amp_dtype is not None):
        out = st.ddp(images, tokens, mlm_tokens, offset, match_tokens, swap_tokens)
        if swap_ok is not None:
            out["swap_ok"] = swap_ok
        if word_targets is not None:
            out["word_target"], out["word_known"] = word_targets
        if match_groups is not None:
            out["match_view_groups"], out["caption_groups"] = match_groups
        losses = compute_losses(model, out, ids, labels, t.loss_weights, ctx, mlm_labels, global_loss=t.global_loss,
                                match_candidates=t.match_candidates)
    _stop_if_not_finite(losses["loss"], st, distributed)
    st.opt.zero_grad(set_to_none=True)
    st.scaler.scale(losses["loss"] * world).backward()
    if t.grad_clip > 0:
        st.scaler.unscale_(st.opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    st.scaler.step(st.opt)
    st.scaler.update()
    st.sched.step()
    st.global_step += 1
    return losses


def _end_epoch(st: _State, data: _Data, cfg: Config, run_dir: Path, logger: _Logger, record: dict[str, Any], rank: int) -> None:
    """Validate (when due), log, and write the epoch's checkpoint, ``last`` and ``best`` (rank 0)."""
    t = cfg.train
    if not all(bool(torch.isfinite(p).all()) for p in st.model.parameters()):  # a finite loss with an overflowing step
        raise NonFiniteLossError(f"train: the weights became non-finite during epoch {st.epoch + 1}; not saved "
                                 f"(the last good checkpoint is kept); try a lower train.lr")
    metrics = None
    rerank_weight: dict[str, Any] = {}
    if rank == 0 and data.val_samples and (st.epoch + 1) % t.eval_every == 0:
        from ufinebench.evaluate import RERANK_TOPK, blend_name, extract_features, tune_rerank_weight
        from ufinebench.metrics import metrics_from_features

        eval_tf = ImageTransform(size=(cfg.model.image_size[0], cfg.model.image_size[1]))
        model = st.model
        has_matcher = getattr(model, "matcher", None) is not None
        samples = data.val_with_shortened if has_matcher else data.val_samples
        f = extract_features(model, samples, data.tokenizer, eval_tf, batch_size=max(16, t.batch_size), device=st.device,
                             keep_tokens=has_matcher)
        own = np.array([not tags.get("shortened") for tags in f["query_tags"]])  # (Q,): val's own captions
        res = metrics_from_features(f["query_features"][own], f["gallery_features"], f["query_ids"][own], f["gallery_ids"])
        metrics = dict(res.as_dict())
        record.update({f"val_{k}": v for k, v in metrics.items()})
        if has_matcher:  # the re-ranking blend, chosen on val only (its captions and shortened copies; never on test or 3C)
            w, v, r1s, maps = tune_rerank_weight(model, f, RERANK_TOPK, device=st.device)
            rerank_weight = {"rerank_weight": w, "rerank_check_weight": v, "rerank_val_R1": r1s, "rerank_val_mAP": maps}
            record["val_rerank_weight"] = blend_name(w, v)
    if rank != 0:
        return
    logger.write(record)
    improved = metrics is not None and metrics[t.best_metric] > st.best_value
    if improved:
        assert metrics is not None
        st.best_value = metrics[t.best_metric]
    meta = {"config": cfg.to_dict(), "tokenizer": data.tokenizer.state(), "epoch": st.epoch, "global_step": st.global_step,
            "metrics": metrics, "best_metric": t.best_metric, "best_value": st.best_value if st.best_value > -math.inf else None,
            **rerank_weight}
    state = {"optimizer": st.opt.state_dict(), "scheduler": st.sched.state_dict(), "torch_rng": torch.get_rng_state(),
             "scaler": st.scaler.state_dict()}
    ck_dir = run_dir / "checkpoints"
    name = f"epoch_{st.epoch + 1:04d}"
    save_checkpoint(ck_dir / name, st.model, meta, state)
    _atomic_text(ck_dir / "last", name)
    if improved or (metrics is None and not data.val_samples):
        save_checkpoint(ck_dir / "best", st.model, meta)
    for old in sorted(ck_dir.glob("epoch_*"))[:-1]:  # keep the newest epoch checkpoint only
        shutil.rmtree(old, ignore_errors=True)


def _train(cfg: Config | None = None, *, resume: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """The training run itself (``train`` has checked and locked the run folder); deterministic kernels on the CPU."""
    with deterministic_cpu(not torch.cuda.is_available()):
        return _train_run(cfg, resume=resume, progress=progress)


def _train_run(cfg: Config | None, *, resume: str | os.PathLike[str] | None, progress: bool) -> Path:
    """Set up data, model and optimizer (or restore them), then run the epochs and the final evaluation."""
    world, rank, local_rank = _dist_info()
    distributed = world > 1
    use_cuda = torch.cuda.is_available()
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)

    start_epoch, global_step, best_value = 0, 0, -math.inf
    resume_ck: Path | None = None
    tokenizer = None
    if resume is not None:
        run_dir = Path(resume)
        resume_ck = resolve_checkpoint(run_dir, "last")
        meta = read_meta(resume_ck)
        cfg = load_config(meta["config"])
        start_epoch, global_step = int(meta["epoch"]) + 1, int(meta["global_step"])
        saved_best = meta.get("best_value")
        best_value = float(saved_best) if saved_best is not None else -math.inf
        tokenizer = tokenizer_from_state(meta["tokenizer"])
    else:
        if cfg is None:
            raise ConfigError("no config given")
        run_dir = Path(cfg.train.out_dir)
        if rank == 0 and (run_dir / "checkpoints").exists():
            raise UFineBenchError(f"{run_dir} already holds a run; use --resume {run_dir} or another train.out_dir")
    assert cfg is not None
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)

    data = _setup_data(cfg, tokenizer, rank, world, progress)
    m = cfg.model
    n_words = (N_ATTRIBUTE_GROUPS + N_ATTRIBUTE_PAIRS * cfg.data.attribute_pairs) if cfg.data.attribute_words else 0  # the word head's outputs
    model_cfg = dataclasses.replace(m, num_classes=data.dataset.num_classes, vocab_size=data.tokenizer.vocab_size,
                                    eot_id=None if cfg.data.tokenizer == "clip" else data.tokenizer.eot_id, attribute_words=n_words)
    cfg = dataclasses.replace(cfg, model=model_cfg)
    st = _setup_model(cfg, data, resume_ck, device, local_rank, distributed)
    st.global_step, st.best_value = global_step, best_value

    logger = _Logger(run_dir, rank == 0, cfg.train.tensorboard)
    if rank == 0:
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        logger.write({"kind": "start", "epoch": start_epoch, "step": global_step, "world_size": world, "pairs": len(data.dataset),
                      "steps_per_epoch": data.steps_per_epoch, "in_memory": data.dataset.images is not None,
                      "autocast": str(st.amp_dtype).replace("torch.", "") if st.amp_dtype is not None else "none",
                      "params": sum(p.numel() for p in st.model.parameters())})
    t = cfg.train
    for epoch in range(start_epoch, t.epochs):
        st.epoch = epoch
        st.model.train()
        bar = None
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=data.steps_per_epoch, desc=f"epoch {epoch + 1}/{t.epochs}", unit="step", leave=False)
        t0, seen, n_steps = time.perf_counter(), 0, 0
        sums: dict[str, float] = {}
        for batch in _epoch_batches(data, epoch, cfg.data.workers):
            if n_steps >= data.steps_per_epoch:
                break
            losses = _train_step(st, data, cfg, batch, world, distributed)
            n_steps += 1
            seen += batch["image"].shape[0] * world
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if bar is not None:
                bar.set_postfix(loss=f"{float(losses['loss'].detach()) * world:.3f}", pairs_s=f"{seen / (time.perf_counter() - t0):.0f}")
                bar.update(1)
            if rank == 0 and st.global_step % max(1, t.log_every) == 0:
                g = st.opt.param_groups[0]
                logger.write({"kind": "train", "epoch": epoch, "step": st.global_step, "lr": g["lr"] / g["lr_mult"],
                              **{k: float(v.detach()) * world for k, v in losses.items()}, "pairs_per_s": seen / (time.perf_counter() - t0)})
        if bar is not None:
            bar.close()
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": st.global_step, "seconds": time.perf_counter() - t0,
                                  **{k: v * world / max(1, n_steps) for k, v in sums.items()}}
        _end_epoch(st, data, cfg, run_dir, logger, record, rank)
        if distributed:
            import torch.distributed as dist

            dist.barrier()
    logger.close()
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    if cfg.train.final_eval and rank == 0:
        _final_eval(cfg, run_dir, device)
    return run_dir


def _final_eval(cfg: Config, run_dir: Path, device: torch.device) -> None:
    """Evaluate the best checkpoint (by the validation metric; the last one without validation) on
    ``train.final_eval`` and write ``final_eval_SPLIT.json`` beside the checkpoints."""
    from ufinebench.evaluate import evaluate_checkpoint
    from ufinebench.io import write_json
    from ufinebench.outputs import add_entries

    split = cfg.train.final_eval
    assert split is not None
    ann = load_dataset(cfg.data.dataset, cfg.data.format, split=split)
    check_split(ann, split)
    samples = ann.split(split)
    res = evaluate_checkpoint(str(run_dir), samples[: cfg.train.eval_limit] if cfg.train.eval_limit > 0 else samples, device=str(device))
    res.pop("_features", None)
    add_entries(run_dir, "train", (f"final_eval_{split}.json",))
    write_json(run_dir / f"final_eval_{split}.json", res)


def dry_run(cfg: Config, steps: int = 5, progress: bool = False) -> dict[str, Any]:
    """A few steps of ``cfg`` on its own data and model, through validation and the final evaluation.

    Everything a long job touches is exercised (data and images, tokenizer, init weights, every
    loss, optimizer step, checkpoint writing, validation, the final test evaluation) on ``steps``
    batches and at most 64 evaluation records, in a temporary folder that is deleted afterwards.
    Returns steps/s (after the first step, which pays for warm-up) and peak memory, so a 60-epoch
    job cannot fail at epoch 5 for a reason a minute could have shown.
    """
    import resource
    import tempfile

    t = cfg.train
    with tempfile.TemporaryDirectory(prefix="ufinebench-dry-run-") as tmp:
        has_val = bool(cfg.data.val_split or cfg.data.val_identities)
        small = dataclasses.replace(t, epochs=1, max_steps_per_epoch=steps, eval_every=1 if has_val else 0, out_dir=str(Path(tmp) / "run"),
                                    tensorboard=False, log_every=1, eval_limit=64, final_eval=t.final_eval or "test")
        run_cfg = dataclasses.replace(cfg, train=small)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        run = train(run_cfg, progress=progress)
        total = time.perf_counter() - t0
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        final = json.loads((run / f"final_eval_{small.final_eval}.json").read_text())
    steps_log = [x for x in log if x["kind"] == "train"]
    epoch = next(x for x in log if x["kind"] == "epoch")
    out: dict[str, Any] = {
        "steps": len(steps_log), "batch_size": t.batch_size, "seconds": round(total, 1),
        "steps_per_s": round(len(steps_log) / epoch["seconds"], 3) if epoch["seconds"] > 0 else None,
        "loss_first": steps_log[0]["loss"] if steps_log else None, "loss_last": steps_log[-1]["loss"] if steps_log else None,
        "validated": "val_R1" in epoch, "final_eval": {"split": small.final_eval, "queries": final["overall"]["queries"]},
        "peak_cpu_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if torch.cuda.is_available():
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _atomic_text(path: Path, text: str) -> None:
    from ufinebench.io import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def _init_from(model: RetrievalModel, path: str) -> None:
    """Start from a checkpoint's encoder weights (e.g. imported CLIP); new heads stay fresh."""
    folder = resolve_checkpoint(path)
    sd = load_weights(folder)
    own = model.state_dict()
    take = {k: v for k, v in sd.items() if k.startswith(("visual.", "text.")) and k in own}
    bad = [k for k, v in take.items() if v.shape != own[k].shape]
    if bad:
        raise UFineBenchError(f"{path}: {bad[0]} has shape {tuple(take[bad[0]].shape)}, the model needs {tuple(own[bad[0]].shape)} "
                              "(import the weights with this image size and text length)")
    missing = [k for k in own if k.startswith(("visual.", "text.")) and k not in take and k != "text.mask_embedding"]  # MLM's, new
    if missing:
        raise UFineBenchError(f"{path}: encoder weights missing ({missing[0]}, ...)")
    model.load_state_dict(take, strict=False)
