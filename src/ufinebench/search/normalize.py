"""Query normalisation: read a freely written description with the words a word-level model knows.

A model trained from scratch with a word vocabulary (``data.tokenizer: word``) knows only the words
of its training captions; anything else becomes ``<|unk|>``. People describing someone they saw use
their own words ("girl", "blond", "striped", "chubby", "shades", "in her twenties"), so a search
service that passes them through raw throws away half of what they said. :class:`QueryNormalizer`
replaces each *unknown* word, and only unknown words, by the nearest thing the vocabulary has:

1. ages written as numbers ("30-year-old", "in his 50s", "around fifty") -> young / middle aged / elderly;
2. a table of common English variants for describing people (gender and age nouns, builds, colour
   names, garments, shoes, bags, patterns, glasses), written from general usage for this purpose;
   a few filler words map to nothing;
3. inflections: plural / singular, -ed / -ing / -ish forms ("carrying" -> "carry", "striped" -> "stripes");
4. one-letter typos of words of five to twenty letters ("jaket" -> "jacket", "blond" -> "blonde"; a
   longer string is no word, and its candidates would cost memory: left as it is).

A word with no known replacement stays as it was (the tokenizer reads it as ``<|unk|>``). Every
replacement is reported, so the search page can show how the query was read. Only queries are
normalised (search and the web service): training captions and evaluation queries are read as they
are, so the figures ``ufinebench eval`` prints measure the model alone.

These are tables of general English for describing people, written for any word-level model; the
attribute words that training and the re-ranker's check read are a dataset's own, in a vocabulary
file (:mod:`ufinebench.vocab`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

# word -> replacements to try in order (space-separated words; "" drops the word). Lower case.
_GROUPS: dict[str, tuple[str, ...]] = {
    # people
    "man": ("guy", "guys", "dude", "bloke", "fellow", "fella", "gentleman", "gent", "male", "men", "sir", "mister", "mr"),
    "young man": ("boy", "lad", "schoolboy", "youngster"),
    "woman": ("lady", "ladies", "female", "women", "gal", "madam", "mrs", "ms", "miss"),
    "young woman": ("girl", "schoolgirl", "lass"),
    "young": ("teen", "teens", "teenager", "teenage", "teenaged", "youth", "youthful", "twenties", "thirties", "twentysomething", "student"),
    "middle aged": ("middleaged", "forties", "fifties", "midlife"),
    "elderly": ("old", "older", "senior", "aging", "ageing", "sixties", "seventies", "eighties", "nineties", "retired", "pensioner"),
    "elderly woman": ("grandma", "grandmother", "granny"),
    "elderly man": ("grandpa", "grandfather", "granddad"),
    "person": ("pedestrian", "individual", "someone", "somebody", "figure", "subject", "people", "adult"),
    # build
    "heavy": ("big", "fat", "chubby", "plump", "stocky", "overweight", "heavyset", "stout", "portly", "burly", "bulky",
              "obese", "rotund", "chunky", "husky", "beefy", "hefty", "curvy"),
    "slim": ("thin", "skinny", "slender", "lean", "petite", "lanky", "svelte", "trim", "skinnier", "thinner"),
    "medium": ("average", "normal", "regular"),
    # hair
    "blonde": ("blond", "blondish", "platinum"),
    "brown": ("brunette", "chestnut", "hazel", "tan", "brownish"),
    "curly": ("wavy", "frizzy", "afro", "curls", "permed", "coiled"),
    "short": ("buzzed", "buzz", "shaved", "shaven", "bob", "pixie", "mini"),
    "long": ("maxi",),
    "ponytail": ("pony", "pigtail", "pigtails"),
    "bun": ("topknot", "chignon"),
    # colours
    "beige": ("camel", "sand", "sandy", "taupe", "nude", "stone", "oatmeal", "fawn"),
    "dark red": ("maroon", "burgundy", "wine", "oxblood", "claret"),
    "red": ("crimson", "scarlet", "cherry", "ruby", "ginger", "auburn", "redhead", "reddish", "rust", "brick"),
    "purple": ("violet", "lilac", "lavender", "mauve", "plum", "magenta", "purplish"),
    "pink": ("fuchsia", "rose", "salmon", "coral", "blush", "pinkish"),
    "light blue": ("turquoise", "teal", "aqua", "cyan", "azure", "sky", "powder"),
    "dark blue": ("indigo", "midnight", "cobalt", "royal", "sapphire"),
    "blue": ("bluish", "blueish"),
    "yellow": ("gold", "golden", "mustard", "lemon", "yellowish", "amber"),
    "grey": ("silver", "ash", "slate", "grayish", "greyish", "heather", "gunmetal"),
    "dark grey": ("charcoal", "graphite", "anthracite"),
    "green": ("lime", "emerald", "mint", "forest", "sage", "jade", "greenish", "moss"),
    "light": ("pale", "pastel"),
    "white": ("ivory", "offwhite", "snow", "whitish"),
    "black": ("jet", "ebony", "blackish"),
    "orange": ("tangerine", "peach", "apricot", "orangey"),
    "camouflage": ("camo", "camouflaged"),
    # tops
    "t - shirt": ("tshirt", "tshirts", "teeshirt"),
    "shirt": ("blouse", "polo", "tunic", "top", "tops", "jersey", "buttoned", "oxford", "henley"),
    "sweater": ("pullover", "cardigan", "knitwear", "turtleneck", "fleece", "knitted", "woolly", "wooly"),
    "hoodie": ("hoody", "hoodies", "hood"),
    "jacket": ("blazer", "parka", "anorak", "windbreaker", "bomber", "puffer", "windcheater", "shacket", "overshirt"),
    "coat": ("overcoat", "raincoat", "trenchcoat", "trench", "mac", "peacoat", "duffle", "greatcoat"),
    "vest": ("gilet", "waistcoat", "bodywarmer"),
    "sleeveless": ("tank", "singlet", "camisole", "strappy"),
    "dress": ("gown", "frock", "sundress"),
    # bottoms
    "pants": ("chinos", "cargos", "cargo", "joggers", "sweatpants", "trackpants", "tracksuit", "leggings", "tights", "bottoms"),
    "khaki pants": ("khakis",),
    "cropped pants": ("capris", "capri", "culottes", "clamdiggers"),
    "cropped": ("rolled", "cuffed"),
    "jeans": ("denims", "jean", "levis"),
    "skirt": ("miniskirt", "skort", "kilt"),
    "shorts": ("bermudas", "bermuda", "boardshorts", "hotpants"),
    # shoes
    "sneakers": ("plimsolls", "plimsoll", "tennis", "kicks", "converse", "vans"),
    "running shoes": ("runners",),
    "leather shoes": ("loafers", "oxfords", "brogues", "derbies", "moccasins", "heels", "pumps", "flats", "stilettos", "brogue", "loafer"),
    "sandals": ("flip", "slippers", "flipflops", "thongs", "slides", "sliders", "espadrilles", "sandal"),
    "boots": ("booties", "wellies", "wellingtons", "uggs", "boot"),
    "shoes": ("footwear", "shoe"),
    # bags and carried things
    "handbag": ("purse", "clutch", "pocketbook", "tote"),
    "shoulder": ("messenger", "satchel", "sling"),
    "backpack": ("knapsack", "daypack", "bookbag", "schoolbag", "pack", "packsack"),
    "bag": ("briefcase", "holdall", "duffel"),
    "paper": ("coffee", "tea", "takeout"),
    "cup": ("mug", "drink", "beverage"),
    "phone": ("cellphone", "cell", "iphone", "texting", "mobilephone"),
    "umbrella": ("brolly", "parasol"),
    "book": ("novel", "magazine", "paperback"),
    # headwear, glasses
    "beanie": ("toque", "tuque", "bobble"),
    "hat": ("fedora", "sunhat", "bucket", "trilby", "beret", "panama"),
    "cap": ("ballcap", "snapback", "peaked"),
    "sunglasses": ("shades", "sunnies", "sunglass"),
    "glasses": ("spectacles", "specs", "eyeglasses", "eyewear", "bespectacled", "spectacled"),
    # patterns
    "stripes": ("striped", "stripy", "stripey", "pinstripe", "pinstriped", "pinstripes", "stripe", "banded"),
    "checked": ("checkered", "chequered", "checks", "check", "plaid", "tartan", "gingham", "houndstooth", "checkerboard"),
    "logo": ("graphic", "emblem", "badge", "slogan"),
    # verbs
    "carries": ("carrying", "toting", "lugging"),
    "has": ("had", "having", "have", "got"),
    "wears": ("wore", "wear"),
    "wearing": ("sporting", "donning", "clad"),
    "walking": ("walked", "walks", "walk", "strolling", "striding"),
    # fillers: no attribute in them
    "": ("plain", "solid", "basic", "simple", "really", "very", "quite", "kinda", "sorta", "probably", "maybe", "perhaps",
         "think", "like", "um", "uh", "oh", "also", "too", "pretty", "sure", "some", "just", "fairly", "rather", "around",
         "about", "approximately", "roughly", "early", "late", "mid", "year", "years", "yr", "yrs", "looking",
         "looked", "flops", "seemed", "seems", "appeared", "observed", "noticed", "saw", "spotted", "remember", "recall", "definitely"),
}

_ALIASES: dict[str, tuple[str, ...]] = {}  # unknown word -> replacements, from _GROUPS and a few two-way pairs
for _target, _words in _GROUPS.items():
    for _w in _words:
        _ALIASES[_w] = (*_ALIASES.get(_w, ()), _target)
_ALIASES["gray"] = ("grey",)  # both spellings; the vocabulary usually has one
_ALIASES["grey"] = ("gray",)
_ALIASES["colored"] = ("coloured",)
_ALIASES["colour"] = ("color", "coloured")
_ALIASES["navy"] = ("dark blue",)
_ALIASES["khaki"] = ("beige",)
_ALIASES["rucksack"] = ("backpack",)
_ALIASES["backpack"] = ("rucksack",)
_ALIASES["trainers"] = ("sneakers",)
_ALIASES["sneakers"] = ("trainers",)
_ALIASES["jumper"] = ("sweater",)
_ALIASES["sweater"] = ("jumper",)
_ALIASES["tee"] = ("t - shirt",)
_ALIASES["trousers"] = ("pants",)
_ALIASES["pants"] = ("trousers",)

MAX_TYPO_LETTERS = 20  # words longer than this are not looked up as one-letter typos (no clothing word is longer)
_NUMBER_WORDS = {"teen": 15, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_PUNCT = {";": ".", ":": ",", "!": ".", "?": ".", "(": ",", ")": ",", "[": ",", "]": ",", "&": "and", "+": "and", "/": "and",
          "…": ".", '"': "", "“": "", "”": "", "*": "", "#": "", "~": ""}

_TOKEN = re.compile(r"\w+|[^\w\s]+")
# "30-year-old", "30 years old", "aged 30", "in her 30s", "around fifty": the number (word) and what follows it
_AGE = re.compile(r"\b(\d{1,2}|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:'?s)?"
                  r"(?:\s*-?\s*(?:something|ish))?(?:\s*-?\s*(?:years?|yrs?)(?:\s*-?\s*old)?)?\b", re.IGNORECASE)


def age_word(years: int) -> str:
    """The caption generator's three age groups for a number of years."""
    if years < 36:
        return "young"
    return "middle aged" if years < 60 else "elderly"


