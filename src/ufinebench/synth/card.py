"""The card beside every UFine-Synth set (``CARD.md``): what it holds, measured against the real sets.

:func:`language_stats` measures the captions as a reader would (words, vocabulary, sentence
skeletons, held-out words, annotators' omissions and mistakes); :func:`write_card` puts them in a
table beside UFine6926 / UFine3C's published figures (the authors' README and paper, arXiv
2312.03441), with the ceilings every model's figures should be read against.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ufinebench.io import atomic_write_bytes
from ufinebench.synth.describe import GRANULARITY_WORDS, TRAIN_STYLES
from ufinebench.synth.language import WORDS
from ufinebench.synth.render import HELD_OUT_DOMAINS, TRAIN_DOMAINS
from ufinebench.synth.skeletons import Skeletons

# published figures (REFERENCE: Zplusdragon/UFineBench README, arXiv 2312.03441)
PUBLISHED = {"UFine6926": {"identities": "6,926", "images": "26,206", "captions": "52,412", "words": "80.8"},
             "UFine3C": {"identities": "2,250", "images": "7,446", "captions": "37,939 queries", "words": "short to long"}}
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def _vocabulary(captions: list[str]) -> set[str]:
    """Word types of captions (lower case, hyphenated words whole, quoted letter codes left out)."""
    return {w for c in captions for w in _WORD.findall(re.sub(r"'[^']*'", " ", c.lower()))}


def heldout_words() -> set[str]:
    """Words that only the held-out phrasings of the everyday language contain (3C queries only)."""
    train = {w for tr, _ in WORDS.values() for p in tr for w in _WORD.findall(p.lower())}
    return {w for _, held in WORDS.values() for p in held for w in _WORD.findall(p.lower())} - train - {"a", "an"}


def _captions(records: list[dict], **match: str) -> list[str]:
    return [c for r in records for c, t in zip(r["captions"], r["caption_tags"], strict=False)
            if all(t.get(k) == v for k, v in match.items())]


def language_stats(fine: list[dict], coarse: list[dict], threec: list[dict]) -> dict[str, Any]:
    """How the captions read: vocabulary, sentence skeletons, held-out words, what annotators left out."""
    train_caps = [c for r in fine for c in r["captions"]] + [c for r in coarse for c in r["captions"]]
    sk = Skeletons()
    sk.add(c for r in fine for c in r["captions"])
    held = heldout_words()
    train_vocab = _vocabulary(train_caps)
    threec_vocab = _vocabulary([c for r in threec for c in r["captions"]])
    tags = [t for r in fine for t in r["caption_tags"]]
    writers: dict[str, int] = {}
    for t in tags:
        if "writer" in t:
            writers[t["writer"]] = writers.get(t["writer"], 0) + 1
    lengths = [len(c.split()) for r in fine for c in r["captions"]]
    return {
        "fine_words_mean": float(np.mean(lengths)) if lengths else 0.0, "fine_words_sd": float(np.std(lengths)) if lengths else 0.0,
        "vocabulary_training": len(train_vocab), "vocabulary_3c": len(threec_vocab),
        "skeletons": sk.summary(),
        "heldout_words_in_training": sorted(held & train_vocab), "heldout_words_in_3c": len(held & threec_vocab),
        "captions_with_omission": float(np.mean([bool(t.get("omitted")) for t in tags])) if tags else 0.0,
        "captions_with_mistake": float(np.mean(["mistake" in t for t in tags])) if tags else 0.0,
        "captions_with_hidden_feet": float(np.mean(["hidden" in t for t in tags])) if tags else 0.0,
        "writers": dict(sorted(writers.items())),
    }


def _level_line(cfg: dict[str, Any], k: dict[str, Any]) -> str:
    if not (k["family_size"] > 1 or k["heldout_only"] > 0 or k["omit"] > 0 or k["mistake"] > 0 or k["language"] != "classic"
            or k["camera"] != "fixed"):
        return ("Difficulty `easy`: no look-alike families, every 3C person also in the training domains, the classic template "
                "language and framing (the generator of 2026-12-06 and before).")
    return (f"Difficulty `{cfg['difficulty']}`: {100 * k['family_fraction']:.0f} % of the identities in look-alike families of "
            f"{k['family_size']} (members differ in {k['family_details']} small separating detail{'s' if k['family_details'] > 1 else ''}:"
            f" tag `detail`), {100 * k['heldout_only']:.0f} % of test persons in the 3C gallery only in held-out domains (tag "
            f"`gallery`), annotators who leave a detail out with probability {k['omit']:g} and misname one with {k['mistake']:g}; "
            f"`{k['language']}` language, `{k['camera']}` camera.")


def write_card(tmp: Path, cfg: dict[str, Any], knobs: dict[str, Any], s: dict[str, Any], files: dict[str, str]) -> None:
    """Write ``CARD.md`` for the set built into ``tmp`` (``cfg``: its options, ``s``: build's summary)."""
    h, w = cfg["size"]
    a, b = cfg["images_per_id"]
    lang = s["language"]
    fine_words = s["words"]["ufine_synth"].get("fine", {})
    fine_images = sum(v["images"] for k, v in s["splits"].items() if k != "3c")  # the training file's (UFine6926-like) images
    threec_words = ", ".join(f"{g} {v['mean']:.1f}" for g, v in s["words"]["3c"].items())
    lines = [
        "# UFine-Synth dataset card", "",
        "A procedurally generated stand-in for UFine6926 / UFine3C made by `ufinebench synth`.", "",
        f"Command: `ufinebench synth OUT --identities {cfg['identities']} --images-per-id {a}:{b} --size {h}x{w} --seed {cfg['seed']}"
        f" --difficulty {cfg['difficulty']}`",
        f"(generated in {s['seconds']} s; the same options give byte-identical files)", "",
        _level_line(cfg, knobs), "",
        "## Beside the real sets", "",
        "| | identities | images | captions | words per caption | vocabulary (word types) |",
        "|---|---|---|---|---|---|",
        f"| this set, training file | {cfg['identities']} | {fine_images} | {s['captions']['fine']} | "
        f"{fine_words.get('mean', 0):.1f} (sd {lang['fine_words_sd']:.1f}, {fine_words.get('min', 0)}-{fine_words.get('max', 0)}) | "
        f"{lang['vocabulary_training']} |",
        f"| UFine6926 (published) | {PUBLISHED['UFine6926']['identities']} | {PUBLISHED['UFine6926']['images']} | "
        f"{PUBLISHED['UFine6926']['captions']} | {PUBLISHED['UFine6926']['words']} | not published |",
        f"| this set, 3C file | {s['threec_identities']} | {s['captions']['3c_images']} | {s['captions']['3c_queries']} queries | "
        f"{threec_words} | {lang['vocabulary_3c']} |",
        f"| UFine3C (published) | {PUBLISHED['UFine3C']['identities']} | {PUBLISHED['UFine3C']['images']} | "
        f"{PUBLISHED['UFine3C']['captions']} | {PUBLISHED['UFine3C']['words']} | not published |",
        "",
        f"Sentence skeletons of the training captions (attribute words, letter codes and pronouns folded into "
        f"placeholders, `synth/skeletons.py`): {lang['skeletons']['skeletons']} over {lang['skeletons']['sentences']} sentences; the "
        f"50 commonest cover {100 * lang['skeletons']['top50_share']:.0f} % of them.",
        f"Held-out words (only in 3C queries of the unseen styles): {lang['heldout_words_in_3c']} of them appear in the 3C file, "
        f"{len(lang['heldout_words_in_training'])} in the training files"
        + (f" ({', '.join(lang['heldout_words_in_training'])})" if lang["heldout_words_in_training"] else "") + ".",
        f"Annotators: {100 * lang['captions_with_omission']:.1f} % of training captions leave a visible detail out, "
        f"{100 * lang['captions_with_mistake']:.1f} % misname one (tags `omitted`, `mistake`); "
        f"{100 * lang['captions_with_hidden_feet']:.1f} % describe an image whose feet a barrier hides (tag `hidden`)."
        + (f" Captions per writer: {', '.join(f'{k} {v}' for k, v in lang['writers'].items())}." if lang["writers"] else ""),
    ]
    lines += _families_lines(s) + _files_lines(s, files) + _words_lines(s) + _ceiling_lines(s) + [
        f"Target ranges of words (classic language): {', '.join(f'{g} {lo}-{hi}' for g, (lo, hi) in GRANULARITY_WORDS.items())}.", "",
        "Options: " + json.dumps(cfg), "",
    ]
    atomic_write_bytes(tmp / "CARD.md", "\n".join(lines).encode())


def _families_lines(s: dict[str, Any]) -> list[str]:
    fam = s.get("families") or {}
    if not fam:
        return [""]
    sizes = ", ".join(f"{n} of size {k}" for k, n in fam["families_by_size"].items())
    details = ", ".join(f"{d} {n}" for d, n in fam["variants_by_detail"].items())
    return ["", f"Look-alike families: {sizes}. Variants by separating detail: {details}.", ""]


def _files_lines(s: dict[str, Any], files: dict[str, str]) -> list[str]:
    return [
        "| split | identities | images |", "|---|---|---|",
        *[f"| {k} | {v['identities']} | {v['images']} |" for k, v in s["splits"].items()], "",
        f"- `{files['fine']}` (UFine6926 format): two fine captions per image by the training annotators "
        f"({', '.join(TRAIN_STYLES)}); {s['captions']['fine']} captions.",
        f"- `{files['coarse']}`: the same images with two coarse, CUHK-PEDES-like captions each; {s['captions']['coarse']} captions.",
        f"- `{files['threec']}` (UFine3C format): {s['threec_identities']} identities ({threec_who(s)}), "
        f"{s['captions']['3c_images']} images from the "
        f"training domains ({', '.join(TRAIN_DOMAINS)}) and held-out domains ({', '.join(HELD_OUT_DOMAINS)}), "
        f"{s['captions']['3c_queries']} queries at fine / medium / coarse granularity in the styles {files['query_styles']} "
        f"({files['unseen_styles']} never appear in training captions).",
        f"- `{files['identities']}`: every identity's ground-truth attribute record; `vocabulary.json`: the attribute vocabulary of "
        "the training captions; `preview.png`: a contact sheet.", "",
    ]


def threec_who(s: dict[str, Any]) -> str:
    """Whose images the 3C set shows: its own persons or the test split's."""
    return "persons of its own, in no other file" if "3c" in s["splits"] else "the test split's persons"


def _words_lines(s: dict[str, Any]) -> list[str]:
    lines = ["Words per caption (mean, min-max):", "", "| file | granularity | captions | mean | min | max |", "|---|---|---|---|---|---|"]
    for name, table in s["words"].items():
        for g, v in table.items():
            lines.append(f"| {name} | {g} | {v['captions']} | {v['mean']:.1f} | {v['min']} | {v['max']} |")
    return lines


def _ceiling_lines(s: dict[str, Any]) -> list[str]:
    return [
        "", "Ambiguity: the mean number of test identities whose ground-truth record is consistent with a",
        f"3C query (over its {s['threec_identities']} identities; 1.0 means every caption singles out its person):", "",
        "| granularity | consistent identities |", "|---|---|",
        *[f"| {g} | {v:.2f} |" for g, v in s["ambiguity_test_identities"].items()], "",
        "Ceiling: the R1 a perfect attribute reader would reach (a caption that fits k test identities is",
        "answered first with probability 1/k; 0 when an annotator's mistake rules its own person out); read every model's R1 "
        "against it:", "",
        "| queries | ceiling R1 |", "|---|---|",
        *[f"| {q} | {v:.2f} |" for q, v in s["ceiling_r1"].items()], "",
    ]
