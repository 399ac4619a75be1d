"""UFine-Synth's attribute vocabularies: the file every generated dataset ships as ``vocabulary.json``.

* ``ufine-synth-1`` (built in: ``ufinebench/vocab/ufine-synth-1.json``) is the classic language's
  (``--language classic``, the ``easy`` level), kept word for word so that checkpoints and figures made
  with it stay comparable, slips included ("dress" read as a top, "navy" only an alias of blue).
  :func:`uncovered_words` holds it against the classic generator's tables.
* ``ufine-synth-2`` (:func:`everyday_vocabulary`) is *generated* from the everyday language's tables
  (``language.WORDS``, training phrasings only: the held-out words stay unknown to whatever learns
  from it): each value's phrasings are split into words; a colour phrase's first word that is not a
  tone ("dark", "pale" go to ``tones``) joins its colour's group unless it names another colour
  ("blue" in "navy blue"), a garment phrase's head noun joins the group of its value, and groups that
  share a word merge. "navy" is a colour of its own and
  no top is called a dress.
"""

from __future__ import annotations

import re

from ufinebench.synth.attributes import COLOURS
from ufinebench.synth.describe import _COLOUR_SYN, _NOUN_SYN
from ufinebench.synth.language import COLOUR_WORDS, NOUN_WORDS, PATTERN_WORDS, PERSON_WORDS
from ufinebench.vocab import AttributeVocabulary, load_vocabulary

NAME = "ufine-synth-1"
EVERYDAY_NAME = "ufine-synth-2"
# the generator's garment types by the vocabulary's slot (record values, the keys of describe's noun synonyms)
SLOT_TYPES: dict[str, tuple[str, ...]] = {
    "top": ("t-shirt", "shirt", "sweater", "hoodie", "jacket", "coat", "vest"),
    "bottom": ("jeans", "trousers", "shorts", "skirt"),
    "shoes": ("sneakers", "leather shoes", "boots", "sandals"),
    "bag": ("backpack", "shoulder bag", "handbag"),
    "headwear": ("cap", "beanie", "hat"),
}
EVERYDAY_SLOT_TYPES: dict[str, tuple[str, ...]] = {
    **SLOT_TYPES, "top": ("t-shirt", "shirt", "sweater", "cardigan", "hoodie", "jacket", "parka", "coat", "vest"),
}
# words that stand before a colour word ("dark blue", "jet-black"), and words that name a kind, not a
# value ("shoes" in "running shoes", "bag" in "tote bag")
TONES = ("dark", "light", "pale", "deep", "bright", "jet", "mid", "sky", "off", "army", "grass", "coloured")
GENERIC = {"top": ("top",), "bottom": (), "shoes": ("shoes",), "bag": ("bag",), "headwear": ("hat",)}
_CLASSES_OF_WORDS = {  # the everyday language's other attribute words, by class: (values, their table, which word names it)
    "pattern": (("horizontal stripes", "vertical stripes", "checked", "floral", "polka-dot"), PATTERN_WORDS, "first"),
    "length": (("short", "long"), PERSON_WORDS, "last"),
    "hair style": (("curly", "straight"), PERSON_WORDS, "last"),
    "build": (("slim", "heavy"), PERSON_WORDS, "first"),
    "carried": (("phone", "umbrella", "book", "paper cup"), NOUN_WORDS, "last"),
}
_DIRECTIONS = ("horizontal", "vertical", "crosswise")


def synth_vocabulary(language: str = "classic") -> AttributeVocabulary:
    """The attribute vocabulary of UFine-Synth's captions in ``language`` (classic or everyday)."""
    return everyday_vocabulary() if language == "everyday" else load_vocabulary(NAME)


def _words(phrase: str) -> list[str]:
    return [w for w in re.split(r"[\s\-]+", phrase.lower()) if w and w not in ("a", "an", "of", "pair")]


def _merged(groups: list[list[str]]) -> list[list[str]]:
    """Groups that share a word become one (first appearance order kept)."""
    out: list[list[str]] = []
    for g in groups:
        hit = [o for o in out if set(o) & set(g)]
        if hit:
            keep = hit[0]
            for other in hit[1:]:
                keep += [w for w in other if w not in keep]
                out.remove(other)
            keep += [w for w in g if w not in keep]
        elif g:
            out.append(list(dict.fromkeys(g)))
    return out


