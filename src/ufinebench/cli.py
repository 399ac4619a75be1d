"""The ``ufinebench`` command line: parses arguments and calls library functions.

Every user-facing failure is a :class:`~ufinebench.errors.UFineBenchError`, printed as one line
on stderr with exit code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ufinebench import __version__
from ufinebench.errors import UFineBenchError

EXIT_USAGE = 2


def _cmd_metrics(args: argparse.Namespace) -> int:
    from ufinebench.io import load_metrics_npz, write_json
    from ufinebench.metrics import metrics_from_features, metrics_from_similarity
    from ufinebench.tables import format_table

    arrays = load_metrics_npz(args.file)
    progress = sys.stderr.isatty()
    common = dict(msd=args.msd, direction=args.direction, progress=progress)
    if "similarity" in arrays:
        res = metrics_from_similarity(arrays["similarity"], arrays["query_ids"], arrays["gallery_ids"], **common)
    else:
        res = metrics_from_features(
            arrays["query_features"], arrays["gallery_features"], arrays["query_ids"], arrays["gallery_ids"], **common
        )
    d = res.as_dict()
    label = f"{args.direction} (mSD: {args.msd})"
    print(format_table({label: d}, extra=("queries", "queries_without_positive")))
    if res.num_queries == 0:
        print("warning: no query has a positive in the gallery; every metric is reported as 0", file=sys.stderr)
    elif res.num_without_positive:
        print(
            f"note: {res.num_without_positive} queries have no positive in the gallery and were left out",
            file=sys.stderr,
        )
    if args.json:
        keys = ("R1", "R5", "R10", "mAP", "mINP", "mSD", "queries", "queries_without_positive")
        write_json(args.json, {k: d[k] for k in keys})
        print(f"wrote {args.json}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ufinebench.demo import run_demo

    return run_demo(out=args.out)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (also used to render --help in the docs)."""
    parser = argparse.ArgumentParser(
        prog="ufinebench",
        description="Ultra-fine-grained text-based person retrieval: data, metrics (R@K, mAP, mINP, mSD), models.",
    )
    parser.add_argument("--version", action="version", version=f"ufinebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    p.add_argument(
        "--direction", choices=["t2i", "i2t"], default="t2i", help="t2i: texts query images (default); i2t: images query texts"
    )
    p.add_argument(
        "--msd",
        choices=["paper", "official"],
        default="paper",
        help="paper: mSD as defined in the paper (default); official: reproduce the released script's numbers",
    )
    p.add_argument("--json", metavar="OUT", help="also write R1 R5 R10 mAP mINP mSD queries queries_without_positive as JSON")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser(
        "demo",
        help="the main job: a worked example of what exists so far",
        description="Run the end-to-end demonstration on data the project generates itself.",
    )
    p.add_argument("--out", metavar="DIR", default="demo_out", help="where the demo writes its files (default: demo_out)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except UFineBenchError as exc:
        print(f"ufinebench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ufinebench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
