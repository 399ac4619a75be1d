"""Annotators who differ: captions that leave visible details out, and now and then get one wrong.

Real annotators each mention different details and sometimes misname a shade or a side. An
:class:`Annotator` edits what an image shows before a caption is written from it: each optional
detail group is left out with probability ``omit`` (times the style's own habit), and with
probability ``mistake`` one colour is said as a neighbouring shade ("dark blue" for black) or a bag's
side is swapped. The caption's ``mentions`` then say what the caption says; the build keeps what
was left out and the mistake (with the true value) in the caption's tags, so analysis can tell an
annotator's error from a model's miss. Draws come from the annotator's own generator, so a build
without annotators (``omit`` and ``mistake`` 0) writes exactly what it always wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ufinebench.synth.attributes import Record

# Details a caption may leave out, as groups that go together (a pattern's colour with the pattern).
# (Glasses and headwear are not among them: the caption writer reads their absence as "no glasses",
# "no hat", which would turn an omission into a false statement.)
OMITTABLE: tuple[tuple[str, ...], ...] = (
    ("hair_style",), ("upper_pattern", "pattern_color", "logo_text"), ("bag_side",), ("bag_label_color", "bag_label_text"), ("carried",),
    ("belt",), ("upper_sleeve",),
)
# A colour misnamed as its neighbour: the shades people confuse.
SHADES = {"black": "dark blue", "dark blue": "black", "gray": "white", "white": "gray", "blue": "light blue", "light blue": "blue",
          "red": "dark red", "dark red": "red", "brown": "beige", "beige": "khaki", "khaki": "beige", "green": "olive", "olive": "green",
          "pink": "purple", "purple": "pink", "orange": "yellow", "yellow": "orange"}
MISTAKE_SLOTS = ("upper_color", "lower_color", "outer_color", "shoes_color", "bag_color", "headwear_color", "bag_side")
STYLE_HABIT = {"annotator_a": 0.7, "annotator_b": 1.3}  # how much more or less than ``omit`` each training annotator leaves out


@dataclass(frozen=True)
class Annotator:
    """Omission and mistake rates of one caption's writer, and its own random stream."""

    omit: float
    mistake: float
    rng: np.random.Generator

    def edit(self, shown: Record, style: str) -> tuple[Record, dict[str, Any]]:
        """What this annotator will describe of ``shown`` (a visible record), and the notes: the slots
        left out and the mistake made ({"slot", "said", "true"}), if any."""
        out = dict(shown)
        rate = min(1.0, self.omit * STYLE_HABIT.get(style, 1.0))
        omitted = []
        for group in OMITTABLE:
            if group[0] in out and self.rng.random() < rate:
                for slot in group:
                    if out.pop(slot, None) is not None:
                        omitted.append(slot)
        notes: dict[str, Any] = {"omitted": omitted} if omitted else {}
        candidates = [s for s in MISTAKE_SLOTS if s in out and (s == "bag_side" or out[s] in SHADES)]
        if candidates and self.rng.random() < self.mistake:
            slot = candidates[int(self.rng.integers(len(candidates)))]
            true = out[slot]
            out[slot] = {"left": "right", "right": "left"}[true] if slot == "bag_side" else SHADES[true]
            notes["mistake"] = {"slot": slot, "said": out[slot], "true": true}
        return out, notes
