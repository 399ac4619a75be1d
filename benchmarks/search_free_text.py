"""Search that finds the person: descriptions written freely from a test identity's attributes.

    python benchmarks/search_free_text.py --run demo_out/run --data demo_out/data [--people 100] [--seed 0] [--split test]
        [--wording note|sentence|pronoun|list|detailed]
    python benchmarks/search_free_text.py --run demo_out/run --data demo_out/data --queries benchmarks/handwritten_queries.json --split all

The descriptions are NOT made by UFine-Synth's caption generator: this script composes them the
way a person jots down what they saw, from ``identities.jsonl``, in one of five wordings of its
own (``note``: a few salient attributes in a telegraphic order, the default; ``sentence``: one
sentence; ``pronoun``: "I saw a woman in ...", three short sentences; ``list``: gender, top and
bottom only; ``detailed``: sleeves and lengths too, each colour before or after its shape word).
The gallery is one split's images (``--split``: test to report, val to develop on, all for
every image; indexed with ``ufinebench index``); a hit is an image of the described person.
Prints top-1 and top-10 hit rates beside a random ranking's, and what the top-10 hits get
right: the share with the described gender, top colour and bottom colour (a model that knows the
words but not which colour goes with which garment shows it here).

``--write-queries FILE`` writes, instead of searching, an annotation file in UFine-Synth's format
whose records are the split's images, each with four free descriptions of its person as captions
(wordings note, sentence, pronoun, detailed, tagged as the caption's ``granularity``), so that
``ufinebench eval --checkpoint RUN --data FILE --split val`` scores every image of the split
against descriptions in people's words, per wording (docs/training.md, seventh sitting).

``--queries FILE`` searches hand-written descriptions instead: a JSON object whose ``queries`` is
a list of ``[person id, text]`` (``benchmarks/handwritten_queries.json``: eight written by hand
for test persons of the demo's data; ``handwritten_queries_2.json``: twelve more, written before
the query normaliser and held out from its making) and prints each person's best rank.

Every figure is printed twice, in the same run: with the search's query normalisation (unknown
words replaced by known ones, ``ufinebench.search.normalize``; what ``ufinebench search`` and the web
page do) and with the description passed as written (``--no-normalize``), the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path


def describe_freely(a: dict, rng: random.Random) -> str:
    """A witness-style note from attributes: what a person would mention first, in its own words."""
    who = f"{a.get('age', '')} {'woman' if a.get('gender') == 'woman' else 'guy'}".strip()
    parts = [who]
    if a.get("hair_color"):
        parts.append(f"{a['hair_length']} {a['hair_color']} hair" if a.get("hair_length") else f"{a['hair_color']} hair")
    top = a.get("outer") if a.get("outer") not in (None, "none") else a.get("upper_type")
    top_colour = a.get("outer_color") if a.get("outer") not in (None, "none") else a.get("upper_color")
    if top:
        parts.append(f"wearing {top_colour} {top}")
    if a.get("lower_type"):
        parts.append(f"{a['lower_color']} {a['lower_type']}")
    if a.get("shoes_type"):
        parts.append(f"{a['shoes_color']} {a['shoes_type']}")
    extras = []
    if a.get("has_bag") == "yes":
        extras.append(f"{a['bag_color']} {a['bag_type']}")
    if a.get("headwear") not in (None, "none"):
        extras.append(f"{a['headwear_color']} {a['headwear']}")
    if a.get("glasses") not in (None, "none"):
        extras.append(str(a["glasses"]))
    rng.shuffle(extras)
    parts += [f"has a {e}" for e in extras[:2]]
    return ", ".join(parts)


def _top(a: dict) -> tuple[str, str]:
    """(colour, garment) a witness sees on top: the outer layer if any, else the upper garment."""
    if a.get("outer") not in (None, "none"):
        return str(a.get("outer_color")), str(a["outer"])
    return str(a.get("upper_color")), str(a.get("upper_type"))


def describe_sentence(a: dict, rng: random.Random) -> str:
    """One sentence: who, hair, top, bottom, shoes, and a bag if any."""
    who = "woman" if a.get("gender") == "woman" else "man"
    colour, top = _top(a)
    s = (f"a {a.get('age', '')} {who} with {a.get('hair_length', '')} {a.get('hair_color', '')} hair, wearing a {colour} {top}, "
         f"{a.get('lower_color')} {a.get('lower_type')} and {a.get('shoes_color')} {a.get('shoes_type')}")
    if a.get("has_bag") == "yes":
        s += f", carrying a {a.get('bag_color')} {a.get('bag_type')}"
    return " ".join(s.split()) + "."


def describe_pronoun(a: dict, rng: random.Random) -> str:
    """Three short sentences in the first person, top first, hair last."""
    who, p = ("woman", "she") if a.get("gender") == "woman" else ("man", "he")
    colour, top = _top(a)
    return (f"I saw a {who} in a {colour} {top}. {p} had {a.get('lower_color')} {a.get('lower_type')} on and "
            f"{a.get('shoes_color')} {a.get('shoes_type')}. {p} has {a.get('hair_color')} hair.")


def _phrase(colour: str, shape: str, garment: str, rng: random.Random) -> str:
    """A colour and a shape word before a garment, in either order, as people write them."""
    parts = [colour, shape] if rng.random() < 0.5 else [shape, colour]
    return " ".join(p for p in [*parts, garment] if p)


def describe_detailed(a: dict, rng: random.Random) -> str:
    """Sleeves and lengths too, each beside its colour in either order ("beige knee-length skirt" or
    "knee-length beige skirt"): the phrase order of a person, not the caption generator's one."""
    who = "woman" if a.get("gender") == "woman" else "man"
    sleeve = {"long": "long-sleeved", "short": "short-sleeved", "sleeveless": "sleeveless"}.get(str(a.get("upper_sleeve")), "")
    parts = [f"{a.get('age', '')} {who} with {a.get('hair_length', '')} {a.get('hair_color', '')} hair"]
    if a.get("outer") not in (None, "none"):
        parts.append(f"{a.get('outer_color')} {a['outer']} over a {_phrase(str(a.get('upper_color')), sleeve, str(a.get('upper_type')), rng)}")
    else:
        parts.append(_phrase(str(a.get("upper_color")), sleeve, str(a.get("upper_type")), rng))
    length = "" if a.get("lower_length") in (None, "none") else str(a["lower_length"])
    parts.append(_phrase(str(a.get("lower_color")), length, str(a.get("lower_type")), rng))
    parts.append(f"{a.get('shoes_color')} {a.get('shoes_type')}")
    return " ".join(", ".join(parts).split())


