"""``ufinebench eval``: checkpoints and other models' scores on a split; tables, JSON, features, report."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from ufinebench.cli.common import nonnegative, positive
from ufinebench.data.annotations import FORMATS, load_dataset
from ufinebench.data.datasets import evaluation_keys
from ufinebench.errors import UFineBenchError
from ufinebench.evaluate import BREAKDOWN_KEYS, EvalRequest, EvalRun, run_eval
from ufinebench.io import save_metrics_npz, write_json
from ufinebench.outputs import check_outputs, dataset_inputs
from ufinebench.report import write_report
from ufinebench.tables import format_table


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate checkpoints on a dataset split: metrics, 3C breakdowns, re-ranking, HTML report",
        description="Encode the gallery (unique images) and queries (every caption) of a split, compute R1 R5 R10 mAP "
        "mINP mSD overall and per source / granularity / style / caption length, optionally re-rank each query's top K "
        "with the matcher, and write JSON, features and a self-contained HTML report.",
    )
    p.add_argument("--checkpoint", action="append", default=[], metavar="RUN_OR_CKPT", help="run folder or checkpoint (repeat to compare)")
    p.add_argument("--scores", action="append", default=[], metavar="FILE.npz",
                   help="scores of a model that is not ours: 'similarity' (Q, G; higher = more similar) or 'query_features' and "
                   "'gallery_features', with 'query_keys' / 'gallery_keys' (FILE_PATH#N / FILE_PATH) or in --write-order's order "
                   "(repeatable; beside --checkpoint)")
    p.add_argument("--name", action="append", default=[], metavar="NAME", help="a name for each --scores, in order (default: the file name)")
    p.add_argument("--write-order", metavar="ORDER.json", help="only write the split's query and gallery keys, in evaluation order, and stop")
    p.add_argument("--data", required=True, metavar="DATASET", help="annotation file, or the dataset folder that holds it")
    p.add_argument("--format", choices=list(FORMATS), help="dataset format when it cannot be inferred")
    p.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for every record)")
    p.add_argument("--rerank-topk", type=int, default=0, metavar="K",
                   help="re-rank each query's top K with the matcher (the checkpoint's blend was chosen on val at one depth, "
                        "10 for the presets; another K uses it unchanged and says so)")
    p.add_argument("--rerank-weight", default="checkpoint", metavar="W",
                   help="re-rank score = cos / T + W * matcher logit; 'matcher' orders by the matcher alone; "
                        "default: the weight training chose on the val split (kept in the checkpoint)")
    p.add_argument("--check-weight", default="checkpoint", metavar="V",
                   help="re-ranking adds V * the attribute check (mean log-probability of the query's attribute words, from the "
                        "image's word head; models trained with data.attribute_words); default: the weight chosen on val")
    p.add_argument("--granularity-weight", type=float, metavar="W",
                   help="retrieval score = (global cosine + W * granularity cosine) / (1 + W) for CFAM checkpoints; "
                        "default: the checkpoint's model.granularity_weight")
    p.add_argument("--msd", choices=["paper", "official"], default="paper", help="mSD variant (default paper)")
    p.add_argument("--json", metavar="OUT", help="write all figures as JSON (input of `ufinebench compare`)")
    p.add_argument("--report", metavar="DIR", help="write DIR/index.html")
    p.add_argument("--save-features", metavar="OUT.npz", help="write features and ids (input of `ufinebench metrics`)")
    p.add_argument("--force", action="store_true", help="replace existing --json / --save-features / --write-order files, and write the "
                   "report into DIR although it holds other files (they are kept)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=positive, default=64)
    p.set_defaults(func=run)


def feature_paths(save_features: str | None, n: int) -> list[str]:
    """Where --save-features writes n checkpoints' features: the path itself for one, PATH_1.npz, PATH_2.npz, ... for several."""
    if not save_features:
        return []
    return [save_features] if n == 1 else [str(Path(save_features).with_suffix("")) + f"_{i}.npz" for i in range(1, n + 1)]


