"""Writing a UFine-Synth dataset: images, the three annotation files, identities, preview, card.

Everything about identity ``pid`` comes from a generator seeded by (seed, pid), so the output is
byte-identical for the same options whatever the number of worker processes. The dataset is
built in a temporary folder next to OUT and moved into place at the end: an interrupted build
leaves nothing half-written under OUT.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ufinebench.errors import UFineBenchError
from ufinebench.io import atomic_write_bytes
from ufinebench.outputs import claim_dir, output_lock, owned_entries, publish_dir
from ufinebench.synth.annotators import Annotator
from ufinebench.synth.attributes import Record, draw_identity
from ufinebench.synth.card import language_stats, write_card
from ufinebench.synth.describe import ALL_VIEWS, STYLES, TRAIN_STYLES, VIEWS, caption, visible
from ufinebench.synth.families import Family, draw_families, family_splits, family_tags
from ufinebench.synth.language import POOL, write
from ufinebench.synth.render import HELD_OUT_DOMAINS, HIDDEN_BY_BARRIER, TRAIN_DOMAINS, draw_shot, identity_shade, jpeg_bytes, render
from ufinebench.synth.vocabulary import synth_vocabulary
from ufinebench.vocab import VOCAB_FILE

FINE_FILE = "ufine_synth.json"
COARSE_FILE = "ufine_synth_coarse.json"
THREEC_FILE = "ufine_synth_3c.json"
IDENTITIES_FILE = "identities.jsonl"
UNSEEN_STYLES = tuple(s for s in STYLES if s not in TRAIN_STYLES and s != "cuhk")
QUERY_STYLES = ("annotator_a",) + UNSEEN_STYLES  # 3C queries: one seen style and the unseen ones


THREEC_SHARE = round(2250 / 6926, 3)  # UFine3C's persons per UFine6926 person (0.325)
# Difficulty levels: the knobs each sets (a knob given on its own overrides its level's value).
# easy draws exactly what every build before the levels drew, for the same seed.
DIFFICULTY_LEVELS: dict[str, dict[str, Any]] = {
    "easy": {"family_size": 1, "family_details": 1, "heldout_only": 0.0, "omit": 0.0, "mistake": 0.0, "family_fraction": 1.0,
             "language": "classic", "camera": "fixed", "threec_persons": 0.0},
    "standard": {"family_size": 3, "family_details": 1, "heldout_only": 0.5, "omit": 0.15, "mistake": 0.03, "family_fraction": 0.4,
                 "language": "everyday", "camera": "varied", "threec_persons": THREEC_SHARE},
    "hard": {"family_size": 5, "family_details": 1, "heldout_only": 0.5, "omit": 0.25, "mistake": 0.06, "family_fraction": 1.0,
             "language": "everyday", "camera": "varied", "threec_persons": THREEC_SHARE},
}
KNOB_NAMES = ("family_size", "family_details", "heldout_only", "omit", "mistake", "family_fraction", "language", "camera", "threec_persons")
LANGUAGES = ("classic", "everyday")
CAMERAS = ("fixed", "varied")


@dataclass(frozen=True)
class Knobs:
    """The generator's difficulty knobs, resolved from a level and any knob given on its own."""

    family_size: int  # look-alike family size (1: no families); members differ in family_details separating details
    family_details: int
    heldout_only: float  # fraction of test persons whose 3C images come from held-out domains only (a real domain test)
    omit: float = 0.0  # each optional detail a caption could name is left out with this probability (annotators.py)
    mistake: float = 0.0  # a caption misnames one colour's shade or a bag's side with this probability
    family_fraction: float = 1.0  # the share of identities in look-alike families (the rest have none)
    language: str = "classic"  # classic: describe.py's frames; everyday: language.py (annotators with habits, held-out words)
    camera: str = "fixed"  # fixed: one framing; varied: five views, figure scale, low barriers, passers-by, own shades, scaled letters
    threec_persons: float = 0.0  # 0: the 3C set shows the test persons; else persons of its own, this share of --identities


