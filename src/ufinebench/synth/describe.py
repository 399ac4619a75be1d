"""Captions for UFine-Synth images: from an identity's record and what the image's view shows.

``visible(record, view)`` is the single source of truth for what a view shows; the renderer
draws exactly that, and captions describe only that, so every caption matches its image.

Granularity: ``fine`` (about 60-100 words, every visible detail), ``medium`` (30-50 words,
garments and colours), ``coarse`` (12-30 words, 3-5 salient attributes, CUHK-PEDES-like).
Styles: ``annotator_a`` and ``annotator_b`` (the two training annotators), ``cuhk`` (the coarse
training twin), and ``narrative``, ``witness``, ``terse``, ``colloquial`` (unseen in training).
Each caption comes with ``mentions``: the slots and values it states, in the record vocabulary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ufinebench.synth.attributes import Record

VIEWS = ("front", "back", "side")  # the classic (easy) views
QUARTER_VIEWS = ("front_quarter", "back_quarter")  # three-quarter views: turned halfway to the side (camera "varied")
ALL_VIEWS = VIEWS + QUARTER_VIEWS
FACE_VIEWS = ("front", "side", "front_quarter")  # the face (glasses) is seen
STYLES = ("annotator_a", "annotator_b", "cuhk", "narrative", "witness", "terse", "colloquial")
TRAIN_STYLES = ("annotator_a", "annotator_b")
GRANULARITY_WORDS = {"fine": (60, 100), "medium": (30, 50), "coarse": (12, 30)}


def visible(r: Record, view: str) -> Record:
    """The slots (with values) that an image from ``view`` shows; 'none' and N/A are left out.

    Three-quarter views: ``front_quarter`` shows what the front does, except a logo's letters
    (foreshortened: the logo and its colour show, not what it says); ``back_quarter`` shows what
    the back does, plus the object in the hand (the near hand is in sight).
    """
    inner_shown = view in ("front", "front_quarter") or r["outer"] in ("none", "vest")
    out: Record = {}

    def put(slot: str) -> None:
        v = r.get(slot)
        if v is not None and v != "none":
            out[slot] = v

    for s in ("gender", "age", "build", "skin", "hair_color", "hair_length", "headwear", "headwear_color"):
        put(s)
    if r["hair_style"] not in ("ponytail", "bun") or view != "front":  # a tied-back style shows unless head-on
        put("hair_style")
    if view in FACE_VIEWS:
        put("glasses")
    if inner_shown:
        for s in ("upper_type", "upper_color", "upper_sleeve"):
            put(s)
        if r["upper_pattern"] == "logo":
            if view in ("front", "front_quarter"):
                for key in ("upper_pattern", "pattern_color") + (("logo_text",) if view == "front" else ()):
                    put(key)
        elif r["upper_pattern"] != "plain":
            for key in ("upper_pattern", "pattern_color"):
                put(key)
    if r["outer"] not in ("none", "vest"):
        out.pop("upper_sleeve", None)  # sleeves of the inner layer are covered
    for s in ("outer", "outer_color", "lower_type", "lower_color", "lower_length", "shoes_type", "shoes_color", "sole_color"):
        put(s)
    if r["bag_type"] != "none":
        for key in ("bag_type", "bag_color"):
            put(key)
        if view != "side":
            put("bag_side")
        label_view = ("back", "back_quarter") if r["bag_type"] == "backpack" else ("front", "side", "front_quarter")
        if view in label_view:
            for key in ("bag_label_color", "bag_label_text"):
                put(key)
    if view in FACE_VIEWS or view == "back_quarter":
        put("carried")
    if view in FACE_VIEWS and r["outer"] != "coat":
        put("belt")
    for s in ("top_color", "lower_group", "has_bag"):  # coarse slots: visible from every view
        out[s] = r[s]
    return out


# --------------------------------------------------------------------------------------------
# Phrases: each returns (text, mentions)

_COLOUR_SYN = {"gray": ("gray", "grey"), "dark blue": ("dark blue", "navy", "navy blue"), "beige": ("beige", "cream-coloured")}
_NOUN_SYN = {
    "t-shirt": ("t-shirt", "T-shirt", "tee"),
    "shirt": ("shirt", "button-up shirt"),
    "sweater": ("sweater", "jumper", "knit sweater"),
    "hoodie": ("hoodie", "hooded sweatshirt"),
    "jacket": ("jacket",),
    "coat": ("coat", "long coat"),
    "vest": ("vest", "sleeveless vest"),
    "jeans": ("jeans", "denim jeans"),
    "trousers": ("trousers", "pants", "slacks"),
    "shorts": ("shorts",),
    "skirt": ("skirt",),
    "sneakers": ("sneakers", "trainers", "running shoes"),
    "leather shoes": ("leather shoes", "dress shoes"),
    "boots": ("boots", "ankle boots"),
    "sandals": ("sandals",),
    "backpack": ("backpack", "rucksack"),
    "shoulder bag": ("shoulder bag", "crossbody bag"),
    "handbag": ("handbag",),
    "cap": ("cap", "baseball cap"),
    "beanie": ("beanie", "knit hat"),
    "hat": ("hat", "brimmed hat"),
    "phone": ("a phone", "a mobile phone", "a smartphone"),
    "umbrella": ("a folded umbrella", "an umbrella"),
    "paper cup": ("a paper cup", "a takeaway cup"),
    "book": ("a book", "a notebook"),
}


def pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    """One of ``options``, uniformly (one draw of ``rng``): every caption writer's word choice."""
    return options[int(rng.integers(len(options)))]


