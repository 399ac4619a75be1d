"""``ufinebench stats``: a dataset's figures per split."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ufinebench.cli.common import add_dataset_args
from ufinebench.data.annotations import read_annotations
from ufinebench.data.stats import dataset_stats, format_stats, plot_word_histogram
from ufinebench.errors import UFineBenchError
from ufinebench.io import write_json
from ufinebench.outputs import check_outputs, dataset_inputs


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "stats",
        help="identities, images, captions per split; words per caption; vocabulary",
        description="Dataset statistics per split: counts, words per caption (mean, median, 5th/95th "
        "percentile, histogram), captions per image, images per identity, vocabulary size.",
    )
    add_dataset_args(p)
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="also draw the word-count histogram")
    p.add_argument("--force", action="store_true", help="replace existing --json / --plot files (regular files; never an input)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs({"--json": args.json, "--plot": args.plot}, dataset_inputs(args.dataset, args.format), force=args.force)
    ann = read_annotations(args.dataset, args.format)
    if ann.errors:
        print(f"note: {len(ann.errors)} invalid records left out of the figures (see `ufinebench validate {args.dataset}`)", file=sys.stderr)
    if not ann.samples:
        raise UFineBenchError(f"{ann.path}: no usable records")
    st = dataset_stats(ann)
    print(format_stats(st))
    if args.json:
        write_json(args.json, st)
        print(f"wrote {args.json}")
    if args.plot:
        plot_word_histogram(st, args.plot)
        print(f"wrote {args.plot}")
    return 0