@dataclass(frozen=True)
class SynthConfig:
    """Options of one UFine-Synth build (all of them shape the output)."""

    identities: int = 1000
    images_per_id: tuple[int, int] = (2, 5)
    size: tuple[int, int] = (384, 128)  # (H, W)
    seed: int = 0
    extra_3c_images: int = 2  # per test identity, in held-out domains
    queries_per_3c_image: int = 5
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    difficulty: str = "standard"  # easy | standard | hard (DIFFICULTY_LEVELS)
    family_size: int | None = None  # None: as the level says
    family_details: int | None = None
    heldout_only: float | None = None
    omit: float | None = None
    mistake: float | None = None
    family_fraction: float | None = None
    language: str | None = None
    camera: str | None = None
    threec_persons: float | None = None

    def knobs(self) -> Knobs:
        """The level's knobs with those given on their own in place."""
        level = DIFFICULTY_LEVELS[self.difficulty]
        return Knobs(*(level[k] if getattr(self, k) is None else getattr(self, k) for k in KNOB_NAMES))

    def check(self) -> None:
        a, b = self.images_per_id
        if self.identities < 3:
            raise UFineBenchError("--identities must be at least 3 (one per split)")
        if not 0 <= self.seed < 2**63:
            raise UFineBenchError(f"--seed must be a whole number from 0 to 2^63 - 1, got {self.seed}")
        if not 2 <= a <= b <= 50:
            raise UFineBenchError(f"--images-per-id must be A:B with 2 <= A <= B <= 50, got {a}:{b}")
        h, w = self.size
        if not (32 <= h <= 2048 and 16 <= w <= 1024):
            raise UFineBenchError(f"--size must be between 32x16 and 2048x1024, got {h}x{w}")
        if self.extra_3c_images < 0 or not 1 <= self.queries_per_3c_image <= 15:
            raise UFineBenchError("3C options out of range")
        if self.difficulty not in DIFFICULTY_LEVELS:
            raise UFineBenchError(f"--difficulty must be one of {', '.join(DIFFICULTY_LEVELS)}, got {self.difficulty!r}")
        k = self.knobs()
        if not 1 <= k.family_size <= 20 or not 1 <= k.family_details <= 3:
            raise UFineBenchError(f"--family-size must be 1-20 and --family-details 1-3, got {k.family_size} and {k.family_details}")
        if k.language not in LANGUAGES or k.camera not in CAMERAS:
            raise UFineBenchError(f"--language must be one of {', '.join(LANGUAGES)} and --camera one of {', '.join(CAMERAS)}")
        if not 0.0 <= k.threec_persons <= 2.0:
            raise UFineBenchError(f"--threec-persons must be from 0 to 2 (a share of --identities), got {k.threec_persons}")
        for name in ("heldout_only", "omit", "mistake", "family_fraction"):
            if not 0.0 <= getattr(k, name) <= 1.0:
                raise UFineBenchError(f"--{name.replace('_', '-')} must be a fraction from 0 to 1, got {getattr(k, name)}")


def assign_splits(n: int, seed: int, fractions: tuple[float, float, float]) -> list[str]:
    """Split identities 1..n into train / val / test (each non-empty), by a seeded permutation."""
    order = np.random.default_rng([seed, 0x5B]).permutation(n)
    n_val = max(1, int(round(n * fractions[1])))
    n_test = max(1, int(round(n * fractions[2])))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise UFineBenchError("too few identities for three splits")
    split = [""] * n
    for rank, i in enumerate(order):
        split[i] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return split


