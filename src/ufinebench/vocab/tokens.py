"""A vocabulary read through a tokenizer: which token ids are attribute words, and what a caption names.

:class:`AttributeTable` maps token ids to a vocabulary's classes, groups, colours and slots;
:func:`named_groups` (the query side of the attribute check), :func:`attribute_targets` (the word
head's training targets) and :func:`attribute_pairs` (colour-garment pairs) read captions with it.
:class:`PhraseWords` holds the noun-phrase parts for training's modifier-order augmentation.
:func:`shorten` drops details from a caption's text (validation's shortened copies). Everything
here is a pure function of the vocabulary, the tokenizer and the captions.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import torch

from ufinebench.vocab import AttributeVocabulary


def single_token_id(tokenizer: Any, word: str) -> int | None:
    """The id of ``word`` when the tokenizer reads it as one known token, else None (split or unknown)."""
    ids = tokenizer.text_ids(word)
    return ids[0] if len(ids) == 1 and ids[0] != getattr(tokenizer, "unk_id", None) else None


@dataclass(frozen=True)
class AttributeTable:
    """Token ids of a vocabulary's attribute words: class and synonym group of each.

    ``cls``, ``group``: (V,) long, -1 for tokens that are no attribute word (``cls`` counts only
    classes with two groups the tokenizer knows, ``group`` every group of the vocabulary);
    ``members``: (C, M) long token ids of each such class, padded with -1; ``member_group``: (C, M)
    their groups; ``group_class``: (G,) the vocabulary's class of every group; ``group_named``: (G,)
    bool, the group's class is a named class; ``colour`` / ``slot`` / ``phrase``: (V,) each token's
    colour group (-1: none), slot (-1: none) and whether it may stand inside a noun phrase, for
    :func:`attribute_pairs`; ``n_slots``: the vocabulary's slots.
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
    n_slots: int
    n_colours: int

    @property
    def n_groups(self) -> int:
        return int(self.group_class.shape[0])

    @property
    def n_pairs(self) -> int:
        return self.n_colours * self.n_slots

    @classmethod
    def build(cls, vocab: AttributeVocabulary, tokenizer: Any) -> AttributeTable | None:
        """The table for a tokenizer: attribute words it reads as one known token; None if no class has two."""
        vocab_size = int(tokenizer.vocab_size)
        classes: list[list[tuple[int, int]]] = []  # per class: (token id, group)
        gid = 0
        group_class = [c for c, groups in enumerate(vocab.classes.values()) for _ in groups]
        for groups in vocab.classes.values():
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
        named = torch.tensor([name in vocab.named_classes for name, groups in vocab.classes.items() for _ in groups])
        colour_of = torch.full((vocab_size,), -1, dtype=torch.long)
        slot_of = torch.full((vocab_size,), -1, dtype=torch.long)
        phrase = torch.zeros(vocab_size, dtype=torch.bool)
        colours = {w: c for c, words in enumerate(vocab.classes[vocab.colour_class]) for w in words}
        colours.update({alias: colours[target] for alias, target in vocab.colour_aliases.items()})

        def mark(table: torch.Tensor, word: str, value: int | bool) -> None:
            i = single_token_id(tokenizer, word)
            if i is not None and i < vocab_size:
                table[i] = value

        for w, c in colours.items():
            mark(colour_of, w, c)
        for s, nouns in enumerate(vocab.slots.values()):
            for w in nouns:
                mark(slot_of, w, s)
        for w in vocab.phrase_words:
            mark(phrase, w, True)
        return cls(cls_of, group_of, members, member_group, torch.tensor(group_class, dtype=torch.long), named, colour_of, slot_of, phrase,
                   len(vocab.slots), len(vocab.classes[vocab.colour_class]))

    def named_group(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L) long: each token's group when it is a word of a named class, else -1."""
        g = self.group[tokens.clamp(0, self.group.shape[0] - 1)]  # (B, L)
        return torch.where((g >= 0) & self.group_named[g.clamp_min(0)], g, -1)


