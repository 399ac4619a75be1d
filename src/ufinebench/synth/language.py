"""UFine-Synth 2's everyday caption language: many phrasings, annotators with habits, held-out words.

The classic writer (``describe.py``) composes every caption from a few fixed sentence frames, so
that its captions reduce to under 200 sentence skeletons. This writer composes a caption from
*clauses*, one per group of slots (the person, hair, head, top, outer layer, belt, bottoms, shoes,
bag, carried object, pose), each with several phrasings, in an order that depends on who writes:

* **Training annotators** (:data:`PERSONAS`): each has a habitual order (head to toe, outfit first,
  what stands out first, feet up), a typical length (UFine6926's fine captions average 81 words),
  a habit of joining clauses into longer sentences, and favourite words among the synonyms of each
  value. Adjacent clauses swap now and then (free order).
* **Everyday words**: every value has several everyday phrasings (:data:`WORDS`: navy, charcoal,
  burgundy, cardigan, parka, chinos, loafers, tote, plaid, ...), and a *held-out* block of words that
  training captions never use and that only the 3C query styles write.
* **3C styles** (``narrative``, ``witness``, ``terse``, ``colloquial``) have phrase families of their
  own (:data:`STYLE_CLAUSES`, a noun phrase order "a hoodie in navy" the annotators never write) and
  reach for a held-out word half of the time.

Each caption comes with ``mentions`` (the slots and values it states, as in ``describe.caption``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ufinebench.synth.attributes import Record
from ufinebench.synth.describe import FACE_VIEWS, _a, pick

# value -> (training phrasings, held-out phrasings: only ever in 3C queries of the unseen styles)
COLOUR_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "black": (("black", "jet-black"), ("coal-black",)),
    "dark blue": (("navy", "navy blue", "dark blue"), ("midnight-blue",)),
    "gray": (("grey", "gray"), ("ash-grey",)),
    "white": (("white", "bright white"), ("chalk-white",)),
    "blue": (("blue", "mid-blue"), ("cobalt",)),
    "light blue": (("light blue", "pale blue", "sky-blue"), ("baby-blue",)),
    "brown": (("brown", "dark brown"), ("chocolate",)),
    "beige": (("beige", "sand-coloured"), ("fawn",)),
    "khaki": (("khaki", "tan"), ("camel",)),
    "red": (("red", "bright red"), ("scarlet",)),
    "dark red": (("dark red", "deep red"), ("wine-red",)),
    "green": (("green", "grass-green"), ("emerald",)),
    "olive": (("olive", "olive green", "army green"), ("moss-green",)),
    "yellow": (("yellow", "bright yellow"), ("lemon",)),
    "orange": (("orange",), ("tangerine",)),
    "pink": (("pink", "light pink"), ("rose",)),
    "purple": (("purple",), ("violet",)),
    "burgundy": (("burgundy", "maroon"), ("oxblood",)),
    "charcoal": (("charcoal", "charcoal grey"), ("graphite",)),
    "mustard": (("mustard", "mustard yellow"), ("ochre",)),
    "cream": (("cream", "off-white"), ("ivory",)),
    "teal": (("teal", "blue-green"), ("petrol-blue",)),
    "camouflage": (("camouflage", "camo"), ("army-print",)),
}
NOUN_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "t-shirt": (("t-shirt", "tee", "tee shirt"), ("crewneck",)),
    "shirt": (("shirt", "button-up shirt", "collared shirt"), ("button-down",)),
    "sweater": (("sweater", "jumper", "knit sweater"), ("pullover",)),
    "cardigan": (("cardigan", "button-up cardigan"), ("cardie",)),
    "hoodie": (("hoodie", "hooded sweatshirt"), ("hoody",)),
    "jacket": (("jacket", "zip-up jacket"), ("windbreaker",)),
    "parka": (("parka", "hooded parka"), ("anorak",)),
    "coat": (("coat", "long coat", "overcoat"), ("trenchcoat",)),
    "vest": (("vest", "sleeveless vest"), ("gilet",)),
    "jeans": (("jeans", "denim jeans"), ("denims",)),
    "trousers": (("trousers", "pants", "chinos"), ("slacks",)),
    "shorts": (("shorts",), ("bermudas",)),
    "skirt": (("skirt",), ("a-line skirt",)),
    "sneakers": (("sneakers", "trainers", "running shoes"), ("kicks",)),
    "leather shoes": (("leather shoes", "loafers", "dress shoes"), ("brogues",)),
    "boots": (("boots", "ankle boots"), ("booties",)),
    "sandals": (("sandals",), ("slides",)),
    "backpack": (("backpack", "rucksack"), ("knapsack",)),
    "shoulder bag": (("shoulder bag", "crossbody bag", "messenger bag"), ("satchel",)),
    "handbag": (("handbag", "tote bag", "tote"), ("purse",)),
    "cap": (("cap", "baseball cap"), ("ballcap",)),
    "beanie": (("beanie", "knit hat", "woolly hat"), ("toque",)),
    "hat": (("hat", "brimmed hat"), ("fedora",)),
    "glasses": (("glasses", "a pair of glasses", "spectacles"), ("specs",)),
    "sunglasses": (("sunglasses", "dark sunglasses"), ("shades",)),
    "phone": (("a phone", "a mobile phone", "a smartphone"), ("a cellphone",)),
    "umbrella": (("a folded umbrella", "an umbrella"), ("a brolly",)),
    "paper cup": (("a paper cup", "a takeaway cup", "a coffee cup"), ("a to-go cup",)),
    "book": (("a book", "a notebook"), ("a paperback",)),
    "black belt": (("black belt",), ("coal-black belt",)),
    "brown belt": (("brown belt", "brown leather belt"), ("chocolate belt",)),
}
PATTERN_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "horizontal stripes": (("horizontal stripes", "crosswise stripes"), ("breton stripes",)),
    "vertical stripes": (("vertical stripes", "pinstripes"), ("lengthwise stripes",)),
    "checked": (("checked pattern", "plaid pattern", "check pattern"), ("tartan",)),
    "floral": (("floral print", "flower print"), ("flowery pattern",)),
    "polka-dot": (("polka dots", "spots"), ("dotted pattern",)),
}
PERSON_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "woman": (("woman", "lady", "female"), ("gal",)),
    "man": (("man", "guy", "male"), ("fellow",)),
    "young": (("young", "youthful"), ("twentysomething",)),
    "middle-aged": (("middle-aged",), ("fortyish",)),
    "elderly": (("elderly", "older"), ("senior",)),
    "slim": (("slim", "thin", "slender"), ("skinny",)),
    "average": (("medium-built", "average-built"), ("regular-sized",)),
    "heavy": (("heavy-set", "heavy", "stocky"), ("chubby",)),
    "light": (("fair", "light"), ("pale",)),
    "medium": (("medium", "light brown"), ("honey-toned",)),
    "dark": (("dark", "deep brown"), ("ebony",)),
    "short": (("short",), ("close-cut",)),
    "shoulder-length": (("shoulder-length",), ("mid-length",)),
    "long": (("long",), ("flowing",)),
    "straight": (("straight",), ("sleek",)),
    "curly": (("curly",), ("frizzy",)),
    "ankle-length": (("ankle-length", "full-length"), ("floor-length",)),
    "cropped": (("cropped", "ankle-baring"), ("capri",)),
    "knee-length": (("knee-length",), ("mid-knee",)),
    "above-knee": (("above-knee", "short"), ("mini",)),
}
WORDS = {**COLOUR_WORDS, **NOUN_WORDS, **PATTERN_WORDS, **PERSON_WORDS}
ORDERS = {  # habitual clause orders
    "head-to-toe": ("person", "hair", "head", "upper", "outer", "belt", "lower", "shoes", "bag", "carried", "pose"),
    "outfit-first": ("person", "outer", "upper", "lower", "shoes", "belt", "bag", "carried", "hair", "head", "pose"),
    "salient-first": ("pose", "person", "bag", "outer", "upper", "lower", "shoes", "hair", "head", "carried", "belt"),
    "feet-up": ("person", "shoes", "lower", "belt", "upper", "outer", "bag", "carried", "head", "hair", "pose"),
}


@dataclass(frozen=True)
class Persona:
    """One simulated annotator's habits."""

    name: str
    order: str  # a key of ORDERS
    length: int  # typical words in a fine caption
    merge: float  # probability of joining a clause to the previous one in a single sentence
    favourite: int  # picks this annotator's favourite synonyms (a seed)