def everyday_vocabulary() -> AttributeVocabulary:
    """``ufine-synth-2``, generated from the everyday language's training phrasings."""
    # a colour phrase's first word that is no tone; a word that is itself another colour's name ("blue" in
    # "navy blue", "green" in "olive green") belongs to that colour
    own = {c for c in COLOUR_WORDS if " " not in c}
    colour_groups = _merged([[w for p in COLOUR_WORDS[c][0] for w in [next(x for x in _words(p) if x not in TONES)]
                              if w == c or w not in own] for c in COLOUR_WORDS])
    classes: list[tuple[str, list[list[str]]]] = [("colour", colour_groups)]
    slots: list[tuple[str, list[str]]] = []
    modifiers: set[str] = {"long", "short", "sleeved", "sleeveless", "knee", "ankle", "length", "above", "full", "cropped", "open",
                           "unzipped", "-"}
    for slot, types in EVERYDAY_SLOT_TYPES.items():
        heads: list[list[str]] = []
        for t in types:
            group = []
            for phrase in NOUN_WORDS[t][0]:
                words = _words(phrase)
                modifiers.update(words[:-1])
                head = words[-1]
                if head in GENERIC[slot] and slot == "bag" and len(words) > 1 and words[-2] != "shoulder":
                    head = words[-2]  # "tote bag", "crossbody bag": the kind is the word before
                if head not in GENERIC[slot] or head == t:
                    if head == t or head not in types:  # "shirt" in "t-shirt" is the shirt's word
                        group.append(head)
            heads.append(group)
        groups = _merged(heads)
        classes.append((slot, groups))
        slots.append((slot, [w for g in groups for w in g] + list(GENERIC[slot])))
    for name, (values, table, which) in _CLASSES_OF_WORDS.items():
        pick = (lambda ws: [w for w in ws if w not in _DIRECTIONS][0]) if which == "first" else (lambda ws: ws[-1])
        groups = _merged([[pick(_words(p)) for p in table[v][0]] for v in values])
        classes.append((name, groups))
    classes += [("side", [["left"], ["right"]]), ("tone", [["light"], ["dark"]])]
    garments = [w for _, nouns in slots for w in nouns]
    modifiers -= set(garments) | {w for _, gs in classes[:1] for g in gs for w in g}
    d = {
        "format": "ufinebench-attribute-vocabulary/1", "name": EVERYDAY_NAME,
        "description": "UFine-Synth 2's everyday caption language (training phrasings; held-out 3C words excluded), generated "
                       "by ufinebench.synth.vocabulary.everyday_vocabulary from the generator's word tables.",
        "classes": [{"name": n, "groups": g} for n, g in classes],
        "named_classes": ["colour", "top", "bottom", "shoes", "bag", "headwear"],
        "colour_class": "colour", "colour_aliases": {},
        "slots": [{"name": n, "nouns": list(dict.fromkeys(ws))} for n, ws in slots],
        "phrase": {"tones": [t for t in TONES if t != "coloured"], "garments": list(dict.fromkeys(garments)),
                   "modifiers": sorted(modifiers), "extra": ["t"]},
    }
    return AttributeVocabulary.from_dict(d, EVERYDAY_NAME)


def uncovered_words(vocab: AttributeVocabulary) -> list[str]:
    """Words the classic generator writes that ``vocab`` cannot read: a colour name's colour word, or a
    garment phrase's head noun (its last word) missing from the slot it belongs to."""
    colours = set(vocab.phrase_colours)
    missing = []
    for name in COLOURS:
        if name not in _COLOUR_SYN and name not in ("black", "white", "blue", "light blue", "brown", "beige", "khaki", "red",
                                                      "dark red", "green", "olive", "yellow", "orange", "pink", "purple"):
            continue  # the everyday shades are not the classic language's
        for phrase in _COLOUR_SYN.get(name, (name,)):
            words = _words(phrase)
            if not colours & set(words):
                missing.append(f"colour {phrase!r}")
    for slot, types in SLOT_TYPES.items():
        nouns = set(vocab.slots.get(slot, ()))
        for t in types:
            for phrase in _NOUN_SYN.get(t, (t,)):
                if _words(phrase)[-1] not in nouns:
                    missing.append(f"{slot} {phrase!r}")
    return missing
