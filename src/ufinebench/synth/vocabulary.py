"""UFine-Synth's attribute vocabulary: the file every generated dataset ships as ``vocabulary.json``.

The vocabulary is the built-in ``ufine-synth-1`` (``ufinebench/vocab/ufine-synth-1.json``): the
attribute words of the captions and 3C styles this generator writes, in the order every UFine-Synth
run so far was trained with (a word head's outputs follow it). :func:`uncovered_words` holds it
against the generator's own tables (colour names and their synonyms, every garment, shoe, bag and
headwear noun a caption can use), so that a change to the caption language that the vocabulary does
not follow fails the tests instead of silently leaving words unread.
"""

from __future__ import annotations

import re

from ufinebench.synth.attributes import COLOURS
from ufinebench.synth.describe import _COLOUR_SYN, _NOUN_SYN
from ufinebench.vocab import AttributeVocabulary, load_vocabulary

NAME = "ufine-synth-1"
# the generator's garment types by the vocabulary's slot (record values, the keys of describe's noun synonyms)
SLOT_TYPES: dict[str, tuple[str, ...]] = {
    "top": ("t-shirt", "shirt", "sweater", "hoodie", "jacket", "coat", "vest"),
    "bottom": ("jeans", "trousers", "shorts", "skirt"),
    "shoes": ("sneakers", "leather shoes", "boots", "sandals"),
    "bag": ("backpack", "shoulder bag", "handbag"),
    "headwear": ("cap", "beanie", "hat"),
}


def synth_vocabulary() -> AttributeVocabulary:
    """The attribute vocabulary of UFine-Synth's captions."""
    return load_vocabulary(NAME)


def _words(phrase: str) -> list[str]:
    return [w for w in re.split(r"[\s\-]+", phrase.lower()) if w]


def uncovered_words(vocab: AttributeVocabulary) -> list[str]:
    """Words the generator writes that ``vocab`` cannot read: a colour name's colour word, or a
    garment phrase's head noun (its last word) missing from the slot it belongs to."""
    colours = set(vocab.phrase_colours)
    missing = []
    for name in COLOURS:
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