# annotator_a's pool first, then annotator_b's (the two captions of an image come one from each pool)
PERSONAS = (
    Persona("a1", "head-to-toe", 78, 0.2, 11), Persona("a2", "outfit-first", 92, 0.45, 12), Persona("a3", "salient-first", 70, 0.3, 13),
    Persona("a4", "feet-up", 85, 0.15, 14), Persona("b1", "head-to-toe", 88, 0.5, 21), Persona("b2", "salient-first", 76, 0.1, 22),
    Persona("b3", "outfit-first", 68, 0.3, 23), Persona("b4", "head-to-toe", 100, 0.35, 24),
)
POOL = {"annotator_a": PERSONAS[:4], "annotator_b": PERSONAS[4:]}
UNSEEN_STYLES = ("narrative", "witness", "terse", "colloquial")


class _Lex:
    """Word choices for one caption: the writer's favourite synonyms, held-out words for 3C styles."""

    def __init__(self, rng: np.random.Generator, persona: Persona | None, heldout: float) -> None:
        self.rng = rng
        self.persona = persona
        self.heldout = heldout

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return pick(self.rng, options)

    def word(self, value: str) -> str:
        """An everyday phrasing of a record value (held-out ones only when this writer may use them)."""
        train, held = WORDS.get(value, ((value,), ()))
        if held and self.heldout > 0 and self.rng.random() < self.heldout:
            return self.pick(held)
        if self.persona is not None and len(train) > 1:
            fav = (self.persona.favourite * 7 + sum(map(ord, value))) % len(train)
            if self.rng.random() < 0.6:  # a favourite, not a rule
                return train[fav]
        return self.pick(train)


