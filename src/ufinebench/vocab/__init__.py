"""Attribute vocabularies as data: which caption words name what a picture shows.

Several caption-only training options and the re-ranker's attribute check read a caption's
*attribute words*: the image's word head learns which of them its caption names
(``data.attribute_words``), training swaps one for another of its class (``data.attribute_swap``),
moves a colour across shape words (``data.modifier_order``), reads which colour goes with which
garment (``data.attribute_pairs``), and validation shortens captions by dropping them. Which words
those are is a property of the captions, not of the code: a vocabulary is a JSON file that a
dataset ships beside its annotation (``vocabulary.json``; UFine-Synth writes its own) or that a
user writes for real captions, and a checkpoint keeps the one it was trained with, so the meaning
of its word head never changes under it.

The file (``format``: ``ufinebench-attribute-vocabulary/1``)::

    {"format": "ufinebench-attribute-vocabulary/1", "name": "my-captions",
     "classes": [{"name": "colour", "groups": [["black"], ["grey", "gray"], ...]},
                 {"name": "top", "groups": [["hoodie", "sweatshirt"], ...]}, ...],
     "named_classes": ["colour", "top", ...],
     "colour_class": "colour",
     "colour_aliases": {"navy": "blue"},
     "slots": [{"name": "top", "nouns": ["hoodie", "sweatshirt", ..., "tee"]}, {"name": "bottom", "nouns": [...]}, ...],
     "phrase": {"tones": ["dark", "light"], "garments": [...], "modifiers": ["long", "sleeved", "-", ...], "extra": ["t"]}}

* ``classes``: classes of words whose members contradict each other; each inner list of
  ``groups`` is a synonym group (never swapped for each other). The word head has one output per
  group, in file order: ``n_groups`` outputs. (Classes and slots are lists, not JSON objects, so
  that their order survives any tool that sorts keys.)
* ``named_classes``: classes a full caption always names when the person has one (a caption
  without "red" describes nobody in red); the attribute check and shortening read these.
* ``colour_class`` and ``slots``: colour-garment pairs. A pair is a group of the colour class and
  a slot (top, bottom, ...), read from one noun phrase whose last slot noun gives the slot;
  ``colour_aliases`` are colour words outside the class read as one of it. ``n_pairs`` =
  colour groups x slots more outputs with ``data.attribute_pairs``.
* ``phrase``: noun-phrase parts. ``tones`` stand before a colour ("dark"), ``garments`` end a
  phrase, ``modifiers`` are shape words that may stand on either side of the colour
  ("knee - length"); a noun phrase is a run of colour, tone, modifier, garment, slot and
  ``extra`` words.

Words are matched as the tokenizer reads them (one token each); words it splits are left out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ufinebench.errors import UFineBenchError
from ufinebench.limits import read_json

FORMAT = "ufinebench-attribute-vocabulary/1"
VOCAB_FILE = "vocabulary.json"  # the name a dataset ships its vocabulary under, beside its annotation file
BUILTIN_DIR = Path(__file__).resolve().parent
LEGACY_NAME = "ufine-synth-1"  # what checkpoints written before vocabularies became files were trained with


class VocabularyError(UFineBenchError):
    """A vocabulary file that cannot be used; the message names the field."""


@dataclass(frozen=True)
class AttributeVocabulary:
    """One attribute vocabulary (see the module docstring for the fields' meaning)."""

    name: str
    classes: dict[str, tuple[tuple[str, ...], ...]]
    named_classes: tuple[str, ...]
    colour_class: str
    colour_aliases: dict[str, str]
    slots: dict[str, tuple[str, ...]]
    tones: tuple[str, ...]
    garments: tuple[str, ...]
    modifiers: tuple[str, ...]
    phrase_extra: tuple[str, ...]
    description: str = ""

    @property
    def n_groups(self) -> int:
        """The word head's outputs for the words: one per synonym group, classes in file order."""
        return sum(len(groups) for groups in self.classes.values())

    @property
    def n_pairs(self) -> int:
        """The word head's further outputs for colour-garment pairs: colour groups x slots."""
        return len(self.classes[self.colour_class]) * len(self.slots)

    def head_outputs(self, pairs: bool) -> int:
        """The word head's size for ``data.attribute_words`` (and ``data.attribute_pairs``)."""
        return self.n_groups + (self.n_pairs if pairs else 0)

    def group_names(self) -> list[tuple[str, tuple[str, ...]]]:
        """(class, words) of every group, in output order."""
        return [(c, words) for c, groups in self.classes.items() for words in groups]

    @property
    def phrase_colours(self) -> tuple[str, ...]:
        """Colour words in a noun phrase: the colour class's words, then the aliases."""
        return tuple(w for group in self.classes[self.colour_class] for w in group) + tuple(self.colour_aliases)

    @property
    def phrase_words(self) -> frozenset[str]:
        """Every word that may stand inside one noun phrase (a run of them is one phrase)."""
        return frozenset(self.phrase_colours + self.tones + self.modifiers + self.garments + tuple(self.colour_aliases)
                         + tuple(w for nouns in self.slots.values() for w in nouns) + self.phrase_extra)

    def named_words(self) -> set[str]:
        """The words of the named classes (what shortening may drop)."""
        return {w for c in self.named_classes for group in self.classes[c] for w in group}

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON object."""
        return {"format": FORMAT, "name": self.name, "description": self.description,
                "classes": [{"name": c, "groups": [list(g) for g in groups]} for c, groups in self.classes.items()],
                "named_classes": list(self.named_classes), "colour_class": self.colour_class, "colour_aliases": dict(self.colour_aliases),
                "slots": [{"name": s, "nouns": list(nouns)} for s, nouns in self.slots.items()],
                "phrase": {"tones": list(self.tones), "garments": list(self.garments), "modifiers": list(self.modifiers),
                           "extra": list(self.phrase_extra)}}

    def to_json(self) -> str:
        """The file's text: one class, slot or word list per line, so a person can read and edit it."""
        d = self.to_dict()

        def block(key: str, items: list[str], opening: str, closing: str, last: bool = False) -> list[str]:
            body = [f"  {e}" + ("," if i < len(items) - 1 else "") for i, e in enumerate(items)]
            return [f" {json.dumps(key)}: {opening}", *body, f" {closing}" + ("" if last else ",")]

        lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(d[k])}," for k in ("format", "name", "description")]
        lines += block("classes", [json.dumps(e) for e in d["classes"]], "[", "]")
        lines += [f" {json.dumps(k)}: {json.dumps(d[k])}," for k in ("named_classes", "colour_class", "colour_aliases")]
        lines += block("slots", [json.dumps(e) for e in d["slots"]], "[", "]")
        lines += block("phrase", [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in d["phrase"].items()], "{", "}", last=True)
        return "\n".join([*lines, "}"]) + "\n"

    @classmethod
    def from_dict(cls, d: Any, where: str = "vocabulary") -> AttributeVocabulary:
        """Check and read a vocabulary's JSON object; a wrong field is a :class:`VocabularyError` naming it."""
        if not isinstance(d, dict):
            raise VocabularyError(f"{where}: expected a JSON object")
        if d.get("format") != FORMAT:
            raise VocabularyError(f"{where}: format must be {FORMAT!r}, got {d.get('format')!r}")
        known = {"format", "name", "description", "classes", "named_classes", "colour_class", "colour_aliases", "slots", "phrase"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise VocabularyError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        classes: dict[str, tuple[tuple[str, ...], ...]] = {}
        for c, groups in _named_list(d.get("classes"), "groups", f"{where}.classes"):
            if not isinstance(groups, list) or not groups:
                raise VocabularyError(f"{where}.classes.{c}: expected a non-empty list of synonym groups")
            classes[c] = tuple(_words(g, f"{where}.classes.{c}[{i}]") for i, g in enumerate(groups))
            seen = [w for g in classes[c] for w in g]
            if len(seen) != len(set(seen)):
                raise VocabularyError(f"{where}.classes.{c}: a word stands in two groups of one class")
        if not classes:
            raise VocabularyError(f"{where}.classes: no class")
        named_raw = d.get("named_classes", [])
        if not isinstance(named_raw, list) or not all(isinstance(c, str) for c in named_raw):
            raise VocabularyError(f"{where}.named_classes: expected a list of class names")
        named = tuple(named_raw)
        colour_class = d.get("colour_class")
        for c in (*named, colour_class):
            if not isinstance(c, str) or c not in classes:
                raise VocabularyError(f"{where}: {c!r} is not a class of the vocabulary")
        assert isinstance(colour_class, str)
        aliases = _mapping(d.get("colour_aliases", {}), f"{where}.colour_aliases")
        colour_words = {w for g in classes[str(colour_class)] for w in g}
        for a, target in aliases.items():
            if target not in colour_words:
                raise VocabularyError(f"{where}.colour_aliases.{a}: {target!r} is not a word of the colour class")
        slots = {s: _words(nouns, f"{where}.slots.{s}") for s, nouns in _named_list(d.get("slots"), "nouns", f"{where}.slots")}
        if not slots:
            raise VocabularyError(f"{where}.slots: no slot")
        phrase = _mapping(d.get("phrase", {}), f"{where}.phrase")
        bad = sorted(set(phrase) - {"tones", "garments", "modifiers", "extra"})
        if bad:
            raise VocabularyError(f"{where}.phrase: unknown field {bad[0]!r} (known: extra, garments, modifiers, tones)")
        parts = {k: _words(phrase.get(k, []), f"{where}.phrase.{k}", allow_empty=True) for k in ("tones", "garments", "modifiers", "extra")}
        name, description = d.get("name", ""), d.get("description", "")
        if not isinstance(name, str) or not isinstance(description, str):
            raise VocabularyError(f"{where}: name and description must be strings")
        return cls(name, classes, named, str(colour_class), {str(k): str(v) for k, v in aliases.items()}, slots,
                   parts["tones"], parts["garments"], parts["modifiers"], parts["extra"], description)


def _named_list(value: Any, field: str, where: str) -> list[tuple[str, Any]]:
    """[{"name": N, field: V}, ...] -> [(N, V), ...], names unique."""
    if not isinstance(value, list):
        raise VocabularyError(f"{where}: expected a list of {{\"name\": ..., \"{field}\": ...}} objects")
    out: list[tuple[str, Any]] = []
    for i, e in enumerate(value):
        if not isinstance(e, dict) or set(e) != {"name", field} or not isinstance(e["name"], str) or not e["name"]:
            raise VocabularyError(f"{where}[{i}]: expected {{\"name\": ..., \"{field}\": ...}}")
        if any(n == e["name"] for n, _ in out):
            raise VocabularyError(f"{where}: {e['name']!r} appears twice")
        out.append((e["name"], e[field]))
    return out


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VocabularyError(f"{where}: expected a JSON object")
    return value


def _words(value: Any, where: str, allow_empty: bool = False) -> tuple[str, ...]:
    """A list of lower-case words without spaces (what one token of a caption can be)."""
    if not isinstance(value, list) or (not value and not allow_empty):
        raise VocabularyError(f"{where}: expected a {'' if allow_empty else 'non-empty '}list of words")
    for w in value:
        if not isinstance(w, str) or not w or w != w.strip().lower() or " " in w:
            raise VocabularyError(f"{where}: {w!r} is not one lower-case word")
    return tuple(value)


def load_vocabulary(source: str | os.PathLike[str]) -> AttributeVocabulary:
    """A vocabulary from a JSON file, or a built-in one by name (``ufine-synth-1``)."""
    p = Path(source)
    if not p.suffix and (BUILTIN_DIR / f"{source}.json").is_file():
        p = BUILTIN_DIR / f"{source}.json"
    if not p.is_file():
        builtin = ", ".join(sorted(x.stem for x in BUILTIN_DIR.glob("*.json")))
        raise VocabularyError(f"{source}: no such vocabulary file or built-in vocabulary (built in: {builtin})")
    try:
        data = read_json(p, "a vocabulary file", limit=16 << 20)
    except UFineBenchError as exc:
        raise VocabularyError(str(exc)) from None
    return AttributeVocabulary.from_dict(data, str(p))


def dataset_vocabulary(annotation_file: str | os.PathLike[str]) -> Path | None:
    """The vocabulary a dataset ships beside its annotation file (``vocabulary.json``), or None."""
    p = Path(annotation_file).parent / VOCAB_FILE
    return p if p.is_file() else None


def legacy_vocabulary() -> AttributeVocabulary:
    """The vocabulary checkpoints written before vocabularies were stored in them were trained with."""
    return load_vocabulary(LEGACY_NAME)


def stored_vocabulary(meta: dict[str, Any]) -> AttributeVocabulary | None:
    """The vocabulary a checkpoint's run was trained with: ``meta["vocabulary"]`` (None: the run had
    none), or the legacy one for checkpoints written before vocabularies were stored (every such run
    read the legacy lexicon)."""
    if "vocabulary" not in meta:
        return legacy_vocabulary()
    raw = meta["vocabulary"]
    return None if raw is None else AttributeVocabulary.from_dict(raw, "checkpoint meta.json vocabulary")


def checkpoint_vocabulary(meta: dict[str, Any], head_outputs: int) -> AttributeVocabulary | None:
    """:func:`stored_vocabulary`, checked against the checkpoint's word head (``head_outputs``, 0: none).

    A head whose size fits neither the words nor words + pairs of the vocabulary is an error: its
    outputs would be read as other words.
    """
    vocab = stored_vocabulary(meta)
    if head_outputs <= 0:
        return vocab
    if vocab is None:
        raise VocabularyError("the checkpoint has a word head but no vocabulary")
    if head_outputs not in (vocab.n_groups, vocab.n_groups + vocab.n_pairs):
        raise VocabularyError(f"the checkpoint's word head has {head_outputs} outputs; its vocabulary {vocab.name!r} gives "
                              f"{vocab.n_groups} words (+ {vocab.n_pairs} pairs)")
    return vocab


__all__ = ["FORMAT", "VOCAB_FILE", "AttributeVocabulary", "VocabularyError", "checkpoint_vocabulary", "dataset_vocabulary",
           "legacy_vocabulary", "load_vocabulary", "stored_vocabulary"]