def _identity_job(args: tuple[int, Record, str, SynthConfig, str, dict[str, Any], bool, bool]) -> dict[str, Any]:
    """Render and describe every image of one identity; write its images; return its records.

    ``extra`` tags go on every caption (a family member's family and separating details); with
    ``heldout_only`` the person's 3C images are its held-out-domain ones alone (a real domain test);
    ``in_3c``: the person is in the 3C set (split "3c": a 3C person only, with no training-file records).
    """
    pid, rec, split, cfg, out, extra, heldout_only, in_3c = args
    rng = np.random.default_rng([cfg.seed, pid])
    a, b = cfg.images_per_id
    n_img = int(rng.integers(a, b + 1))
    knobs = cfg.knobs()
    varied = knobs.camera == "varied"
    views = ALL_VIEWS if varied else VIEWS  # a varied camera adds the three-quarter views
    start_view = int(rng.integers(len(views)))
    fine_recs, coarse_recs, threec_recs = [], [], []

    shade = identity_shade(np.random.default_rng([cfg.seed, pid, 0x7A])) if varied else (1.0, 1.0, 1.0)
    hidden: dict[str, tuple[str, ...]] = {}  # image -> slots a low barrier hides in it

    def make(k_name: str, view: str, domain: str, keep: bool = True) -> tuple[str, str]:
        """Render one image (and write it unless ``keep`` is False: drawn all the same, so every later
        draw of this person stays as it is)."""
        pose = "walking" if rng.random() < 0.7 else "standing"
        shot = None
        if varied:  # the framing draws from a stream of its own: the classic draws stay as they were
            srng = np.random.default_rng([cfg.seed, pid, 0x5407, len(hidden)])
            shot = draw_shot(srng, shade, draw_identity(srng))
        img = render(rec, view, pose, domain, cfg.size, rng, shot)
        rel = f"images/{pid:05d}_{k_name}.jpg"
        hidden[rel] = HIDDEN_BY_BARRIER if shot is not None and shot.feet_hidden else ()
        data = jpeg_bytes(img, domain, rng)
        if keep:
            with open(os.path.join(out, rel), "wb") as fh:
                fh.write(data)
        return rel, pose

    written = [0]  # captions so far: each annotator draws from a stream of its own, (seed, person, caption)

    def described(rel: str, view: str, pose: str, domain: str, combos: Iterable[tuple[str, str]]) -> tuple[list[str], list[dict]]:
        caps, tags = [], []
        for gran, style in combos:
            notes: dict[str, Any] = {}
            shown = {k: v for k, v in visible(rec, view).items() if k not in hidden[rel]}
            if knobs.omit > 0 or knobs.mistake > 0:
                writer = Annotator(knobs.omit, knobs.mistake, np.random.default_rng([cfg.seed, pid, 0xA0, written[0]]))
                shown, notes = writer.edit(shown, style)
            if knobs.language == "everyday":
                crng = np.random.default_rng([cfg.seed, pid, 0xCA, written[0]])
                pool = POOL.get(style)
                persona = pool[int(crng.integers(len(pool)))] if pool else None
                text, mentions = write(shown, view, pose, gran, style, crng, persona)
                if persona is not None:
                    notes["writer"] = persona.name
            else:
                text, mentions = caption(rec, view, gran, style, rng, pose, shown=shown if notes or hidden[rel] else None)
            if hidden[rel]:
                notes["hidden"] = list(hidden[rel])
            written[0] += 1
            caps.append(text)
            tags.append({"granularity": gran, "style": style, "view": view, "pose": pose, "domain": domain, "mentions": mentions, **extra,
                         **notes})
        return caps, tags

    combos_3c = [(g, s) for g in ("fine", "medium", "coarse") for s in QUERY_STYLES]
    for k in range(n_img):
        view = views[(start_view + k) % len(views)]
        domain = TRAIN_DOMAINS[int(rng.integers(len(TRAIN_DOMAINS)))]
        # a held-out-only 3C person's training-domain images are in no file: not written
        rel, pose = make(f"{k:02d}", view, domain, keep=not (split == "3c" and heldout_only))
        if split != "3c":
            caps, tags = described(rel, view, pose, domain, [("fine", s) for s in TRAIN_STYLES])
            fine_recs.append({"split": split, "id": pid, "file_path": rel, "captions": caps, "caption_tags": tags})
            caps, tags = described(rel, view, pose, domain, [("coarse", "cuhk"), ("coarse", "cuhk")])
            coarse_recs.append({"split": split, "id": pid, "file_path": rel, "captions": caps, "caption_tags": tags})
        if in_3c:
            pick = rng.choice(len(combos_3c), size=cfg.queries_per_3c_image, replace=False)
            caps, tags = described(rel, view, pose, domain, [combos_3c[int(i)] for i in sorted(pick)])
            if not heldout_only:  # the draws above happen either way: the images of a build stay the same
                threec_recs.append({"id": pid, "source": domain, "split": "test", "file_path": rel, "captions": caps, "caption_tags": tags})
    if in_3c:
        for k in range(cfg.extra_3c_images):
            view = views[int(rng.integers(len(views)))]
            domain = HELD_OUT_DOMAINS[int(rng.integers(len(HELD_OUT_DOMAINS)))]
            rel, pose = make(f"x{k}", view, domain)
            pick = rng.choice(len(combos_3c), size=cfg.queries_per_3c_image, replace=False)
            caps, tags = described(rel, view, pose, domain, [combos_3c[int(i)] for i in sorted(pick)])
            threec_recs.append({"id": pid, "source": domain, "split": "test", "file_path": rel, "captions": caps, "caption_tags": tags})
    return {"fine": fine_recs, "coarse": coarse_recs, "threec": threec_recs}