def _article(noun_phrase: str, value: str) -> str:
    """An article for singular garments ("a navy hoodie"), none for plurals ("navy jeans")."""
    plural = value in ("jeans", "trousers", "shorts", "sneakers", "leather shoes", "boots", "sandals", "glasses", "sunglasses")
    if value in ("glasses", "sunglasses") or noun_phrase.startswith(("a ", "an ")):
        return noun_phrase
    return noun_phrase if plural else _a(noun_phrase)


@dataclass
class _Caption:
    """The writer's state: what it may say, its words, and what it has said (mentions)."""

    v: Record
    lex: _Lex
    style: str  # annotator_a / annotator_b (training register) or one of UNSEEN_STYLES
    mentions: dict[str, Any]

    @property
    def he(self) -> str:
        return "she" if self.v.get("gender") == "woman" else "he"

    @property
    def his(self) -> str:
        return "her" if self.v.get("gender") == "woman" else "his"

    def say(self, **slots: Any) -> None:
        self.mentions.update(slots)

    def colour(self, value: str) -> str:
        return self.lex.word(value)

    def garment(self, ctype: str, ccolour: str, mods: str = "") -> str:
        """A garment's noun phrase with its article: "a navy long-sleeved hoodie" (or, in the unseen
        styles only, "a long-sleeved hoodie in navy")."""
        noun = self.lex.word(ctype)
        col = self.colour(ccolour)
        if self.style in UNSEEN_STYLES and self.lex.rng.random() < 0.5:
            return _article(f"{mods}{noun} in {col}", ctype)
        if mods and self.lex.rng.random() < 0.5:
            return _article(f"{mods}{col} {noun}", ctype)
        return _article(f"{col} {mods}{noun}", ctype)


