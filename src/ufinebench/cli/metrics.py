"""``ufinebench metrics``: R@K, mAP, mINP and mSD from a .npz of similarities or features."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ufinebench.io import load_metrics_npz, write_json
from ufinebench.metrics import metrics_from_features, metrics_from_similarity
from ufinebench.outputs import check_outputs
from ufinebench.tables import format_table


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "metrics",
        help="compute R1 R5 R10 mAP mINP mSD from a .npz of similarities or features",
        description=(
            "Compute retrieval metrics from a .npz holding either `similarity` (Q x G), `query_ids`, "
            "`gallery_ids`, or `query_features` (Q x D), `gallery_features` (G x D), `query_ids`, "
            "`gallery_ids`. Queries are texts, the gallery is images; ranking is by descending "
            "similarity with ties broken by gallery index. Queries without a positive in the gallery "
            "are left out and counted."
        ),
    )
    p.add_argument("file", metavar="FILE.npz", help="similarities or features with person ids")
    p.add_argument("--direction", choices=["t2i", "i2t"], default="t2i", help="t2i: texts query images (default); i2t: images query texts")
    p.add_argument("--msd", choices=["paper", "official"], default="paper",
                   help="paper: mSD as defined in the paper (default); official: reproduce the released script's numbers")
    p.add_argument("--json", metavar="OUT", help="also write R1 R5 R10 mAP mINP mSD queries queries_without_positive as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --json file (a regular file; never the input)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs({"--json": args.json}, [args.file], force=args.force)
    arrays = load_metrics_npz(args.file)
    common = dict(msd=args.msd, direction=args.direction, progress=sys.stderr.isatty())
    if "similarity" in arrays:
        res = metrics_from_similarity(arrays["similarity"], arrays["query_ids"], arrays["gallery_ids"], **common)
    else:
        res = metrics_from_features(arrays["query_features"], arrays["gallery_features"], arrays["query_ids"], arrays["gallery_ids"], **common)
    d = res.as_dict()
    print(format_table({f"{args.direction} (mSD: {args.msd})": d}, extra=("queries", "queries_without_positive")))
    if res.msd_note:
        print(f"note: {res.msd_note}", file=sys.stderr)
    if res.num_queries == 0:
        print("warning: no query has a positive in the gallery; every metric is reported as 0", file=sys.stderr)
    elif res.num_without_positive:
        print(f"note: {res.num_without_positive} queries have no positive in the gallery and were left out", file=sys.stderr)
    if args.json:
        keys = ("R1", "R5", "R10", "mAP", "mINP", "mSD", "queries", "queries_without_positive")
        write_json(args.json, {k: d[k] for k in keys})
        print(f"wrote {args.json}")
    return 0