def _heldout_only(cfg: SynthConfig, in_3c: list[bool], fraction: float) -> list[bool]:
    """Which 3C persons appear in the 3C gallery only in held-out domains (a stream of its own)."""
    if fraction <= 0:
        return [False] * len(in_3c)
    u = np.random.default_rng([cfg.seed, 0xD0]).random(len(in_3c))
    return [s and bool(x < fraction) for s, x in zip(in_3c, u, strict=True)]


def ambiguity(records: list[dict], identities: dict[int, Record], ids: Iterable[int]) -> dict[str, float]:
    """Mean number of identities (among ``ids``) consistent with a caption, per granularity."""
    return {g: float(np.mean([k for k, _ in v])) for g, v in consistent_counts(records, identities, ids).items()}


def ceiling(records: list[dict], identities: dict[int, Record], ids: Iterable[int]) -> dict[str, float]:
    """The R1 (percent) a perfect attribute reader would reach, per granularity: it ranks first the
    identities consistent with everything a caption says, in random order among themselves, so a
    caption that fits k identities, its own person among them, is answered first with probability
    1/k; one whose annotator made a mistake may not fit its own person at all (then 0)."""
    return {g: 100.0 * float(np.mean([own / max(k, 1) for k, own in v])) for g, v in consistent_counts(records, identities, ids).items()}


def consistent_counts(records: list[dict], identities: dict[int, Record], ids: Iterable[int]) -> dict[str, list[tuple[int, bool]]]:
    """Per granularity, for every caption: how many identities (among ``ids``) agree with all it
    mentions, and whether its own person does.

    Vectorised: identities become a (N, slots) table of value codes, and each caption's mentions
    are compared against the columns it names.
    """
    ids = list(ids)
    pool = [identities[i] for i in ids]
    row = {pid: j for j, pid in enumerate(ids)}
    slots = sorted({k for r in pool for k in r})
    codes: dict[str, dict[Any, int]] = {s: {} for s in slots}
    table = np.asarray(
        [[codes[s].setdefault(json.dumps(r.get(s)), len(codes[s])) for s in slots] for r in pool], dtype=np.int64
    ).reshape(len(pool), len(slots))  # (N, S)
    col = {s: j for j, s in enumerate(slots)}
    out: dict[str, list[tuple[int, bool]]] = {}
    for r in records:
        for tag in r["caption_tags"]:
            mask = np.ones(len(pool), dtype=bool)
            for slot, value in tag["mentions"].items():
                code = codes[slot].get(json.dumps(value), -1) if slot in col else -1
                mask &= table[:, col[slot]] == code if code >= 0 else False
            own = r.get("id")  # records without an id (made by hand) count for ambiguity only
            out.setdefault(tag["granularity"], []).append((int(mask.sum()), bool(mask[row[own]]) if own in row else False))
    return dict(sorted(out.items()))


def dataset_ceilings(folder: str | os.PathLike[str]) -> dict[str, float]:
    """The ceilings of a UFine-Synth folder, recomputed from its files: in-domain test (fine) and 3C
    per granularity (what ``synth`` printed and the card states)."""
    folder = Path(folder)
    lines = (folder / IDENTITIES_FILE).read_text().splitlines()
    people = {r["id"]: r for r in map(json.loads, lines)}
    identities = {pid: r["attributes"] for pid, r in people.items()}
    test_ids = [pid for pid, r in people.items() if r["split"] == "test"]
    return ceilings(json.loads((folder / FINE_FILE).read_text()), json.loads((folder / THREEC_FILE).read_text()), identities, test_ids)


def ceilings(fine: list[dict], threec: list[dict], identities: dict[int, Record], test_ids: list[int]) -> dict[str, float]:
    """The ceilings a set states: its fine test captions among the test persons, and its 3C queries per
    granularity among the persons of the 3C file."""
    threec_ids = sorted({r["id"] for r in threec})
    in_domain = ceiling([r for r in fine if r["split"] == "test"], identities, test_ids).get("fine", 0.0) if test_ids else 0.0
    return {"in-domain test": in_domain, **{f"3C {g}": v for g, v in ceiling(threec, identities, threec_ids).items()}}


