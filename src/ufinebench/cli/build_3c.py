"""``ufinebench build-3c``: a UFine3C-style set from any datasets."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ufinebench.cli.common import positive
from ufinebench.errors import UFineBenchError
from ufinebench.outputs import check_outputs, dataset_inputs
from ufinebench.threec.build import build_3c
from ufinebench.threec.rewriters import LLMRewriter, OfflineRewriter


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "build-3c",
        help="build a UFine3C-style set (cross domain, granularity, style) from any datasets",
        description="Pool the test images of several datasets (source = dataset) and rewrite every caption at other "
        "granularities and in other styles, offline or with an OpenAI-compatible chat-completions server.",
    )
    p.add_argument("--from", dest="sources", action="append", required=True, metavar="DATASET", help="a source dataset (repeatable)")
    p.add_argument("--out", required=True, metavar="FILE.json")
    p.add_argument("--rewriter", choices=["offline", "llm"], default="offline")
    p.add_argument("--llm-url", metavar="URL", help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--llm-model", metavar="NAME")
    p.add_argument("--granularities", default="fine,medium,coarse")
    p.add_argument("--styles", default="plain,narrative,witness,terse,colloquial")
    p.add_argument("--per-caption", type=positive, default=2, metavar="N", help="rewrites per original caption (default 2)")
    p.add_argument("--concurrency", type=int, default=4, metavar="C")
    p.add_argument("--cache", metavar="DIR", help="LLM answer cache (a rerun is free; an interrupted build resumes)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per LLM request (default 60)")
    p.add_argument("--retries", type=int, default=3, help="LLM retries before the offline fallback (default 3)")
    p.add_argument("--prompt-version", default="v1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing --out file and its provenance file (never an input)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs({"--out": args.out, "--cache": args.cache}, [p for src in args.sources for p in dataset_inputs(src)], force=args.force,
                  folders=["--cache"])
    if args.rewriter == "llm":
        if not (args.llm_url and args.llm_model):
            raise UFineBenchError("--rewriter llm needs --llm-url URL and --llm-model NAME (API key from $UFINEBENCH_LLM_API_KEY)")
        rw: LLMRewriter | OfflineRewriter = LLMRewriter(args.llm_url, args.llm_model, cache_dir=args.cache, prompt_version=args.prompt_version,
                         timeout=args.timeout, retries=args.retries, concurrency=args.concurrency)
    else:
        rw = OfflineRewriter(args.prompt_version)
    prov = build_3c(args.sources, args.out, rewriter=rw, granularities=[g.strip() for g in args.granularities.split(",")],
                    styles=[s.strip() for s in args.styles.split(",")], per_caption=args.per_caption, seed=args.seed,
                    progress=sys.stderr.isatty(), force=args.force)
    print(f"{args.out}: {prov['images']} images, {prov['identities']} identities, {prov['queries']} queries "
          f"({prov['rewrites']} rewrites by {prov['rewriter']}) from {', '.join(prov['sources'])}")
    for g, v in prov["words_per_granularity"].items():
        print(f"  {g:9s} {v['captions']:6d} captions, {v['mean']:5.1f} words (min {v['min']}, max {v['max']})")
    if "llm" in prov:
        llm = prov["llm"]
        print(f"  LLM: {llm['requests']} requests, {llm['cache_hits']} cached, {llm['retries']} retries, {llm['fallbacks']} fallbacks "
              f"{llm['failures']}")
    print(f"provenance: {args.out}.provenance.json")
    return 0
