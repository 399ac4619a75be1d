"""Sentence skeletons: how many different sentence frames a caption language really has.

A skeleton is a sentence with every attribute word (colours, garments, ages, lengths, ... in any of
the generator's phrasings, and the record values themselves) replaced by one placeholder, quoted
letter codes by another, and pronouns folded together: "She wears a navy hoodie with white
stripes." and "He wears a grey jumper with red pinstripes." share the skeleton
"<p> wears a <v> with <v>". The count says how many ways a language can say things; the issue that
asked for UFine-Synth 2 measured 175 in the classic language.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from ufinebench.synth.attributes import COLOURS, SLOTS
from ufinebench.synth.describe import _COLOUR_SYN, _NOUN_SYN
from ufinebench.synth.language import WORDS


def content_phrases() -> list[str]:
    """Every phrase the generators use for a value, longest first (so "navy blue" wins over "navy")."""
    out: set[str] = set(COLOURS) | {s.replace("_", " ") for s in SLOTS}
    for train, held in WORDS.values():
        out.update(train + held)
    for key, syns in {**_COLOUR_SYN, **_NOUN_SYN}.items():
        out.add(key)
        out.update(syns)
    out.update(WORDS)
    out.update(("blonde", "bald", "ponytail", "bun", "left", "right", "logo", "stripes", "checked", "vest", "coat", "belt",
                "short", "long", "sleeved", "soles", "rubber", "hair", "label", "tag", "patch", "letters", "skin", "complexion"))
    phrases = {p.lower().removeprefix("a ").removeprefix("an ") for p in out if p}
    return sorted(phrases, key=len, reverse=True)


_PRONOUNS = re.compile(r"\b(he|she|his|her|him|hers)\b")


class Skeletons:
    """Counts skeletons over many captions."""

    def __init__(self) -> None:
        alts = "|".join(re.escape(p) for p in content_phrases())
        self._content = re.compile(rf"(?<![\w-])({alts})(?![\w-])")
        self._runs = re.compile(r"<v>(?:[\s,-]*(?:and\s+)?<v>)+")
        self.counts: Counter[str] = Counter()

    def skeleton(self, sentence: str) -> str:
        s = sentence.strip().lower()
        s = re.sub(r"'[^']*'", "<code>", s)
        s = _PRONOUNS.sub("<p>", s)
        s = self._content.sub("<v>", s)
        s = self._runs.sub("<v>", s)
        return re.sub(r"\s+", " ", s).strip(" .;")

    def add(self, captions: Iterable[str]) -> None:
        for c in captions:
            for sent in re.split(r"(?<=[.;!?])\s+", c):
                if sent.strip():
                    self.counts[self.skeleton(sent)] += 1

    def summary(self, top: int = 50) -> dict[str, float]:
        """Distinct skeletons, sentences, and the share of sentences the ``top`` commonest cover."""
        total = sum(self.counts.values())
        covered = sum(n for _, n in self.counts.most_common(top))
        return {"skeletons": len(self.counts), "sentences": total, f"top{top}_share": covered / total if total else 0.0}
