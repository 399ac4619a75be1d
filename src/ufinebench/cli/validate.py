"""``ufinebench validate``: every problem of a dataset's annotations (and images)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ufinebench.cli.common import add_dataset_args, positive
from ufinebench.data.annotations import DataError, check_images, read_annotations
from ufinebench.errors import UFineBenchError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="check a dataset's annotations (and images) and report every problem",
        description=(
            "Check every record of an annotation file: missing or wrong-typed fields, empty captions, "
            "non-integer ids, unknown splits, one image listed with two ids, missing image files; with "
            "--check-images also unreadable, truncated or zero-size images. Exit 0 when clean, 1 otherwise. "
            "Record numbers are 0-based positions in the file's list."
        ),
    )
    add_dataset_args(p)
    p.add_argument("--check-images", action="store_true", help="decode every image (slower)")
    p.add_argument("--workers", type=positive, default=4, help="threads for --check-images (default 4)")
    p.add_argument("--max-problems", type=int, default=200, help="list at most this many problems (0: all; default 200)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not Path(args.dataset).exists():
        raise UFineBenchError(f"{args.dataset}: no such file or folder")
    try:
        ann = read_annotations(args.dataset, args.format)
    except DataError as exc:
        if "unknown format" in str(exc):
            raise
        print(f"{args.dataset}: {exc}")
        print("INVALID: the annotation file cannot be read")
        return 1
    problems = list(ann.problems)
    if args.check_images:
        problems += check_images(ann.samples, workers=args.workers, progress=sys.stderr.isatty())
        problems.sort(key=lambda p: (-1 if p.index is None else p.index))
    errors = [p for p in problems if p.severity == "error"]
    warnings = len(problems) - len(errors)
    shown = problems if args.max_problems <= 0 else problems[: args.max_problems]
    for p in shown:
        print(f"{ann.path}: {p}")
    if len(shown) < len(problems):
        print(f"... and {len(problems) - len(shown)} more (use --max-problems 0 to list all)")
    checked = "images decoded" if args.check_images else "image files present"
    summary = (f"{ann.format}, {ann.num_records:,} records, {len(ann.samples):,} usable, {checked}: "
               f"{len(errors)} error{'s' if len(errors) != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}")
    print(("OK: " if not errors else "INVALID: ") + summary)
    return 0 if not errors else 1
