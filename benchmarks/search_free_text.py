"""Search that finds the person: descriptions written freely from a test identity's attributes.

    python benchmarks/search_free_text.py --run demo_out/run --data demo_out/data [--people 100] [--seed 0] [--split test]

The descriptions are NOT made by UFine-Synth's caption generator: this script composes them the
way a person jots down what they saw (a few salient attributes in a fixed, telegraphic order,
its own wording, no sentences), from ``identities.jsonl``. The gallery is one split's images
(``--split``: test to report, val to develop on; indexed with ``ufinebench index``); a hit is an
image of the described person. Prints top-1 and top-10 hit rates, beside the rates of a random
ranking.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="checkpoint or run folder")
    ap.add_argument("--data", required=True, help="UFine-Synth folder (ufine_synth.json, identities.jsonl)")
    ap.add_argument("--people", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", help="whose persons and images: test (report) or val (development)")
    args = ap.parse_args()
    from ufinebench.serve.index import SearchIndex, build_index

    data = Path(args.data)
    records = [r for r in json.loads((data / "ufine_synth.json").read_text()) if r["split"] == args.split]
    ids = sorted({r["id"] for r in records})
    attrs = {}
    for line in (data / "identities.jsonl").read_text().splitlines():
        rec = json.loads(line)
        attrs[int(rec.get("id", len(attrs) + 1))] = rec["attributes"]
    with tempfile.TemporaryDirectory() as tmp:
        test_file = Path(tmp) / "gallery.json"  # the split alone, beside a link to the images
        (Path(tmp) / "images").symlink_to((data / "images").resolve())
        test_file.write_text(json.dumps(records))
        build_index(args.run, str(test_file), Path(tmp) / "index")
        index = SearchIndex(Path(tmp) / "index")
        rng = random.Random(args.seed)
        people = rng.sample(ids, min(args.people, len(ids)))
        top1 = top10 = 0
        chance1 = chance10 = 0.0
        n_gallery = len(records)
        for pid in people:
            text = describe_freely(attrs[pid], rng)
            hits = index.search(text, 10)
            found = [h.person_id == pid for h in hits]
            top1 += found[0]
            top10 += any(found)
            pos = sum(r["id"] == pid for r in records)
            chance1 += pos / n_gallery
            chance10 += 1 - _none_in_top(n_gallery, pos, 10)
            if pid == people[0]:
                print(f"example: {text!r} -> top 10 persons {[h.person_id for h in hits]} (wanted {pid})")
    n = len(people)
    print(f"{n} people, gallery of {n_gallery} {args.split} images ({len(ids)} persons)")
    print(f"top-1 hit rate {100 * top1 / n:.1f} %  (random ranking {100 * chance1 / n:.1f} %)")
    print(f"top-10 hit rate {100 * top10 / n:.1f} %  (random ranking {100 * chance10 / n:.1f} %)")
    return 0


def _none_in_top(n: int, pos: int, k: int) -> float:
    p = 1.0
    for i in range(k):
        p *= (n - pos - i) / (n - i)
    return p


if __name__ == "__main__":
    sys.exit(main())