# Clause frames per group and register: {x} is the group's phrase, {He}/{he}/{His}/{his} the pronouns.
# The training register belongs to the annotators; each 3C style has frames of its own.
TRAIN_CLAUSES: dict[str, tuple[str, ...]] = {
    "person": ("{ax}", "the picture shows {ax}", "this is {ax}", "{ax} is in the image", "here we see {ax}",
               "the image captures {ax}", "the person is {ax}", "we can see {ax} in this photo"),
    "hair": ("{He} has {x}", "{He} has got {x}", "{He} wears {his} hair {y}", "{His} hair is {y}"),
    "head": ("{He} wears {x}", "{He} has {x} on", "{He} is wearing {x}", "{x} can be seen on {his} head"),
    "face": ("{He} wears {x}", "{He} has {x} on {his} face", "{He} is wearing {x}"),
    "upper": ("{He} is wearing {x}", "{He} wears {x}", "on top {he} has {x}", "{His} top is {x}", "{He} has on {x}",
              "{He} is dressed in {x}", "for the upper body {he} wears {x}"),
    "outer": ("over it {he} wears {x}", "{He} has {x} on top", "{He} has on {x}", "{He} wears {x} over {his} top",
              "on top of that is {x}", "{He} has put on {x}"),
    "outer_only": ("{He} is wearing {x}", "{He} wears {x}", "{He} is dressed in {x}", "{His} upper body is covered by {x}"),
    "belt": ("{He} wears {x}", "{x} can be seen at {his} waist", "around {his} waist is {x}", "{He} has {x} around {his} waist"),
    "lower": ("{He} is wearing {x}", "{His} bottoms are {x}", "on {his} legs are {x}", "below that {he} wears {x}",
              "{He} has {x} on", "{He} pairs this with {x}", "for the lower body {he} has {x}"),
    "shoes": ("{He} wears {x}", "on {his} feet are {x}", "{His} shoes are {x}", "{He} has {x} on {his} feet",
              "{He} walks in {x}", "{His} footwear is {x}"),
    "bag": ("{He} carries {x}", "{He} has {x}", "{x} hangs {y}", "{He} is carrying {x}", "there is {x} {y}"),
    "label": ("the bag has {x}", "on the bag there is {x}", "{x} is attached to the bag", "the bag carries {x}"),
    "carried": ("{He} holds {x}", "in {his} hand is {x}", "{He} is carrying {x}", "{He} has {x} in {his} hand"),
    "pose": ("{He} is {x}", "the photo was taken {y} as {he} is {x}", "{He} is {x}, seen {y}", "the camera sees {him} {y}"),
}
STYLE_CLAUSES: dict[str, dict[str, tuple[str, ...]]] = {
    "narrative": {
        "person": ("I noticed {ax}", "{ax} went by", "there was {ax}"), "hair": ("{He} had {x}",), "head": ("{He} had {x} on",),
        "face": ("{He} had {x} on",), "upper": ("{He} had on {x}", "{He} was in {x}"), "outer": ("{He} had {x} over it",),
        "outer_only": ("{He} had on {x}",), "belt": ("{He} had {x} on",), "lower": ("{His} legs were in {x}", "{He} was wearing {x}"),
        "shoes": ("{He} had {x} on", "{He} was walking in {x}"), "bag": ("{He} had {x} with {him}",), "label": ("it had {x}",),
        "carried": ("{He} had {x} in hand",), "pose": ("{He} was {x}",),
    },
    "witness": {
        "person": ("subject: {x}",), "hair": ("hair: {y}",), "head": ("headwear: {x}",), "face": ("eyewear: {x}",),
        "upper": ("top: {x}",), "outer": ("outerwear: {x}",), "outer_only": ("outerwear: {x}",), "belt": ("belt: {x}",),
        "lower": ("bottoms: {x}",), "shoes": ("footwear: {x}",), "bag": ("bag: {x}",), "label": ("bag marking: {x}",),
        "carried": ("in hand: {x}",), "pose": ("observed {x}",),
    },
    "terse": {g: ("{x}",) for g in TRAIN_CLAUSES},
    "colloquial": {
        "person": ("so there's {ax}", "ok so {ax}"), "hair": ("{he}'s got {x}",), "head": ("{he}'s rocking {x}",),
        "face": ("{he}'s got {x} on",), "upper": ("{he}'s got {x} on", "wearing like {x}"), "outer": ("plus {x} over that",),
        "outer_only": ("{he}'s in {x}",), "belt": ("and {x} I think",), "lower": ("{x} on the bottom",), "shoes": ("and {x}",),
        "bag": ("{he}'s lugging {x}",), "label": ("with {x}",), "carried": ("holding {x}",), "pose": ("{he} was {x}",),
    },
}
FILLERS = ("{He} seems to be on {his} way somewhere", "overall {he} is dressed casually", "nothing else stands out about {his} look",
           "the outfit looks neat", "{He} appears to be alone", "{His} clothes fit {him} well", "the colours of the outfit are easy to see",
           "{He} looks like an ordinary pedestrian", "the rest of the scene is unremarkable")
_SEEN = {"front": ("from the front", "head-on"), "back": ("from behind", "from the back"), "side": ("from the side", "in profile"),
         "front_quarter": ("at an angle from the front", "half turned towards us"),
         "back_quarter": ("at an angle from behind", "half turned away from us")}