def describe_list(a: dict, rng: random.Random) -> str:
    """The bare minimum: gender, top, bottom."""
    colour, top = _top(a)
    return f"{'woman' if a.get('gender') == 'woman' else 'man'}, {colour} {top}, {a.get('lower_color')} {a.get('lower_type')}"


WORDINGS = {"note": describe_freely, "sentence": describe_sentence, "pronoun": describe_pronoun, "list": describe_list,
            "detailed": describe_detailed}


def attribute_shares(wanted: dict, hits: list[dict]) -> dict[str, float]:
    """Share of hits (their persons' attributes) with the described gender, top colour and bottom colour."""
    n = max(len(hits), 1)
    return {
        "gender": sum(h.get("gender") == wanted.get("gender") for h in hits) / n,
        "top colour": sum(_top(h)[0] == _top(wanted)[0] for h in hits) / n,
        "bottom colour": sum(h.get("lower_color") == wanted.get("lower_color") for h in hits) / n,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="checkpoint or run folder (not needed with --write-queries)")
    ap.add_argument("--data", required=True, help="UFine-Synth folder (ufine_synth.json, identities.jsonl)")
    ap.add_argument("--people", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", help="whose persons and images: test (report), val (development) or all")
    ap.add_argument("--wording", choices=sorted(WORDINGS), default="note", help="how the descriptions are worded (default: note)")
    ap.add_argument("--queries", help="hand-written descriptions instead: JSON {'queries': [[person id, text], ...]}")
    ap.add_argument("--write-queries", metavar="FILE", help="write the split's images with free descriptions as captions to FILE, and stop")
    args = ap.parse_args()
    from ufinebench.search.index import SearchIndex, build_index

    data = Path(args.data)
    records = [r for r in json.loads((data / "ufine_synth.json").read_text()) if args.split in ("all", r["split"])]
    if not records:
        print(f"search_free_text: no images in split {args.split!r} of {data / 'ufine_synth.json'}", file=sys.stderr)
        return 2
    ids = sorted({r["id"] for r in records})
    attrs = {}
    for line in (data / "identities.jsonl").read_text().splitlines():
        rec = json.loads(line)
        attrs[int(rec.get("id", len(attrs) + 1))] = rec["attributes"]
    if args.write_queries:
        return _write_queries(records, attrs, data, Path(args.write_queries), args.seed)
    if not args.run:
        ap.error("--run is required (a checkpoint or run folder) unless --write-queries is given")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gallery").mkdir()
        test_file = Path(tmp) / "gallery" / "gallery.json"  # the split alone, beside a link to the images
        (Path(tmp) / "gallery" / "images").symlink_to((data / "images").resolve())
        test_file.write_text(json.dumps(records))
        build_index(args.run, str(test_file), Path(tmp) / "index")  # outside the dataset's folder, as the index requires
        index = SearchIndex(Path(tmp) / "index")
        if args.queries:
            return _hand_written(index, json.loads(Path(args.queries).read_text())["queries"], len(records), args.split)
        rng = random.Random(args.seed)
        people = rng.sample(ids, min(args.people, len(ids)))
        texts = [WORDINGS[args.wording](attrs[pid], rng) for pid in people]
        n_gallery = len(records)
        chance1 = chance10 = 0.0
        for pid in people:
            pos = sum(r["id"] == pid for r in records)
            chance1 += pos / n_gallery
            chance10 += 1 - _none_in_top(n_gallery, pos, 10)
        n = len(people)
        print(f"{n} people, gallery of {n_gallery} {args.split} images ({len(ids)} persons), wording {args.wording!r}; "
              f"random ranking: top-1 {100 * chance1 / n:.1f} %, top-10 {100 * chance10 / n:.1f} %")
        for normalize in (True, False):
            top1 = top10 = 0
            shares = dict.fromkeys(("gender", "top colour", "bottom colour"), 0.0)
            for pid, text in zip(people, texts, strict=True):
                hits = index.search(text, 10, normalize=normalize)
                found = [h.person_id == pid for h in hits]
                top1 += found[0]
                top10 += any(found)
                for key, v in attribute_shares(attrs[pid], [attrs[h.person_id] for h in hits]).items():
                    shares[key] += v
                if pid == people[0]:
                    print(f"example: {index.read(text, normalize).text!r} -> top 10 persons {[h.person_id for h in hits]} (wanted {pid})")
            print(f"{_MODE[normalize]}: top-1 hit rate {100 * top1 / n:.1f} %, top-10 hit rate {100 * top10 / n:.1f} %; top-10 hits with "
                  "the described " + ", ".join(f"{k} {100 * v / n:.0f} %" for k, v in shares.items()))
    return 0


_MODE = {True: "normalised", False: "as written"}


def _hand_written(index: object, queries: list, n_gallery: int, split: str) -> int:
    """Each hand-written description's person: the rank of its first image over the whole index, both ways."""
    summary = []
    for normalize in (True, False):
        ranks = []
        for pid, text in queries:
            hits = index.search(text, n_gallery, normalize=normalize)  # type: ignore[attr-defined]
            rank = next((i + 1 for i, h in enumerate(hits) if h.person_id == int(pid)), None)
            if rank is None:
                print(f"person {pid}: not in the {split} gallery")
                continue
            ranks.append(rank)
            shown = index.read(text, normalize).text  # type: ignore[attr-defined]
            print(f"{_MODE[normalize]}: person {pid}: rank {rank}  {shown!r}")
        if ranks:
            order = sorted(ranks)
            summary.append(f"{_MODE[normalize]}: {len(ranks)} descriptions, gallery of {n_gallery} {split} images: "
                           f"top-1 {sum(r == 1 for r in ranks)}, top-10 {sum(r <= 10 for r in ranks)}, median rank {order[len(order) // 2]}, "
                           f"ranks {' '.join(map(str, ranks))}")
    print("\n".join(summary))
    return 0


EVAL_WORDINGS = ("note", "sentence", "pronoun", "detailed")


def _write_queries(records: list, attrs: dict, data: Path, out: Path, seed: int) -> int:
    """The split's images, each captioned by four free descriptions of its person (one per wording)."""
    rng = random.Random(seed)
    rows = []
    for r in records:
        a = attrs[r["id"]]
        path = os.path.relpath((data / r["file_path"]).resolve(), out.resolve().parent)  # relative to the file, as the format asks
        rows.append({"split": r["split"], "id": r["id"], "file_path": path,
                     "captions": [WORDINGS[w](a, rng) for w in EVAL_WORDINGS],
                     "caption_tags": [{"granularity": w} for w in EVAL_WORDINGS]})
    out.write_text(json.dumps(rows))
    print(f"{out}: {len(rows)} images, {len(rows) * len(EVAL_WORDINGS)} free descriptions ({', '.join(EVAL_WORDINGS)})")
    return 0


def _none_in_top(n: int, pos: int, k: int) -> float:
    p = 1.0
    for i in range(k):
        p *= (n - pos - i) / (n - i)
    return p


if __name__ == "__main__":
    sys.exit(main())