def _undouble(stem: str) -> str:
    return stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "aeiouls" else stem


def inflections(word: str) -> list[str]:
    """Other forms of ``word`` to look up, most likely first (plural / singular, -ed / -ing / -ish)."""
    w = word.lower()
    bases: list[str] = []
    if w.endswith("ies") and len(w) > 4:
        bases.append(w[:-3] + "y")
    if w.endswith("es") and len(w) > 4:
        bases.append(w[:-2])
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        bases.append(w[:-1])
    if w.endswith("ing") and len(w) > 5:
        stem = w[:-3]
        bases += [stem, stem + "e", _undouble(stem)]
    if w.endswith("ed") and len(w) > 4:
        stem = w[:-2]
        bases += [w[:-1], stem, _undouble(stem)]
        if stem.endswith("i"):
            bases.append(stem[:-1] + "y")
    if w.endswith("ish") and len(w) > 5:
        stem = w[:-3]
        bases += [stem, stem + "e", _undouble(stem)]
    if w.endswith("y") and len(w) > 3:
        bases.append(w[:-1] + "ies")
    bases.append(w)
    out: list[str] = []
    for b in bases:
        for form in (b, b + "s", b + "es", b + "ed", b + "d", b + "ing", b + "ies" if not b.endswith("y") else b[:-1] + "ies"):
            if form != w and len(form) >= 3 and form not in out:
                out.append(form)
    return out