_POSES = {("front", "walking"): ("walking towards the camera", "coming towards the camera"),
          ("back", "walking"): ("walking away from the camera", "heading away"),
          ("side", "walking"): ("walking past the camera", "walking across the frame"),
          ("front", "standing"): ("standing and facing the camera", "standing still, facing us"),
          ("back", "standing"): ("standing with {his} back to the camera", "standing still, facing away"),
          ("side", "standing"): ("standing sideways to the camera", "standing in profile"),
          ("front_quarter", "walking"): ("walking diagonally towards the camera", "coming towards the camera at an angle"),
          ("back_quarter", "walking"): ("walking diagonally away from the camera", "heading away at an angle"),
          ("front_quarter", "standing"): ("standing half turned towards the camera", "standing at an angle to the camera"),
          ("back_quarter", "standing"): ("standing half turned away from the camera", "standing with {his} back half to the camera")}


def _frame(c: _Caption, group: str) -> str:
    frames = STYLE_CLAUSES[c.style][group] if c.style in STYLE_CLAUSES else TRAIN_CLAUSES[group]
    return c.lex.pick(frames)


def _fill(c: _Caption, frame: str, x: str = "", y: str = "") -> str:
    him = "her" if c.he == "she" else "him"
    ax = _a(x) if x and not x.startswith(("a ", "an ")) else x
    text = frame.format(x=x, y=y, ax=ax, He=c.he.capitalize(), he=c.he, His=c.his.capitalize(), his=c.his, him=him)
    return text.replace("{his}", c.his)


def _person(c: _Caption, detail: bool) -> str:
    v, w = c.v, c.lex.word
    c.say(gender=v["gender"])
    noun = w(v["gender"])
    if not detail:
        return _fill(c, _frame(c, "person"), x=noun)
    c.say(age=v["age"], build=v["build"], skin=v["skin"])
    age, build, skin = w(v["age"]), w(v["build"]), w(v["skin"])
    frame = {"slim": "slim", "average": "medium", "heavy": "heavy"}[v["build"]]  # "of medium build"
    x = c.lex.pick((f"{age} {build} {noun} with {skin} skin", f"{build} {age} {noun} with a {skin} complexion",
                    f"{age} {noun}, {build}, with {skin} skin", f"{age} {noun} of {frame} build and {skin} skin"))
    return _fill(c, _frame(c, "person"), x=x)


def _hair(c: _Caption, detail: bool) -> str:
    v, w = c.v, c.lex.word
    if v.get("hair_length") == "bald":
        c.say(hair_length="bald")
        return _fill(c, _frame(c, "hair"), x="a bald head", y="shaved off") if c.style != "witness" else "hair: none, bald"
    if "hair_length" not in v:
        return ""
    c.say(hair_length=v["hair_length"], hair_color=v["hair_color"])
    length, col = w(v["hair_length"]), c.colour(v["hair_color"])
    style = v.get("hair_style") if detail else None
    if style:
        c.say(hair_style=style)
    if style in ("ponytail", "bun"):
        tie = c.lex.pick((f"tied in a {style}", f"pulled back into a {style}", f"gathered in a {style}"))
        return _fill(c, _frame(c, "hair"), x=f"{length} {col} hair {tie}", y=f"{length}, {col} and {tie}")
    if style:
        st = w(style)
        x = c.lex.pick((f"{length} {st} {col} hair", f"{col} hair that is {length} and {st}", f"{st}, {length} {col} hair"))
        return _fill(c, _frame(c, "hair"), x=x, y=f"{length}, {st} and {col}")
    return _fill(c, _frame(c, "hair"), x=f"{length} {col} hair", y=f"{length} and {col}")


def _head(c: _Caption) -> list[str]:
    v, out = c.v, []
    if "headwear" in v:
        c.say(headwear=v["headwear"], headwear_color=v["headwear_color"])
        out.append(_fill(c, _frame(c, "head"), x=c.garment(v["headwear"], v["headwear_color"])))
    if "glasses" in v:
        c.say(glasses=v["glasses"])
        out.append(_fill(c, _frame(c, "face"), x=c.lex.word(v["glasses"])))
    return out


