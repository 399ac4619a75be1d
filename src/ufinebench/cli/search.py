"""``ufinebench search``: rank an index's images for a description."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ufinebench.cli.common import positive
from ufinebench.errors import UFineBenchError
from ufinebench.search.index import SearchIndex


def add_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search an index with a description", description="Rank the indexed images for a description.")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("text", metavar="DESCRIPTION")
    p.add_argument("-k", type=positive, default=10, help="results (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-normalize", action="store_true",
                   help="pass the description to the model as written (by default a word-level model's unknown words, e.g. "
                        "'girl', 'striped', 'in her twenties', are replaced by words it knows; the replacements go to stderr)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.text.strip():
        raise UFineBenchError("the description is empty")
    if args.k < 1:
        raise UFineBenchError("-k must be at least 1")
    index = SearchIndex(args.index, device=args.device)
    read = index.read(args.text, normalize=not args.no_normalize)
    if read.replaced or read.unknown:  # how the model read the description, on stderr so that --json stays parseable
        changes = [f"{a} -> {b or '(dropped)'}" for a, b in read.replaced] + [f"not understood: {', '.join(read.unknown)}"] * bool(read.unknown)
        print("read as: " + "; ".join(changes), file=sys.stderr)
    hits = index.search(read.text, args.k, normalize=False)
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], indent=1))
        return 0
    print(f"{'rank':>4}  {'score':>7}  {'person':>6}  image")
    for h in hits:
        print(f"{h.rank:>4}  {h.score:7.4f}  {'-' if h.person_id is None else h.person_id:>6}  {h.path}")
    return 0