def _request(args: argparse.Namespace) -> EvalRequest:
    """The arguments checked and turned into an :class:`EvalRequest` (one-line errors for what cannot work)."""
    if args.rerank_topk < 0:
        raise UFineBenchError("--rerank-topk must be positive")
    if not (args.checkpoint or args.scores or args.write_order):
        raise UFineBenchError("give --checkpoint RUN (ours), --scores FILE.npz (any model's), or --write-order ORDER.json")
    if len(args.name) > len(args.scores):
        raise UFineBenchError(f"{len(args.name)} --name for {len(args.scores)} --scores")
    if args.save_features and not args.checkpoint:
        raise UFineBenchError("--save-features writes the features a --checkpoint computes; --scores files are saved already")
    weight: float | None | str = args.rerank_weight
    if weight == "matcher":
        weight = None
    elif weight != "checkpoint":
        weight = nonnegative(args.rerank_weight, "--rerank-weight", ", 'matcher' or 'checkpoint'")
    check_weight: float | str = "checkpoint"
    if args.check_weight != "checkpoint":
        check_weight = nonnegative(args.check_weight, "--check-weight", " or 'checkpoint'")
    if args.granularity_weight is not None and not (math.isfinite(args.granularity_weight) and args.granularity_weight >= 0):
        raise UFineBenchError(f"--granularity-weight: must be a finite number >= 0, got {args.granularity_weight!r}")
    return EvalRequest(args.data, args.split, args.format, tuple(args.checkpoint), tuple(args.scores), tuple(args.name), args.rerank_topk,
                       weight, check_weight, args.granularity_weight, args.msd, args.device, args.batch_size, sys.stderr.isatty())


def run(args: argparse.Namespace) -> int:
    req = _request(args)
    outputs = {"--json": args.json, "--report": args.report, "--write-order": args.write_order,
               **{f"--save-features ({p})": p for p in feature_paths(args.save_features, len(args.checkpoint))}}
    check_outputs(outputs, [*dataset_inputs(args.data, args.format), *args.checkpoint, *args.scores], folders=["--report"], force=args.force)
    if args.write_order:
        ann = load_dataset(args.data, args.format, split=args.split, check_files=False)
        qk, gk = evaluation_keys(ann.split(args.split))
        write_json(args.write_order, {"dataset": str(ann.path), "split": args.split, "query_keys": qk, "gallery_keys": gk})
        print(f"wrote {args.write_order}: {len(qk)} query keys (FILE_PATH#N), {len(gk)} gallery keys (FILE_PATH), in evaluation order")
        return 0
    res = run_eval(req)
    if res.rank != 0:  # only the first process reports
        return 0
    _print_tables(res, args.msd)
    _write_outputs(res, args)
    return 0


def _print_tables(res: EvalRun, msd: str) -> None:
    rows = {}
    for r in res.results:
        rows[r["name"]] = r["overall"]
        if "rerank" in r:
            w, v = r["rerank"]["weight"], r["rerank"].get("check_weight", 0.0)
            how = "matcher alone" if w is None else f"weight {w:g}" + (f", attribute check {v:g}" if v else "")
            rows[f"{r['name']} + re-rank top {r['rerank']['topk']}, {how} ({r['rerank']['seconds']:.1f} s)"] = r["rerank"]["overall"]
            if "note" in r["rerank"]:
                print(f"note: {r['name']}: {r['rerank']['note']}", file=sys.stderr)
    print(f"{res.dataset} [{res.split}]: {len(res.samples)} images, text-to-image, mSD {msd}\n")
    print(format_table(rows))
    for key in BREAKDOWN_KEYS:
        if any(key in r["breakdown"] for r in res.results):
            table = {f"{r['name']} | {v}": d for r in res.results for v, d in r["breakdown"].get(key, {}).items()}
            print(f"\nby {key}:")
            print(format_table(table))


def _write_outputs(res: EvalRun, args: argparse.Namespace) -> None:
    if args.json:
        write_json(args.json, {"dataset": str(res.dataset), "split": res.split, "msd_variant": args.msd,
                               "models": [{k: v for k, v in r.items() if not k.startswith("_")} for r in res.results]})
        print(f"\nwrote {args.json}")
    if args.save_features:
        ours = [r for r in res.results if r["arch"] != "scores"]  # features computed here (--scores files exist already)
        for r, target in zip(ours, feature_paths(args.save_features, len(ours)), strict=True):
            f = r["_features"]
            save_metrics_npz(target, query_features=f.query_features, gallery_features=f.gallery_features, query_ids=f.query_ids,
                             gallery_ids=f.gallery_ids)
            print(f"wrote {target}")
    if args.report:
        page = write_report(res.results, args.report, dataset=str(res.dataset), split=res.split, force=args.force)
        print(f"wrote {page}")