def _upper(c: _Caption, detail: bool) -> str:
    v = c.v
    if "upper_type" not in v:
        return ""
    c.say(upper_type=v["upper_type"], upper_color=v["upper_color"])
    mods = ""
    if detail and "upper_sleeve" in v:
        c.say(upper_sleeve=v["upper_sleeve"])
        mods = f"{v['upper_sleeve']}-sleeved "
    x = c.garment(v["upper_type"], v["upper_color"], mods)
    pat = v.get("upper_pattern") if detail else None
    if pat == "logo" and "logo_text" not in v:  # seen at an angle: the letters cannot be read
        c.say(upper_pattern="logo", pattern_color=v["pattern_color"])
        pc = c.colour(v["pattern_color"])
        x += c.lex.pick((f" with {_a(pc)} logo on the chest", f" with a small {pc} logo on the front", f" with some {pc} lettering on the chest"))
    elif pat == "logo":
        c.say(upper_pattern="logo", pattern_color=v["pattern_color"], logo_text=v["logo_text"])
        pc, t = c.colour(v["pattern_color"]), v["logo_text"]
        x += c.lex.pick((f" with {_a(pc)} logo reading '{t}' on the chest", f" printed with the {pc} letters '{t}' across the chest",
                         f" that says '{t}' in {pc} letters on the front", f" with '{t}' written on the chest in {pc}"))
    elif pat:
        c.say(upper_pattern=pat, pattern_color=v["pattern_color"])
        pc, pw = c.colour(v["pattern_color"]), c.lex.word(pat)
        x += c.lex.pick((f" with {pc} {pw}", f" covered in {pc} {pw}", f" with {_a(pc)} {pw}" if pw.endswith(("pattern", "print")) else
                         f" decorated with {pc} {pw}"))
    return _fill(c, _frame(c, "upper"), x=x)


def _outer(c: _Caption, detail: bool, first: bool = False) -> str:
    """The outer layer; ``first``: said before the top, so in frames that do not point back to it."""
    v = c.v
    if "outer" not in v:
        return ""
    c.say(outer=v["outer"], outer_color=v["outer_color"])
    mods = c.lex.pick(("open ", "unzipped ", "")) if detail and v["outer"] != "vest" else ""
    x = c.garment(v["outer"], v["outer_color"], mods)
    return _fill(c, _frame(c, "outer" if "upper_type" in v and not first else "outer_only"), x=x)


def _belt(c: _Caption) -> str:
    if "belt" not in c.v:
        return ""
    c.say(belt=c.v["belt"])
    return _fill(c, _frame(c, "belt"), x=_a(c.lex.word(c.v["belt"])))


def _lower(c: _Caption, detail: bool) -> str:
    v = c.v
    c.say(lower_type=v["lower_type"], lower_color=v["lower_color"])
    mods = ""
    if detail:
        c.say(lower_length=v["lower_length"])
        mods = c.lex.word(v["lower_length"]) + " "
    return _fill(c, _frame(c, "lower"), x=c.garment(v["lower_type"], v["lower_color"], mods))


def _shoes(c: _Caption, detail: bool) -> str:
    v = c.v
    if "shoes_type" not in v:
        return ""
    c.say(shoes_type=v["shoes_type"], shoes_color=v["shoes_color"])
    x = c.garment(v["shoes_type"], v["shoes_color"])
    if detail and "sole_color" in v:
        c.say(sole_color=v["sole_color"])
        sc = c.colour(v["sole_color"])
        x += c.lex.pick((f" with {sc} soles", f" with {sc} rubber soles", f" whose soles are {sc}"))
    return _fill(c, _frame(c, "shoes"), x=x)


def _bag(c: _Caption, detail: bool) -> list[str]:
    v = c.v
    if "bag_type" not in v:
        return []
    c.say(bag_type=v["bag_type"], bag_color=v["bag_color"])
    x, where = c.garment(v["bag_type"], v["bag_color"]), ""
    if detail and "bag_side" in v:
        c.say(bag_side=v["bag_side"])
        side = v["bag_side"]
        where = (c.lex.pick((f"in {c.his} {side} hand", f"from {c.his} {side} hand")) if v["bag_type"] == "handbag"
                 else c.lex.pick((f"on {c.his} {side} shoulder", f"over {c.his} {side} shoulder")))
    elif v["bag_type"] == "backpack":
        where = c.lex.pick(("on " + c.his + " back", "on both shoulders"))
    frame = _frame(c, "bag")
    out = [_fill(c, frame, x=x, y=where or f"by {c.his} side")]
    if where and "{y}" not in frame:
        out[0] += f" {where}"
    if detail and "bag_label_color" in v:
        c.say(bag_label_color=v["bag_label_color"], bag_label_text=v["bag_label_text"])
        lc, t = c.colour(v["bag_label_color"]), v["bag_label_text"]
        out.append(_fill(c, _frame(c, "label"), x=c.lex.pick((f"{_a(lc)} label marked '{t}'", f"{_a(lc)} tag with the letters '{t}'",
                                                              f"{_a(lc)} patch reading '{t}'"))))
    return out