def _word_stats(records: list[dict]) -> dict[str, dict[str, float]]:
    by: dict[str, list[int]] = {}
    for r in records:
        for c, t in zip(r["captions"], r["caption_tags"], strict=False):
            by.setdefault(t["granularity"], []).append(len(c.split()))
    return {g: {"captions": len(v), "mean": float(np.mean(v)), "min": int(min(v)), "max": int(max(v))} for g, v in sorted(by.items())}


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))  # compact: C encoder




def build(
    out: str | os.PathLike[str], cfg: SynthConfig, *, workers: int = 1, overwrite: bool = False, force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate a UFine-Synth dataset into ``out``; return its summary (also in the card).

    ``overwrite`` replaces a UFine-Synth dataset this command wrote there; ``force`` writes into a
    folder that holds other files, leaving them alone. Nothing else is ever deleted.
    """
    cfg.check()
    out = Path(out)
    with output_lock(out):
        claim_dir(out, "synth", force=force)
        if owned_entries(out, "synth") and not overwrite:
            raise UFineBenchError(f"{out} holds a UFine-Synth dataset; pass --overwrite to replace it")
        t0 = time.perf_counter()
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "images").mkdir(parents=True)
        try:
            summary = _build_into(tmp, cfg, workers, progress)
            summary["seconds"] = round(time.perf_counter() - t0, 2)
            files = {"fine": FINE_FILE, "coarse": COARSE_FILE, "threec": THREEC_FILE, "identities": IDENTITIES_FILE,
                     "query_styles": ", ".join(QUERY_STYLES), "unseen_styles": ", ".join(UNSEEN_STYLES)}
            write_card(tmp, asdict(cfg), asdict(cfg.knobs()), summary, files)
            publish_dir(tmp, out, "synth")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return summary


def _build_into(tmp: Path, cfg: SynthConfig, workers: int, progress: bool) -> dict[str, Any]:
    k = cfg.knobs()
    pop, fams, splits = _population(cfg, k)
    in_3c = [s == ("3c" if "3c" in splits else "test") for s in splits]
    held = _heldout_only(cfg, in_3c, k.heldout_only)
    extra = [family_tags(f) if k.family_size > 1 else {} for f in fams]
    for i in range(len(pop)):
        if k.heldout_only > 0 and in_3c[i]:
            extra[i] = {**extra[i], "gallery": "held-out only" if held[i] else "mixed"}
    jobs = [(pid, pop[pid - 1], splits[pid - 1], cfg, str(tmp), extra[pid - 1], held[pid - 1], in_3c[pid - 1]) for pid in range(1, len(pop) + 1)]
    bar = tqdm(total=len(jobs), unit="id", desc="generating identities", leave=False) if progress else None
    results: list[dict[str, Any]] = []
    if workers <= 1:
        for job in jobs:
            results.append(_identity_job(job))
            if bar is not None:
                bar.update(1)
    else:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            for res in pool.imap(_identity_job, jobs, chunksize=8):
                results.append(res)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    fine = [r for res in results for r in res["fine"]]
    coarse = [r for res in results for r in res["coarse"]]
    threec = [r for res in results for r in res["threec"]]
    _write_json(tmp / FINE_FILE, fine)
    _write_json(tmp / COARSE_FILE, coarse)
    _write_json(tmp / THREEC_FILE, threec)
    lines = [json.dumps({"id": pid, "split": splits[pid - 1], "attributes": pop[pid - 1],
                         **({"family": family_tags(fams[pid - 1])} if k.family_size > 1 else {})}, sort_keys=True)
             for pid in range(1, len(pop) + 1)]
    atomic_write_bytes(tmp / IDENTITIES_FILE, ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(tmp / VOCAB_FILE, synth_vocabulary(k.language).to_json().encode())  # what training's attribute options read
    identities = {pid: pop[pid - 1] for pid in range(1, len(pop) + 1)}
    test_ids = [pid for pid in identities if splits[pid - 1] == "test"]
    threec_ids = sorted({r["id"] for r in threec})
    _preview(tmp, threec, threec_ids or list(identities))
    per_split = {s: {"identities": splits.count(s), "images": sum(r["split"] == s for r in fine)} for s in ("train", "val", "test")}
    if "3c" in splits:
        per_split["3c"] = {"identities": splits.count("3c"), "images": len({r["file_path"] for r in threec})}
    fine_paths = {r["file_path"] for r in fine}
    return {
        "identities": cfg.identities,
        "images": len(fine) + len({r["file_path"] for r in threec} - fine_paths),
        "splits": per_split,
        "captions": {"fine": sum(len(r["captions"]) for r in fine), "coarse": sum(len(r["captions"]) for r in coarse),
                     "3c_queries": sum(len(r["captions"]) for r in threec), "3c_images": len(threec)},
        "words": {"ufine_synth": _word_stats(fine), "coarse": _word_stats(coarse), "3c": _word_stats(threec)},
        "ambiguity_test_identities": ambiguity(threec, identities, threec_ids),
        "ceiling_r1": ceilings(fine, threec, identities, test_ids),
        "test_identities": len(test_ids),
        "threec_identities": len(threec_ids),
        "language": language_stats(fine, coarse, threec),
        "families": _family_stats(fams) if k.family_size > 1 else {},
    }


def _population(cfg: SynthConfig, k: Knobs) -> tuple[list[Record], list[Family], list[str]]:
    """Every identity's record, family and split: the UFine6926-like persons (train / val / test) and,
    with ``threec_persons``, the 3C set's own persons after them (split "3c"; drawn from a stream of
    their own, as UFine3C's persons are not UFine6926's)."""
    wider = k.language == "everyday"
    pop, fams = draw_families(cfg.identities, cfg.seed, k.family_size, k.family_details, k.family_fraction, wider=wider)
    splits = assign_splits(cfg.identities, cfg.seed, cfg.split_fractions) if k.family_size <= 1 else family_splits(fams, cfg.seed,
                                                                                                                      cfg.split_fractions)
    n3c = round(cfg.identities * k.threec_persons)
    if n3c:
        more, more_fams = draw_families(n3c, (cfg.seed + 0x3C3C3C3C) % 2**63, k.family_size, k.family_details, k.family_fraction, wider=wider)
        pop += more
        fams += [Family(f.family + cfg.identities, f.size, f.details) for f in more_fams]
        splits += ["3c"] * n3c
    return pop, fams, splits


def _family_stats(fams: list[Any]) -> dict[str, Any]:
    """Family sizes and how many details separate a variant from its base."""
    sizes: dict[int, int] = {}
    for f in fams:
        sizes[f.family] = f.size
    by_size: dict[int, int] = {}
    for n in sizes.values():
        by_size[n] = by_size.get(n, 0) + 1
    details: dict[str, int] = {}
    for pid, f in enumerate(fams, start=1):
        if f.size > 1 and f.family != pid:  # variants (a base lists its variants' details)
            for d in f.details:
                details[d] = details.get(d, 0) + 1
    return {"families_by_size": dict(sorted(by_size.items())), "variants_by_detail": dict(sorted(details.items(), key=lambda x: -x[1]))}


def _preview(tmp: Path, threec: list[dict], ids: list[int], n: int = 30) -> None:
    """A contact sheet: up to ``n`` identities, four images each, across views and domains."""
    chosen = ids[:n]
    by_id: dict[int, list[dict]] = {}
    for r in threec:
        by_id.setdefault(r["id"], []).append(r)
    cols, th_h = 6, 144
    sample = Image.open(tmp / threec[0]["file_path"]) if threec else None
    th_w = int(round(th_h * sample.width / sample.height)) if sample else 48
    cell_w, cell_h = 4 * th_w + 8, th_h + 16
    rows = max(1, (len(chosen) + cols - 1) // cols)
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (250, 250, 250))
    d = ImageDraw.Draw(sheet)
    for i, pid in enumerate(chosen):
        x0, y0 = (i % cols) * cell_w, (i // cols) * cell_h
        recs = by_id.get(pid, [])
        picks = [r for r in recs if "_x" not in r["file_path"]][:2] + [r for r in recs if "_x" in r["file_path"]][:2]
        for j, r in enumerate(picks[:4]):
            with Image.open(tmp / r["file_path"]) as im:
                sheet.paste(im.convert("RGB").resize((th_w, th_h)), (x0 + j * th_w, y0 + 14))
        d.text((x0 + 2, y0 + 1), f"id {pid}: " + ", ".join(r["source"] for r in picks[:4]), fill=(20, 20, 20))

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(tmp / "preview.png", buf.getvalue())