class _Writer:
    """Phrase builders over one visible record, with a seeded choice of synonyms."""

    def __init__(self, vis: Record, rng: np.random.Generator, pose: str = "walking") -> None:
        self.v = vis
        self.rng = rng
        self.pose = pose

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return pick(self.rng, options)

    def col(self, c: str) -> str:
        return self.pick(_COLOUR_SYN.get(c, (c,)))

    def noun(self, n: str) -> str:
        return self.pick(_NOUN_SYN.get(n, (n,)))

    @property
    def he(self) -> str:
        return "she" if self.v.get("gender") == "woman" else "he"

    @property
    def his(self) -> str:
        return "her" if self.v.get("gender") == "woman" else "his"

    # --- slot groups ----------------------------------------------------------------------
    def person(self, detail: bool) -> tuple[str, dict]:
        v = self.v
        m = {"gender": v["gender"]}
        words = []
        if detail:
            build = {"average": "medium-built"}.get(v["build"], v["build"])
            words += [v["age"], build]
            m.update(age=v["age"], build=v["build"])
        noun = v["gender"]
        text = " ".join(words + [noun])
        if detail:
            text += f" with {v['skin']} skin"
            m["skin"] = v["skin"]
        return text, m

    def hair(self, detail: bool) -> tuple[str, dict]:
        v = self.v
        if v.get("hair_length") == "bald":
            return "a bald head", {"hair_length": "bald"}
        if "hair_length" not in v:
            return "", {}
        m = {"hair_length": v["hair_length"], "hair_color": v["hair_color"]}
        style = v.get("hair_style")
        if detail and style:
            m["hair_style"] = style
            if style in ("ponytail", "bun"):
                return f"{v['hair_length']} {v['hair_color']} hair tied in a {style}", m
            return f"{v['hair_length']} {style} {v['hair_color']} hair", m
        return f"{v['hair_length']} {v['hair_color']} hair", m

    def headwear(self) -> tuple[str, dict]:
        v = self.v
        if "headwear" not in v:
            return "", {}
        return _a(f"{self.col(v['headwear_color'])} {self.noun(v['headwear'])}"), {"headwear": v["headwear"], "headwear_color": v["headwear_color"]}

    def glasses(self) -> tuple[str, dict]:
        g = self.v.get("glasses")
        if not g:
            return "", {}
        return ("a pair of glasses" if g == "glasses" else "dark sunglasses"), {"glasses": g}

    def upper(self, detail: bool) -> tuple[str, dict]:
        v = self.v
        if "upper_type" not in v:
            return "", {}
        m = {"upper_type": v["upper_type"], "upper_color": v["upper_color"]}
        sleeve = ""
        if detail and "upper_sleeve" in v:
            sleeve = f"{v['upper_sleeve']}-sleeved "
            m["upper_sleeve"] = v["upper_sleeve"]
        text = _a(f"{self.col(v['upper_color'])} {sleeve}{self.noun(v['upper_type'])}")
        pat = v.get("upper_pattern")
        if detail and pat:
            m.update(upper_pattern=pat, pattern_color=v["pattern_color"])
            if pat == "logo" and "logo_text" not in v:  # seen at an angle: the letters cannot be read
                text += f" with {_a(self.col(v['pattern_color']))} logo on the chest"
            elif pat == "logo":
                m["logo_text"] = v["logo_text"]
                text += self.pick([
                    f" with {_a(self.col(v['pattern_color']))} logo reading '{v['logo_text']}' on the chest",
                    f" printed with the {self.col(v['pattern_color'])} letters '{v['logo_text']}' across the chest",
                ])
            elif pat == "checked":
                text += f" with {_a(self.col(v['pattern_color']))} checked pattern"
            else:
                text += f" with {self.col(v['pattern_color'])} {pat}"
        return text, m

    def outer(self, detail: bool) -> tuple[str, dict]:
        v = self.v
        if "outer" not in v:
            return "", {}
        openness = "open " if detail and v["outer"] != "vest" and self.rng.random() < 0.5 else ""
        text = _a(f"{openness}{self.col(v['outer_color'])} {self.noun(v['outer'])}")
        return text, {"outer": v["outer"], "outer_color": v["outer_color"]}

    def belt(self) -> tuple[str, dict]:
        b = self.v.get("belt")
        return (f"a {b}", {"belt": b}) if b else ("", {})

    def lower(self, detail: bool, article: bool = True) -> tuple[str, dict]:
        v = self.v
        m = {"lower_type": v["lower_type"], "lower_color": v["lower_color"]}
        length = ""
        if detail:
            length = f"{v['lower_length']} "
            m["lower_length"] = v["lower_length"]
        text = f"{length}{self.col(v['lower_color'])} {self.noun(v['lower_type'])}"
        if article and v["lower_type"] == "skirt":
            text = _a(text)
        return text, m

    def shoes(self, detail: bool) -> tuple[str, dict]:
        v = self.v
        m = {"shoes_type": v["shoes_type"], "shoes_color": v["shoes_color"]}
        text = f"{self.col(v['shoes_color'])} {self.noun(v['shoes_type'])}"
        if detail:
            m["sole_color"] = v["sole_color"]
            text += self.pick([f" with {self.col(v['sole_color'])} soles", f" with {self.col(v['sole_color'])} rubber soles"])
        return text, m

    def bag(self, detail: bool) -> tuple[str, dict]:
        v = self.v
        if "bag_type" not in v:
            return "", {}
        m = {"bag_type": v["bag_type"], "bag_color": v["bag_color"]}
        text = _a(f"{self.col(v['bag_color'])} {self.noun(v['bag_type'])}")
        if detail:
            if "bag_label_color" in v:
                m.update(bag_label_color=v["bag_label_color"], bag_label_text=v["bag_label_text"])
                text += f" with {_a(self.col(v['bag_label_color']))} label marked '{v['bag_label_text']}'"
            if "bag_side" in v:
                m["bag_side"] = v["bag_side"]
                if v["bag_type"] == "handbag":
                    text += f", held in {self.his} {v['bag_side']} hand"
                else:
                    text += f", worn on {self.his} {v['bag_side']} shoulder"
        return text, m

    def shoes_plain(self) -> tuple[str, dict]:
        return self.noun(self.v["shoes_type"]), {"shoes_type": self.v["shoes_type"]}

    def bag_plain(self) -> tuple[str, dict]:
        if "bag_type" not in self.v:
            return "", {}
        return _a(self.noun(self.v["bag_type"])), {"bag_type": self.v["bag_type"]}

    def carried(self) -> tuple[str, dict]:
        c = self.v.get("carried")
        return (self.noun(c), {"carried": c}) if c else ("", {})