def _carried(c: _Caption) -> str:
    if "carried" not in c.v:
        return ""
    c.say(carried=c.v["carried"])
    return _fill(c, _frame(c, "carried"), x=c.lex.word(c.v["carried"]))


def _pose(c: _Caption, view: str, pose: str) -> str:
    x = c.lex.pick(_POSES[(view, pose)]).replace("{his}", c.his)
    return _fill(c, _frame(c, "pose"), x=x, y=c.lex.pick(_SEEN[view]))


def _extras(c: _Caption, view: str) -> list[str]:
    """Sentences a writer may add to reach the length it writes: what is absent, what the garments
    look like in more words, and remarks that name nothing (real captions carry those too)."""
    v, he, his = c.v, c.he.capitalize(), c.his
    out: list[tuple[str, dict[str, Any]]] = []
    if "bag_type" not in v:
        out.append((c.lex.pick((f"{he} does not carry a bag", f"{he} has no bag with {'her' if c.he == 'she' else 'him'}",
                                "there is no bag")), {"bag_type": "none"}))
    if "headwear" not in v:
        out.append((c.lex.pick((f"{he} wears nothing on {his} head", f"{he} is not wearing a hat", f"{his} head is uncovered")),
                    {"headwear": "none"}))
    if view in FACE_VIEWS and "glasses" not in v:
        out.append((c.lex.pick((f"{he} is not wearing glasses", f"{he} has no glasses on")), {"glasses": "none"}))
    if "upper_sleeve" in v:
        out.append((c.lex.pick(("the sleeves are short and leave the forearms bare", f"{his} arms are bare below the elbow"))
                    if v["upper_sleeve"] == "short" else c.lex.pick(("the sleeves reach the wrists", f"{his} arms are covered to the wrists")),
                    {"upper_sleeve": v["upper_sleeve"]}))
    if "sole_color" in v:
        out.append((f"the {c.colour(v['sole_color'])} soles are easy to see", {"sole_color": v["sole_color"]}))
    if v.get("hair_length") in ("long", "shoulder-length") and v.get("hair_style") not in ("ponytail", "bun"):
        out.append(("the hair falls past the shoulders" if v["hair_length"] == "long" else "the hair reaches the shoulders",
                    {"hair_length": v["hair_length"]}))
    picked: list[str] = []
    for text, m in out:
        if c.lex.rng.random() < 0.7:
            c.say(**m)
            picked.append(text)
    picked += [_fill(c, f) for f in c.lex.rng.permutation(FILLERS)[: int(c.lex.rng.integers(1, 4))]]
    return picked


def _order(persona: Persona | None, groups: list[str], rng: np.random.Generator) -> list[str]:
    """The writer's habitual order, with adjacent clauses swapped now and then (free order)."""
    base = ORDERS[persona.order] if persona is not None else ORDERS[("head-to-toe", "outfit-first")[int(rng.integers(2))]]
    seq = [g for g in base if g in groups]
    for i in range(len(seq) - 1):
        if rng.random() < 0.2 and "person" not in (seq[i], seq[i + 1]):
            seq[i], seq[i + 1] = seq[i + 1], seq[i]
    return seq


def _assemble(clauses: list[str], style: str, merge: float, rng: np.random.Generator) -> str:
    """Clauses into text: sentences (joined in pairs with the writer's habit), a terse list, or a form."""
    clauses = [x.strip() for x in clauses if x.strip()]
    if style == "terse":
        return "; ".join(clauses) + "."
    if style == "witness":
        return " ".join(x[:1].upper() + x[1:] + "." for x in clauses)
    sentences: list[str] = []
    for x in clauses:
        if sentences and rng.random() < merge and len(sentences[-1].split()) < 22:
            sentences[-1] += rng.choice([", and ", "; ", " and ", ", and also "]) + x[:1].lower() + x[1:]
        else:
            sentences.append(x)
    return " ".join(x[:1].upper() + x[1:] + "." for x in sentences)


