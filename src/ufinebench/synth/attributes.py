"""UFine-Synth identities: structured attribute records drawn from a skewed street population.

Coarse attributes (gender, main garment colours and types) are drawn from skewed distributions
so that they collide across many people, as in real street scenes where black jackets and blue
jeans are everywhere. Fine details (stripe colours, logo letters, sole colour, bag label, hair
style, glasses, belt, carried object) separate them. The full record of every identity in a
dataset is unique (duplicates are redrawn).

A record maps slot names to values; ``None`` means "not applicable" (no bag -> no bag colour).
The same vocabulary is used by captions' ``mentions`` tags and ``identities.jsonl``.
"""

from __future__ import annotations

import json
import string
from typing import Any

import numpy as np

Record = dict[str, Any]

# Colour names and the RGB they are drawn with.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "dark blue": (30, 42, 84),
    "gray": (128, 128, 132),
    "white": (236, 236, 232),
    "blue": (52, 96, 186),
    "light blue": (150, 190, 228),
    "brown": (112, 74, 44),
    "beige": (214, 196, 160),
    "khaki": (170, 160, 110),
    "red": (190, 36, 40),
    "dark red": (116, 24, 32),
    "green": (48, 130, 66),
    "olive": (104, 110, 52),
    "yellow": (232, 200, 48),
    "orange": (232, 128, 36),
    "pink": (232, 150, 180),
    "purple": (112, 60, 140),
    # everyday shades (UFine-Synth 2, levels above easy: widen()); neighbours of the colours above
    "burgundy": (104, 26, 44),
    "charcoal": (62, 64, 68),
    "mustard": (196, 156, 40),
    "cream": (240, 228, 198),
    "teal": (28, 118, 118),
}
# Street clothing: dark and blue colours dominate.
CLOTHES = {
    "black": 0.42, "dark blue": 0.18, "gray": 0.10, "white": 0.09, "blue": 0.05, "brown": 0.03, "beige": 0.03,
    "red": 0.03, "khaki": 0.02, "green": 0.02, "light blue": 0.015, "olive": 0.01, "dark red": 0.01,
    "pink": 0.01, "purple": 0.01, "yellow": 0.0075, "orange": 0.0075,
}
TROUSERS = {"black": 0.44, "dark blue": 0.28, "blue": 0.13, "gray": 0.08, "khaki": 0.04, "brown": 0.02,
            "beige": 0.015, "white": 0.01, "olive": 0.005}
ACCENTS = {"white": 0.22, "red": 0.14, "black": 0.10, "yellow": 0.09, "blue": 0.09, "green": 0.08, "gray": 0.07,
           "orange": 0.06, "pink": 0.05, "light blue": 0.05, "purple": 0.05}
HAIR_RGB = {"black": (20, 18, 18), "brown": (92, 58, 34), "blonde": (214, 182, 110), "gray": (160, 160, 160),
            "red": (150, 60, 30)}
SKIN_RGB = {"light": (236, 204, 178), "medium": (198, 150, 110), "dark": (120, 80, 56)}

# Coarse, derived slots: what a CUHK-style caption says ("a black top", "dark pants", "a bag").
DERIVED_SLOTS = ("top_color", "lower_group", "has_bag")

SLOTS = (
    "gender", "age", "build", "skin", "hair_color", "hair_length", "hair_style", "headwear", "headwear_color",
    "glasses", "upper_type", "upper_color", "upper_sleeve", "upper_pattern", "pattern_color", "logo_text",
    "outer", "outer_color", "lower_type", "lower_color", "lower_length", "shoes_type", "shoes_color",
    "sole_color", "bag_type", "bag_color", "bag_side", "bag_label_color", "bag_label_text", "carried", "belt",
)