def _a(phrase: str) -> str:
    """Prefix the right indefinite article."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _sentences(parts: list[str]) -> str:
    return " ".join(_cap(p.strip()) + ("" if p.rstrip().endswith((".", "!", "?")) else ".") for p in parts if p.strip())


# --------------------------------------------------------------------------------------------
# Compositions per style

_SEEN = {"front": "from the front", "back": "from behind", "side": "from the side",
         "front_quarter": "at an angle from the front", "back_quarter": "at an angle from behind"}
_POSE = {
    ("front", "walking"): "walking towards the camera",
    ("back", "walking"): "walking away from the camera",
    ("side", "walking"): "walking past the camera",
    ("front", "standing"): "standing and facing the camera",
    ("back", "standing"): "standing with the back to the camera",
    ("side", "standing"): "standing sideways to the camera",
    ("front_quarter", "walking"): "walking diagonally towards the camera",
    ("back_quarter", "walking"): "walking diagonally away from the camera",
    ("front_quarter", "standing"): "standing half turned towards the camera",
    ("back_quarter", "standing"): "standing half turned away from the camera",
}


def _elaborations(w: _Writer, view: str, pose: str, terse: bool) -> list[tuple[str, dict]]:
    """Optional sentences that add words about what the image shows (shuffled by the caller)."""
    v, he, his = w.v, w.he, w.his
    out: list[tuple[str, dict]] = []
    out.append((_POSE[(view, pose)] if terse else f"{he} is {_POSE[(view, pose)]}", {}))
    if terse:
        out.append((f"seen {_SEEN[view]}", {}))
    low = w.noun(v["lower_type"])
    plural = v["lower_type"] != "skirt"
    ends = {
        "ankle-length": "reach down to the ankles" if plural else "reaches down to the ankles",
        "cropped": "stop just above the ankles" if plural else "stops just above the ankles",
        "knee-length": "end at the knees" if plural else "ends at the knees",
        "above-knee": "end above the knees" if plural else "ends above the knees",
    }[v["lower_length"]]
    out.append((f"{low} {ends}" if terse else f"the {low} {ends}", {"lower_length": v["lower_length"], "lower_type": v["lower_type"]}))
    if "upper_sleeve" in v:
        text = "the sleeves are short and leave the forearms bare" if v["upper_sleeve"] == "short" else "the sleeves reach the wrists"
        out.append((text, {"upper_sleeve": v["upper_sleeve"]}))
    if v.get("hair_length") in ("long", "shoulder-length") and v.get("hair_style") not in ("ponytail", "bun"):
        text = "the hair falls past the shoulders" if v["hair_length"] == "long" else "the hair reaches down to the shoulders"
        out.append((text, {"hair_length": v["hair_length"]}))
    if "bag_type" not in v:
        out.append(("no bag" if terse else f"{he} does not carry any bag", {"bag_type": "none"}))
    if "headwear" not in v:
        out.append(("nothing on the head" if terse else f"{he} wears nothing on {his} head", {"headwear": "none"}))
    if view in FACE_VIEWS and "glasses" not in v:
        out.append(("no glasses" if terse else f"{he} is not wearing glasses", {"glasses": "none"}))
    if "sole_color" in v:
        soles = (f"{w.col(v['sole_color'])} soles clearly visible" if terse
                 else f"the {w.col(v['sole_color'])} soles of the {w.noun(v['shoes_type'])} are clearly visible")
        out.append((soles, {"sole_color": v["sole_color"], "shoes_type": v["shoes_type"]}))
    return out


def _pad(text: str, m: dict, extras: list[tuple[str, dict]], lo: int, hi: int, rng: np.random.Generator, terse: bool) -> tuple[str, dict]:
    """Append optional sentences (shuffled) until the caption reaches a length drawn from [lo, hi]."""
    target = int(rng.integers(lo, hi + 1))
    order = rng.permutation(len(extras))
    n = len(text.split())
    for k in order:
        if n >= target:
            break
        add, mm = extras[int(k)]
        n_add = len(add.split())
        if n + n_add > hi:
            continue
        if terse:
            text = text.rstrip(".") + "; " + add + "."
        else:
            text = text + " " + _sentences([add])
        m.update(mm)
        n += n_add
    return text, m


class _Mentions(dict):
    """The slots a caption states, collected while its phrases are written."""

    def take(self, phrase: tuple[str, dict]) -> str:
        self.update(phrase[1])
        return phrase[0]


def _fine(w: _Writer, style: str, view: str) -> tuple[str, dict]:
    m = _Mentions()
    take = m.take

    person = take(w.person(True))
    hair = take(w.hair(True))
    head = take(w.headwear())
    glasses = take(w.glasses())
    upper = take(w.upper(True))
    outer = take(w.outer(True))
    belt = take(w.belt())
    lower = take(w.lower(True))
    lower_bare = w.lower(True, article=False)[0]
    shoes = take(w.shoes(True))
    bag = take(w.bag(True))
    carried = take(w.carried())
    he, his = w.he, w.his
    seen = _SEEN[view]
    if style == "annotator_a":
        parts = [f"{_a(person)}{' and ' + hair if hair else ''}"]
        if head or glasses:
            parts.append(f"{he} wears {_join([head, glasses])}")
        top = _join([upper, f"{outer} over it" if outer and upper else outer])
        parts.append(f"{he} is dressed in {top}" + (f", with {belt} at the waist" if belt else ""))
        parts.append(f"{his} {lower_bare} and {shoes} complete the outfit")
        if bag:
            parts.append(f"{he} carries {bag}")
        if carried:
            parts.append(f"{he} is holding {carried}")
        parts.append(f"the picture shows {'her' if he == 'she' else 'him'} {seen}")
    elif style == "annotator_b":
        parts = [f"this {person} has {hair}" if hair else f"this is {_a(person)}"]
        if head or glasses:
            parts.append(f"on {his} head and face there is {_join([head, glasses])}")
        parts.append(f"the upper body is covered by {_join([outer, upper]) if outer else upper}")
        if belt:
            parts.append(f"{belt} is visible at the waist")
        parts.append(f"below that {he} wears {lower}, and on {his} feet are {shoes}")
        if bag:
            parts.append(f"{he} has {bag}")
        if carried:
            parts.append(f"in one hand {he} holds {carried}")
        parts.append(f"the person is seen {seen}")
    elif style == "narrative":
        parts = [f"{_a(person)}{' and ' + hair if hair else ''} walked past"]
        parts.append(f"{he} had on {_join([upper, outer])}" + (f" and {belt}" if belt else ""))
        if head or glasses:
            parts.append(f"{he} was wearing {_join([head, glasses])}")
        parts.append(f"{his} legs were in {lower}, and {he} wore {shoes}")
        if bag or carried:
            parts.append(f"{he} was carrying {_join([bag, carried])}")
    elif style == "witness":
        parts = [f"subject: {person}" + (f", {hair}" if hair else "")]
        if head or glasses:
            parts.append(f"head and face: {_join([head, glasses])}")
        parts.append(f"upper body: {_join([upper, outer])}" + (f"; {belt}" if belt else ""))
        parts.append(f"lower body: {lower}; footwear: {shoes}")
        if bag or carried:
            parts.append(f"carrying: {_join([bag, carried])}")
        parts.append(f"observed {seen}")
    elif style == "terse":
        bits = [person, hair, head, glasses, upper, outer, belt, lower, shoes, bag, carried]
        text = "; ".join(b for b in bits if b) + "."
        return _pad(_cap(text), m, _elaborations(w, view, w.pose, True), 60, 90, w.rng, True)
    else:  # colloquial
        parts = [f"so there's this {person}" + (f", {hair}" if hair else "")]
        parts.append(f"{he}'s got on {_join([upper, outer])}" + (f" and {belt}" if belt else ""))
        if head or glasses:
            parts.append(f"oh and {he}'s wearing {_join([head, glasses])}")
        parts.append(f"{lower} and {shoes}, pretty sure")
        if bag or carried:
            parts.append(f"{he} had {_join([bag, carried])} too")
    return _pad(_sentences(parts), m, _elaborations(w, view, w.pose, False), 66, 95, w.rng, False)


def _medium(w: _Writer, style: str, view: str) -> tuple[str, dict]:
    m = _Mentions()
    take = m.take

    person = take(w.person(False))
    hair = take(w.hair(False))
    upper = take(w.upper(False))
    outer = take(w.outer(False))
    lower = take(w.lower(False))
    shoes = take(w.shoes_plain())
    bag = take(w.bag_plain())
    he = w.he
    with_hair = f" with {hair}" if hair else ""
    terse = style == "terse"
    if terse:
        text = _cap("; ".join(b for b in (person, hair, upper, outer, lower, shoes, bag) if b) + ".")
    else:
        if style == "witness":
            parts = [f"subject: {person}{with_hair}", f"wearing {_join([upper, outer, lower, shoes])}"]
            if bag:
                parts.append(f"carrying {bag}")
        elif style == "colloquial":
            parts = [f"it's {_a(person)}{with_hair}", f"{he}'s wearing {_join([upper, outer])} with {lower}",
                     f"{he} had {shoes} on" + (f" and {bag}" if bag else "")]
        elif style == "narrative":
            parts = [f"{_a(person)}{with_hair} walked by in {_join([upper, outer])}",
                     f"{he} wore {lower} and {shoes}" + (f", carrying {bag}" if bag else "")]
        else:
            parts = [f"{_a(person)}{with_hair} wearing {_join([upper, outer])}",
                     f"{he} also wears {lower} and {shoes}" + (f" and carries {bag}" if bag else "")]
        text = _sentences(parts)
    extras = [e for e in _elaborations(w, view, w.pose, terse) if not set(e[1]) - {"lower_type", "lower_length", "hair_length", "upper_sleeve"}]
    return _pad(text, m, extras, 32, 48, w.rng, terse)


def _coarse(w: _Writer, style: str, view: str) -> tuple[str, dict]:
    """3-5 salient attributes in coarse words: gender, top colour, bottoms colour and kind, a bag."""
    v = w.v
    m: dict[str, Any] = {"top_color": v["top_color"], "lower_color": v["lower_color"], "lower_group": v["lower_group"]}
    gendered = w.rng.random() < 0.4  # CUHK-style texts often say just "the person"
    if gendered:
        m["gender"] = v["gender"]
    named_outer = v.get("outer") in ("jacket", "coat") and w.rng.random() < 0.15
    top_noun = w.noun(v["outer"]) if named_outer else w.pick(("top", "shirt", "upper garment"))
    if top_noun == "shirt" and (v.get("upper_type") != "shirt" or v.get("outer") in ("jacket", "coat")):
        top_noun = "top"
    top = _a(f"{w.col(v['top_color'])} {top_noun}")
    if named_outer:
        m["outer"] = v["outer"]
    group = v["lower_group"]
    low = {"pants": f"{w.col(v['lower_color'])} {w.pick(('pants', 'trousers'))}", "shorts": f"{w.col(v['lower_color'])} shorts",
           "skirt": _a(f"{w.col(v['lower_color'])} skirt")}[group]
    bag = ""
    if v["has_bag"] == "yes" and w.rng.random() < 0.2:
        bag = "a bag"
        m["has_bag"] = "yes"
    gender = v["gender"] if gendered else w.pick(("person", "pedestrian"))
    he = w.he if gendered else "the person"
    terse = style == "terse"
    if terse:
        text = _cap("; ".join(b for b in (gender, top, low, bag) if b) + ".")
    elif style == "witness":
        text = _sentences([f"subject is {_a(gender)} in {_join([top, low])}"] + ([f"has {bag}"] if bag else []))
    elif style == "colloquial":
        who = {"woman": "lady", "man": "guy"}.get(gender, "person")
        text = _sentences([f"some {who} in {_join([top, low])}" + (f", had {bag} I think" if bag else "")])
    elif style == "narrative":
        text = _sentences([f"{_a(gender)} in {_join([top, low])} walked by" + (f" with {bag}" if bag else "")])
    else:  # cuhk and the annotators
        text = _sentences([f"the {gender} is wearing {_join([top, low])}"] + ([f"{he} is carrying {bag}"] if bag else []))
    if terse:
        pose: list[tuple[str, dict[str, str]]] = [(_POSE[(view, w.pose)], {}), (f"seen {_SEEN[view]}", {})]
    else:
        pose = [(f"{he} is {_POSE[(view, w.pose)]}", {})]
    return _pad(text, m, pose, 14, 24, w.rng, terse)


def caption(
    record: Record, view: str, granularity: str, style: str, rng: np.random.Generator, pose: str = "walking",
    shown: Record | None = None,
) -> tuple[str, dict]:
    """One caption of an image of ``record`` seen from ``view`` in ``pose``; returns (text, mentions).

    ``shown``: what the writer describes, when not everything the view shows (an annotator who
    leaves details out or misnames one: ``synth.annotators``); default ``visible(record, view)``.
    """
    if view not in ALL_VIEWS:
        raise ValueError(f"unknown view {view!r}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}")
    if pose not in ("walking", "standing"):
        raise ValueError(f"unknown pose {pose!r}")
    w = _Writer(visible(record, view) if shown is None else shown, rng, pose)
    if granularity == "fine":
        return _fine(w, style, view)
    if granularity == "medium":
        return _medium(w, style, view)
    if granularity == "coarse":
        return _coarse(w, style, view)
    raise ValueError(f"unknown granularity {granularity!r}")