def write(
    shown: Record, view: str, pose: str, granularity: str, style: str, rng: np.random.Generator, persona: Persona | None = None,
) -> tuple[str, dict[str, Any]]:
    """One caption of what ``shown`` (an annotator's view of an image) says, in the everyday language.

    ``style``: ``annotator_a`` / ``annotator_b`` (the training register, written by ``persona``) or one
    of :data:`UNSEEN_STYLES` (their own frames, held-out words half of the time). Returns
    (text, mentions)."""
    c = _Caption(shown, _Lex(rng, persona, 0.5 if style in UNSEEN_STYLES else 0.0), style, {})
    if granularity == "coarse":
        return _coarse(c, view, pose), c.mentions
    detail = granularity == "fine"
    parts: dict[str, list[str]] = {
        "person": [_person(c, detail)], "hair": [_hair(c, detail)], "upper": [_upper(c, detail)], "outer": [_outer(c, detail)],
        "lower": [_lower(c, detail)], "shoes": [_shoes(c, detail)], "bag": _bag(c, detail),
    }
    if detail:
        parts.update(head=_head(c), belt=[_belt(c)], carried=[_carried(c)], pose=[_pose(c, view, pose)])
    order = _order(persona, [g for g, xs in parts.items() if any(xs)], rng)
    if "outer" in order and "upper" in order and order.index("outer") < order.index("upper"):
        parts["outer"] = [_outer(c, detail, first=True)]
    clauses = [x for g in order for x in parts[g] if x]
    if detail and style not in ("terse", "witness"):
        target = (persona.length if persona is not None else 80) + int(rng.normal(0, 12))
        extras = _extras(c, view)
        n = sum(len(x.split()) for x in clauses)
        for e in extras:
            if n >= target:
                break
            clauses.insert(int(rng.integers(2, len(clauses) + 1)), e)
            n += len(e.split())
    merge = persona.merge if persona is not None else 0.3
    return _assemble(clauses, style, merge, rng), c.mentions


def _coarse(c: _Caption, view: str, pose: str) -> str:
    """3-5 salient attributes in coarse words (CUHK-PEDES-like): the top's colour, the bottoms, maybe
    the gender and a bag."""
    v, rng = c.v, c.lex.rng
    c.say(top_color=v["top_color"], lower_color=v["lower_color"], lower_group=v["lower_group"])
    gendered = rng.random() < 0.5
    who = c.lex.word(v["gender"]) if gendered else c.lex.pick(("person", "pedestrian"))
    if gendered:
        c.say(gender=v["gender"])
    top = _a(f"{c.colour(v['top_color'])} {c.lex.pick(('top', 'upper garment', 'top layer'))}")
    low = {"pants": c.lex.pick(("pants", "trousers")), "shorts": "shorts", "skirt": "skirt"}[v["lower_group"]]
    low = _article(f"{c.colour(v['lower_color'])} {low}", "skirt" if low == "skirt" else "trousers")
    bag = ""
    if v["has_bag"] == "yes" and rng.random() < 0.3:
        bag = "a bag"
        c.say(has_bag="yes")
    frames = {"narrative": "{ax} in {t} and {l} walked by", "witness": "subject: {w}; {t}; {l}", "terse": "{w}; {t}; {l}",
              "colloquial": "some {w} in {t} and {l}"}
    frame = frames.get(c.style) or rng.choice(["{ax} wearing {t} and {l}", "the {w} is dressed in {t} and {l}",
                                               "{ax} with {t} and {l}", "this {w} has on {t} and {l}"])
    text = frame.format(ax=_a(who), w=who, t=top, l=low)
    if bag:
        text += f", with {bag}" if c.style in ("narrative", "witness", "terse") else c.lex.pick((f" and carries {bag}", f", with {bag}"))
    if gendered and rng.random() < 0.5 and c.style not in ("terse", "witness"):
        said = _pose(c, view, pose)
        text += ". " + said[:1].upper() + said[1:]
    return text[:1].upper() + text[1:] + "."