def _edits1(word: str) -> set[str]:
    """Words one deletion, insertion, substitution or transposition away."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    out |= {a + c + b[1:] for a, b in splits if b for c in letters}
    out |= {a + c + b for a, b in splits for c in letters}
    out.discard(word)
    return out


@dataclass
class Normalized:
    """A query as the model will read it, and what was replaced (original -> replacement, "" = dropped)."""

    text: str
    replaced: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


class QueryNormalizer:
    """Replace words a vocabulary lacks by known ones (see the module docstring for the order)."""

    def __init__(self, vocabulary: Collection[str]) -> None:
        self.vocab = {w.lower() for w in vocabulary}
        # words of 4+ letters are the vocabulary's real words (UFine-Synth's printed labels are 1-3 letters)
        self._long = {w for w in self.vocab if len(w) >= 4 and w.isalpha()}

    def _known(self, phrase: str) -> bool:
        return all(p in self.vocab for p in _TOKEN.findall(phrase))

    def replace(self, word: str) -> str | None:
        """The known word(s) for one unknown ``word`` ("" = drop it), or None when nothing fits."""
        w = word.lower()
        if w in self.vocab:
            return word
        if not w[0].isalnum():
            if w in _PUNCT and self._known(_PUNCT[w]):
                return _PUNCT[w]
            ends = any(c in ".;!?" for c in w)
            fallback = "." if ends else ","
            return fallback if fallback in self.vocab else None
        if w.isdigit():
            return age_word(int(w)) if 10 <= int(w) <= 99 and self._known(age_word(int(w))) else None
        for cand in (w, *inflections(w)):
            for target in ((cand,) if cand != w else ()) + _ALIASES.get(cand, ()):
                if target == "" or (target in self.vocab if " " not in target else self._known(target)):
                    return target
        if 5 <= len(w) <= MAX_TYPO_LETTERS and w.isalpha():  # a longer "word" is no typo: its ~54 x len candidates cost memory and time
            near = sorted(self._long & _edits1(w))
            if near:
                return near[0]
        return None

    def __call__(self, text: str) -> Normalized:
        """Normalise one description; the result keeps every known word and its order."""
        replaced: list[tuple[str, str]] = []
        unknown: list[str] = []

        def age(m: re.Match[str]) -> str:
            raw = m.group(0)
            if raw.lower() in self.vocab:
                return raw
            n = m.group(1).lower()
            years = _NUMBER_WORDS.get(n) or (int(n) if n.isdigit() else 0)
            if not 10 <= years <= 99:
                return raw
            word = age_word(years)
            if not self._known(word):
                return raw
            replaced.append((raw, word))
            return f" {word} "

        text = _AGE.sub(age, text)

        def one(m: re.Match[str]) -> str:
            raw = m.group(0)
            if raw.lower() in self.vocab:
                return raw
            new = self.replace(raw)
            if new is None:
                unknown.append(raw)
                return raw
            replaced.append((raw, new))
            return f" {new} " if new else " "

        words = _TOKEN.findall(_TOKEN.sub(one, text))
        # a hyphen left beside a dropped word or a punctuation mark ("20-something ," -> "young ,") goes too
        keep = [w for i, w in enumerate(words)
                if w != "-" or (0 < i < len(words) - 1 and words[i - 1][0].isalnum() and words[i + 1][0].isalnum())]
        return Normalized(" ".join(keep), replaced, unknown)

    def many(self, texts: Iterable[str]) -> list[str]:
        """Normalised texts only."""
        return [self(t).text for t in texts]


def normalizer_for(tokenizer: object) -> QueryNormalizer | None:
    """A normaliser for a word-level tokenizer (the only kind with unknown words), else None."""
    words = getattr(tokenizer, "words", None)
    return QueryNormalizer(words()) if callable(words) else None