def _pick(rng: np.random.Generator, table: dict[str, float]) -> str:
    keys = list(table)
    p = np.asarray([table[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _letters(rng: np.random.Generator, lo: int = 2, hi: int = 3) -> str:
    n = int(rng.integers(lo, hi + 1))
    return "".join(rng.choice(list(string.ascii_uppercase), size=n))


def draw_identity(rng: np.random.Generator) -> Record:
    """One person's full attribute record."""
    r: Record = {s: None for s in SLOTS}
    r["gender"] = _pick(rng, {"man": 0.52, "woman": 0.48})
    woman = r["gender"] == "woman"
    r["age"] = _pick(rng, {"young": 0.45, "middle-aged": 0.4, "elderly": 0.15})
    r["build"] = _pick(rng, {"slim": 0.35, "average": 0.45, "heavy": 0.2})
    r["skin"] = _pick(rng, {"light": 0.45, "medium": 0.35, "dark": 0.2})
    hair_colours = {"black": 0.45, "brown": 0.27, "blonde": 0.1, "gray": 0.1, "red": 0.03}
    if r["age"] == "elderly":
        hair_colours = {"gray": 0.6, "black": 0.15, "brown": 0.15, "blonde": 0.1}
    r["hair_color"] = _pick(rng, hair_colours)
    r["hair_length"] = _pick(
        rng, {"short": 0.2, "shoulder-length": 0.3, "long": 0.5} if woman else {"short": 0.82, "shoulder-length": 0.1, "long": 0.03, "bald": 0.05}
    )
    if r["hair_length"] == "bald":
        r["hair_color"] = None
    elif r["hair_length"] == "short":
        r["hair_style"] = _pick(rng, {"straight": 0.7, "curly": 0.3})
    else:
        r["hair_style"] = _pick(rng, {"straight": 0.45, "curly": 0.15, "ponytail": 0.25, "bun": 0.15})
    r["headwear"] = _pick(rng, {"none": 0.78, "cap": 0.1, "beanie": 0.07, "hat": 0.05})
    if r["headwear"] != "none":
        r["headwear_color"] = _pick(rng, CLOTHES)
    r["glasses"] = _pick(rng, {"none": 0.72, "glasses": 0.2, "sunglasses": 0.08})
    r["upper_type"] = _pick(rng, {"t-shirt": 0.35, "shirt": 0.25, "sweater": 0.2, "hoodie": 0.2})
    r["upper_color"] = _pick(rng, CLOTHES)
    r["upper_sleeve"] = "long" if r["upper_type"] in ("sweater", "hoodie") else _pick(rng, {"short": 0.6, "long": 0.4})
    r["upper_pattern"] = _pick(rng, {"plain": 0.45, "horizontal stripes": 0.17, "vertical stripes": 0.1, "logo": 0.18, "checked": 0.1})
    if r["upper_pattern"] != "plain":
        r["pattern_color"] = _pick(rng, {k: v for k, v in ACCENTS.items() if k != r["upper_color"]})
    if r["upper_pattern"] == "logo":
        r["logo_text"] = _letters(rng)
    r["outer"] = _pick(rng, {"none": 0.45, "jacket": 0.3, "coat": 0.13, "vest": 0.12})
    if r["outer"] != "none":
        r["outer_color"] = _pick(rng, {k: v for k, v in CLOTHES.items() if k != r["upper_color"]})
    r["lower_type"] = _pick(
        rng, {"jeans": 0.4, "trousers": 0.3, "shorts": 0.1, "skirt": 0.2} if woman else {"jeans": 0.5, "trousers": 0.38, "shorts": 0.12}
    )
    r["lower_color"] = _pick(rng, TROUSERS if r["lower_type"] in ("jeans", "trousers") else CLOTHES)
    if r["lower_type"] == "jeans" and r["lower_color"] in ("khaki", "beige", "brown", "olive"):
        r["lower_color"] = "blue"
    r["lower_length"] = (
        _pick(rng, {"ankle-length": 0.8, "cropped": 0.2}) if r["lower_type"] in ("jeans", "trousers")
        else _pick(rng, {"knee-length": 0.55, "above-knee": 0.45})
    )
    r["shoes_type"] = _pick(rng, {"sneakers": 0.5, "leather shoes": 0.2, "boots": 0.15, "sandals": 0.15})
    r["shoes_color"] = _pick(rng, {"black": 0.45, "white": 0.25, "brown": 0.12, "gray": 0.08, "blue": 0.05, "red": 0.05})
    r["sole_color"] = _pick(rng, {"white": 0.45, "black": 0.3, "gray": 0.12, "brown": 0.07, "red": 0.06})
    r["bag_type"] = _pick(rng, {"none": 0.3, "backpack": 0.35, "shoulder bag": 0.22, "handbag": 0.13})
    if r["bag_type"] != "none":
        r["bag_color"] = _pick(rng, {**CLOTHES, "camouflage": 0.04})
        if r["bag_type"] != "backpack":  # a backpack sits on both shoulders
            r["bag_side"] = _pick(rng, {"left": 0.5, "right": 0.5})
        if rng.random() < 0.6:
            r["bag_label_color"] = _pick(rng, {k: v for k, v in ACCENTS.items() if k != r["bag_color"]})
            r["bag_label_text"] = _letters(rng, 1, 3)
    r["carried"] = _pick(rng, {"none": 0.6, "phone": 0.14, "umbrella": 0.1, "paper cup": 0.08, "book": 0.08})
    r["belt"] = "none" if r["lower_type"] == "skirt" else _pick(rng, {"none": 0.6, "black belt": 0.25, "brown belt": 0.15})
    r.update(derived(r))
    return r


# UFine-Synth 2's everyday population (levels above easy): some colours become a neighbouring
# everyday shade, some sweaters cardigans, some jackets parkas, some plain tops floral or polka-dot.
WIDER_SHADES = {"gray": ("charcoal", 0.35), "dark red": ("burgundy", 0.6), "yellow": ("mustard", 0.5), "beige": ("cream", 0.45),
                "green": ("teal", 0.4)}
WIDER_COLOUR_SLOTS = ("upper_color", "outer_color", "lower_color", "headwear_color", "bag_color", "shoes_color")
WIDER_PATTERNS = {"floral": 0.12, "polka-dot": 0.1}


def widen(r: Record, rng: np.random.Generator) -> Record:
    """``r`` in UFine-Synth 2's wider everyday population (a new record; ``r`` is left alone).

    The map only ever turns a value into one no record had before (charcoal only from gray, ...),
    so records that differed still differ."""
    w = dict(r)
    for slot in WIDER_COLOUR_SLOTS:
        c = w.get(slot)
        if c in WIDER_SHADES and rng.random() < WIDER_SHADES[c][1] and not (slot == "lower_color" and w["lower_type"] == "jeans"):
            w[slot] = WIDER_SHADES[c][0]
    if w["upper_type"] == "sweater" and rng.random() < 0.35:
        w["upper_type"] = "cardigan"
    if w["outer"] == "jacket" and rng.random() < 0.3:
        w["outer"] = "parka"
    if w["upper_pattern"] == "plain":
        u = rng.random()
        for pattern, p in WIDER_PATTERNS.items():
            if u < p:
                w["upper_pattern"] = pattern
                w["pattern_color"] = _pick(rng, {k: v for k, v in ACCENTS.items() if k != w["upper_color"]})
                break
            u -= p
    w.update(derived(w))
    return w


def derived(r: Record) -> Record:
    """The coarse slots, functions of the fine ones: outermost top colour, bottoms group, any bag."""
    top = r["outer_color"] if r["outer"] in ("jacket", "coat", "parka") else r["upper_color"]
    group = "pants" if r["lower_type"] in ("jeans", "trousers") else r["lower_type"]
    return {"top_color": top, "lower_group": group, "has_bag": "yes" if r["bag_type"] != "none" else "no"}


def record_key(r: Record) -> str:
    """Canonical text of a record, for uniqueness checks."""
    return json.dumps({k: r[k] for k in SLOTS}, sort_keys=True)  # derived slots add nothing


def draw_population(n: int, seed: int, wider: bool = False) -> list[Record]:
    """``n`` identities with pairwise different full records, deterministic in ``seed``; ``wider``:
    in UFine-Synth 2's everyday population (:func:`widen`, from a stream of its own, so the draws of
    the classic population stay as they were)."""
    rng = np.random.default_rng([seed, 0xA77])
    seen: set[str] = set()
    out: list[Record] = []
    while len(out) < n:
        r = draw_identity(rng)
        k = record_key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    if wider:
        out = [widen(r, np.random.default_rng([seed, 0xE5, i])) for i, r in enumerate(out)]
    return out


def consistent(record: Record, mentions: dict[str, Any]) -> bool:
    """Whether an identity's record agrees with every slot a caption mentions."""
    return all(record.get(slot) == value for slot, value in mentions.items())
