"""Look-alike families: identities that share every attribute but one or two small details.

UFineBench exists because real people differ in *ultra-fine* details that coarse text cannot
separate. A family is a base identity and ``size - 1`` variants of it, each changed in
``details`` of the small, separating slots below (a shoe sole's colour, a bag label's letters,
glasses, a belt, sleeve length, a logo's letters, a pattern's colour): only a description that
names that detail, in an image that shows it, tells the members apart. Every identity carries
its family and the details that separate it from the rest of its family, so evaluation can break
R1 down by separating detail (the ``detail`` tag of every caption).

Families are drawn from their own random stream, so a build without them (``family_size`` 1)
draws exactly the identities it always drew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ufinebench.synth.attributes import ACCENTS, Record, derived, draw_population, record_key

# The separating details: slot -> how a variant gets another value (None: the slot does not apply to this record).
SEPARATING_DETAILS = ("sole_color", "bag_label_text", "glasses", "belt", "upper_sleeve", "logo_text", "pattern_color")


@dataclass
class Family:
    """Which family an identity belongs to and what separates it from the other members."""

    family: int  # the family's number (its base identity's id)
    size: int
    details: list[str] = field(default_factory=list)  # slots in which this member differs from some other member


def _letters(rng: np.random.Generator, old: str | None) -> str:
    """Another letter code of the same length (one letter changed: the ultra-fine case)."""
    code = list(old or "A")
    i = int(rng.integers(len(code)))
    choices = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != code[i]]
    code[i] = choices[int(rng.integers(len(choices)))]
    return "".join(code)


def _vary(r: Record, slot: str, rng: np.random.Generator) -> Record | None:
    """``r`` with ``slot`` changed to another plausible value, or None when the slot does not apply."""
    v = dict(r)
    if slot == "sole_color":
        v[slot] = str(rng.choice([c for c in ("white", "black", "gray", "brown", "red") if c != r[slot]]))
    elif slot == "bag_label_text":
        if r.get("bag_label_text") is None:
            return None
        v[slot] = _letters(rng, r[slot])
    elif slot == "glasses":
        v[slot] = str(rng.choice([g for g in ("none", "glasses", "sunglasses") if g != r[slot]]))
    elif slot == "belt":
        if r["lower_type"] == "skirt":
            return None
        v[slot] = str(rng.choice([b for b in ("none", "black belt", "brown belt") if b != r[slot]]))
    elif slot == "upper_sleeve":
        if r["upper_type"] in ("sweater", "hoodie", "cardigan"):
            return None
        v[slot] = "short" if r[slot] == "long" else "long"
    elif slot == "logo_text":
        if r.get("logo_text") is None:
            return None
        v[slot] = _letters(rng, r[slot])
    elif slot == "pattern_color":
        if r.get("pattern_color") is None:
            return None
        v[slot] = str(rng.choice([c for c in ACCENTS if c not in (r[slot], r["upper_color"])]))
    else:
        raise ValueError(f"not a separating detail: {slot}")
    v.update(derived(v))
    return v


def draw_families(n: int, seed: int, size: int, details: int, fraction: float = 1.0, wider: bool = False) -> tuple[list[Record], list[Family]]:
    """``n`` identities, about ``fraction`` of them in families of ``size`` (a base and variants, each
    variant differing from the base in ``details`` separating slots), the rest on their own (families
    of 1, detail "none"); all records pairwise different; ``wider``: UFine-Synth 2's everyday population. Families and single persons alternate, so
    both reach every split."""
    if size <= 1 or fraction <= 0:
        return draw_population(n, seed, wider), [Family(i + 1, 1) for i in range(n)]
    bases = draw_population(n, seed, wider)  # never more bases than identities are needed
    rng = np.random.default_rng([seed, 0xFA4])
    seen = {record_key(b) for b in bases}
    records: list[Record] = []
    families: list[Family] = []
    in_families = round(n * fraction)
    grouped = 0  # identities in families so far
    for base in bases:
        if len(records) >= n:
            break
        # a family while families are behind their share of the identities so far, else a single person
        want = min(size, n - len(records)) if grouped < in_families and grouped <= fraction * len(records) + 1 else 1
        members, changed = _family(base, rng, want, details, seen)
        grouped += len(members) if len(members) > 1 else 0
        fam_id = len(records) + 1
        sep = sorted({d for c in changed for d in c})
        for k, rec in enumerate(members):
            records.append(rec)
            families.append(Family(fam_id, len(members), list(changed[k] if k else sep)))  # a base differs in its variants' details
    return records, families


def _family(base: Record, rng: np.random.Generator, size: int, details: int, seen: set[str]) -> tuple[list[Record], list[list[str]]]:
    """``base`` and up to ``size - 1`` variants of it not seen before; (records, the details each variant changed)."""
    members: list[Record] = [base]
    changed: list[list[str]] = [[]]
    tries = 0
    while len(members) < size and tries < 200:
        tries += 1
        variant, slots = _variant(base, rng, details)
        if variant is not None and record_key(variant) not in seen:
            seen.add(record_key(variant))
            members.append(variant)
            changed.append(slots)
    return members, changed


def _variant(base: Record, rng: np.random.Generator, details: int) -> tuple[Record | None, list[str]]:
    """One variant of ``base`` with ``details`` separating slots changed (those that apply)."""
    order = rng.permutation(len(SEPARATING_DETAILS))
    v: Record | None = dict(base)
    slots: list[str] = []
    for i in order:
        if len(slots) == details:
            break
        slot = SEPARATING_DETAILS[int(i)]
        nxt = _vary(v, slot, rng) if v is not None else None
        if nxt is not None:
            v, slots = nxt, [*slots, slot]
    return (v, slots) if slots else (None, [])


def family_splits(families: list[Family], seed: int, fractions: tuple[float, float, float]) -> list[str]:
    """Whole families to one split each (look-alikes meet in one gallery), by a seeded permutation,
    filling train / val / test to about ``fractions`` of the identities (each split non-empty)."""
    ids = sorted({f.family for f in families})
    sizes = {fid: sum(f.family == fid for f in families) for fid in ids}
    order = np.random.default_rng([seed, 0x5C]).permutation(len(ids))
    n = len(families)
    want = {"val": max(1, round(n * fractions[1])), "test": max(1, round(n * fractions[2]))}
    got = {"train": 0, "val": 0, "test": 0}
    of: dict[int, str] = {}
    for rank, i in enumerate(order):
        fid = ids[int(i)]
        split = next((s for s in ("test", "val") if got[s] < want[s]), "train")
        if rank == len(order) - 1 and got["train"] == 0:
            split = "train"
        of[fid] = split
        got[split] += sizes[fid]
    return [of[f.family] for f in families]


def family_tags(fam: Family) -> dict[str, Any]:
    """The tags every caption of a family member carries: its family and its separating detail(s)."""
    return {"family": fam.family, "family_size": fam.size, "detail": "+".join(fam.details) if fam.details else "none"}
