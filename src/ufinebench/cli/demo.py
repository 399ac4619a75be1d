"""``ufinebench demo``: the main job on the embedded benchmark."""

from __future__ import annotations

import argparse
from typing import Any

from ufinebench.demo import run_demo


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: generate UFine-Synth, train CFAM, evaluate in-domain and 3C, write the report",
        description="End to end on the embedded benchmark: generate UFine-Synth (standard), train the synth-cpu-small CFAM, "
        "evaluate in-domain and on the 3C-style set (with re-ranking), write an HTML report, print the tables. "
        "About 8 minutes on 2 CPU cores (an epoch took ~21 s on the development machine); a rerun reuses the data "
        "and a finished training.",
    )
    p.add_argument("--out", metavar="DIR", default="demo_out", help="where the demo writes its files (default: demo_out)")
    p.add_argument("--quick", action="store_true",
                   help="a one-to-two-minute miniature (tiny data and model): it shows the pipeline runs; its figures mean little")
    p.add_argument("--fresh", action="store_true", help="start over: delete what an earlier demo wrote in DIR (nothing else)")
    p.add_argument("--force", action="store_true", help="write into DIR although it holds files the demo did not write (they are kept)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(out=args.out, quick=args.quick, fresh=args.fresh, force=args.force)
