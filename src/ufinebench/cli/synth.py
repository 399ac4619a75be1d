"""``ufinebench synth``: generate UFine-Synth."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ufinebench.cli.common import parse_pair
from ufinebench.synth.build import DIFFICULTY_LEVELS, SynthConfig, build


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "synth",
        help="generate UFine-Synth, the embedded ultra-fine-grained benchmark",
        description=(
            "Generate a UFine-Synth dataset into OUT: images, ufine_synth.json (UFine6926 format, fine captions), "
            "ufine_synth_coarse.json (coarse twin), ufine_synth_3c.json (UFine3C format: held-out domains, "
            "granularities and styles), vocabulary.json (the attribute vocabulary of its captions), identities.jsonl, "
            "preview.png and CARD.md. Same options, same bytes."
        ),
    )
    p.add_argument("out", metavar="OUT", help="output folder (absent or empty, or a UFine-Synth dataset with --overwrite)")
    p.add_argument("--identities", type=int, default=1000, help="number of persons (default 1000)")
    p.add_argument("--images-per-id", default="2:5", metavar="A:B", help="images per person, drawn from A..B (default 2:5)")
    p.add_argument("--size", default="384x128", metavar="HxW", help="image size (default 384x128, the real aspect)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPU cores)")
    p.add_argument("--extra-3c-images", type=int, default=2, help="held-out-domain images per test person (default 2)")
    p.add_argument("--difficulty", choices=list(DIFFICULTY_LEVELS), default="standard",
                   help="standard (default): look-alike families of 3 differing in one small detail (40 %% of the persons), half "
                   "the 3C test persons in held-out domains only, annotators with their own habits who leave details out (15 %%) "
                   "and misname a shade or side (3 %%), everyday language with held-out words, varied camera framing; hard: "
                   "families of 5 for everyone, 25 %% / 6 %%; easy: the classic generator (no look-alikes, template language, "
                   "fixed framing; byte-identical to builds of 2026-12-06 and before)")
    p.add_argument("--family-size", type=int, help="look-alike family size (1: none; default: as the level says)")
    p.add_argument("--family-details", type=int, help="separating details per family member, 1-3 (default: as the level says)")
    p.add_argument("--family-fraction", type=float, help="share of identities in look-alike families (default: as the level says)")
    p.add_argument("--heldout-only", type=float, help="fraction of test persons shown in the 3C gallery only in held-out domains")
    p.add_argument("--omit", type=float, help="probability that a caption leaves out each optional detail (default: as the level says)")
    p.add_argument("--mistake", type=float, help="probability that a caption misnames one shade or side (default: as the level says)")
    p.add_argument("--threec-persons", type=float, help="the 3C set's own persons, as a share of --identities (0: the test "
                   "persons; default: as the level says, 0.325 = UFine3C's 2,250 per UFine6926's 6,926 above easy)")
    p.add_argument("--language", choices=["classic", "everyday"], help="caption language (default: as the level says)")
    p.add_argument("--camera", choices=["fixed", "varied"], help="camera framing (default: as the level says)")
    p.add_argument("--overwrite", action="store_true", help="replace the UFine-Synth dataset this command wrote in OUT (nothing else)")
    p.add_argument("--force", action="store_true", help="write into OUT although it holds other files (they are kept)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = SynthConfig(identities=args.identities, images_per_id=parse_pair(args.images_per_id, ":", "--images-per-id"),
                      size=parse_pair(args.size, "x", "--size"), seed=args.seed, extra_3c_images=args.extra_3c_images,
                      difficulty=args.difficulty, family_size=args.family_size, family_details=args.family_details,
                      heldout_only=args.heldout_only, omit=args.omit, mistake=args.mistake,
                      family_fraction=args.family_fraction, language=args.language, camera=args.camera,
                      threec_persons=args.threec_persons)
    workers = args.workers or (os.cpu_count() or 1)
    s = build(args.out, cfg, workers=workers, overwrite=args.overwrite, force=args.force, progress=sys.stderr.isatty())
    print(f"UFine-Synth: {s['identities']} identities, {s['images']} images in {s['seconds']} s "
          f"({s['images'] / max(s['seconds'], 1e-9):.0f} images/s with {workers} workers)")
    for split, v in s["splits"].items():
        print(f"  {split:5s} {v['identities']:6d} identities {v['images']:7d} images")
    print(f"  3C set: {s['threec_identities']} identities, {s['captions']['3c_images']} images, {s['captions']['3c_queries']} queries")
    amb = ", ".join(f"{g} {v:.2f}" for g, v in s["ambiguity_test_identities"].items())
    print(f"  test identities consistent with a caption, mean by granularity: {amb}")
    print("  ceiling R1 (a perfect attribute reader): " + ", ".join(f"{q} {v:.1f}" for q, v in s["ceiling_r1"].items()))
    print(f"wrote {args.out} (see {args.out}/CARD.md and {args.out}/preview.png)")
    return 0