def multi_hot(index: torch.Tensor, n: int) -> torch.Tensor:
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
        target, known = attribute_targets(tokens, table)
        p = attribute_pairs(tokens, table)  # (B, P)
        slots = p.view(p.shape[0], -1, table.n_slots).any(1, keepdim=True)  # (B, 1, S): slots given a colour
        known_p = slots.expand(-1, p.shape[1] // table.n_slots, -1).reshape(p.shape)  # (B, P)
        return torch.cat([target, p.float()], 1), torch.cat([known, known_p], 1)
    g = table.group[tokens.clamp(0, table.group.shape[0] - 1)]  # (B, L), -1 where no attribute word
    target = multi_hot(g, table.n_groups)  # (B, G)
    n_cls = int(table.group_class.max()) + 1
    named = multi_hot(torch.where(g >= 0, table.group_class[g.clamp_min(0)], -1), n_cls)  # (B, C)
    return target, named[:, table.group_class] > 0


def attribute_pairs(tokens: torch.Tensor, table: AttributeTable) -> torch.Tensor:
    """(B, L) ids -> (B, P) bool: the colour-garment pairs each caption names (``data.attribute_pairs``).

    A phrase is a run of words that may stand in a noun phrase (the vocabulary's phrase words: "a
    grey long - sleeved hooded sweatshirt"); every colour word in it pairs with the slot of its last
    garment noun ("sweatshirt": top). Pair index = colour group x slots + slot.
    "White sneakers with red soles" names white x shoes only: "with" ends the phrase.
    """
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
    pair = torch.where(inside & (colour >= 0) & (head_slot >= 0), colour * table.n_slots + head_slot, -1)  # (B, L)
    return multi_hot(pair, table.n_pairs) > 0


def head_has_pairs(head_outputs: int, vocab: AttributeVocabulary) -> bool:
    """Whether a word head of this many outputs was trained with ``data.attribute_pairs`` (it has the pairs' outputs)."""
    return head_outputs > vocab.n_groups


def named_groups(tokens: torch.Tensor, table: AttributeTable, pairs: bool = False) -> torch.Tensor:
    """(B, L) ids -> (B, G) bool: the groups of named classes (colours, garments, shoes, bags, headwear)
    each caption has a word of; with ``pairs`` (a word head trained with ``data.attribute_pairs``)
    (B, G + P): then the colour-garment pairs it names (:func:`attribute_pairs`)."""
    g = table.named_group(tokens)  # (B, L)
    out = multi_hot(g, table.n_groups) > 0
    return torch.cat([out, attribute_pairs(tokens, table)], 1) if pairs else out


@dataclass(frozen=True)
class PhraseWords:
    """Token ids of a vocabulary's noun-phrase parts for training's modifier-order augmentation
    (words the tokenizer splits are left out)."""

    colours: frozenset[int]
    tones: frozenset[int]
    garments: frozenset[int]
    modifiers: frozenset[int]
    hyphen: int | None

    @classmethod
    def build(cls, vocab: AttributeVocabulary, tokenizer: Any) -> PhraseWords:
        def ids(words: tuple[str, ...]) -> frozenset[int]:
            return frozenset(i for i in (single_token_id(tokenizer, w) for w in words) if i is not None)

        return cls(ids(vocab.phrase_colours), ids(vocab.tones), ids(vocab.garments), ids(vocab.modifiers), single_token_id(tokenizer, "-"))


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def shorten(text: str, rng: random.Random, vocab: AttributeVocabulary, sentence_p: float = 0.3, word_p: float = 0.3) -> str:
    """``text`` with details left out, the way a shorter description leaves them: each sentence
    dropped with probability ``sentence_p`` (never all: then the first stays), then each word of a
    named class (a colour, garment, shoe, bag or headwear word) with ``word_p``.

    For choosing the re-ranking blend on val (training's validation): val's own captions name every
    detail, so they cannot tell whether the attribute check helps descriptions that do not. Generic
    by design (sentences and words dropped at random), not 3C's rewriters.
    """
    named = vocab.named_words()
    sentences = [x for x in _SENTENCE.split(text.strip()) if x]
    kept = [x for x in sentences if rng.random() >= sentence_p] or sentences[:1]
    out: list[str] = []
    for w in " ".join(kept).split():
        core = w.rstrip(",.;:!?")
        if core.lower() in named and rng.random() < word_p:
            if w != core:  # keep the punctuation the word carried ("jeans." -> "."): sentences stay apart
                out.append(w[len(core):])
            continue
        out.append(w)
    return " ".join(out)
