"""``ufinebench compare``: results files side by side, with paired bootstrap intervals."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ufinebench.errors import UFineBenchError
from ufinebench.limits import read_json
from ufinebench.significance import paired_bootstrap
from ufinebench.tables import format_table


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="paper-style table of several eval/metrics JSON files",
                       description="Put the results of `ufinebench eval --json` (or `metrics --json`) files side by side; for models "
                       "evaluated on the same queries, the difference in R1 / mAP / mSD with a paired bootstrap interval over queries.")
    p.add_argument("files", nargs="+", metavar="FILE.json")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="resamples of the paired bootstrap over queries for each pair of models evaluated on the same queries (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.bootstrap < 100:
        raise UFineBenchError("--bootstrap: at least 100 resamples")
    rows: dict[str, dict] = {}
    paired: list[tuple[str, dict]] = []  # (model name, per-query results) of every model that has them
    for path in args.files:
        data = read_json(path, "a results file", limit=1 << 30)
        if isinstance(data, dict) and "models" in data:
            for m in data["models"]:
                rows[f"{m.get('name', Path(path).stem)}"] = m["overall"]
                if "rerank" in m:
                    rows[f"{m.get('name', Path(path).stem)} + re-rank"] = m["rerank"]["overall"]
                if "per_query" in m:
                    paired.append((m.get("name", Path(path).stem), m["per_query"]))
        elif isinstance(data, dict) and "R1" in data:
            rows[Path(path).stem] = data
        else:
            raise UFineBenchError(f"{path}: not an output of `ufinebench eval --json` or `ufinebench metrics --json`")
    print(format_table(rows, markdown=args.markdown))
    comparisons = []
    for i, (na, pa) in enumerate(paired):
        for nb, pb in paired[i + 1 :]:
            if pa["query_keys"] != pb["query_keys"]:
                continue  # different queries: no pairing
            row = {"pair": f"{na} - {nb}"}
            for metric, key in (("R1", "R1"), ("mAP", "AP"), ("mSD", "SD")):
                iv = paired_bootstrap(pa[key], pb[key], n_boot=args.bootstrap, seed=args.seed)
                row[f"d{metric}"] = f"{iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}]"
            comparisons.append(row)
    if comparisons:
        print(f"\npaired bootstrap over queries ({args.bootstrap} resamples, seed {args.seed}): difference, 95 % interval")
        width = max(len(r["pair"]) for r in comparisons)
        print(f"{'pair':{width}}  {'dR1':>24}  {'dmAP':>24}  {'dmSD':>24}")
        for r in comparisons:
            print(f"{r['pair']:{width}}  {r['dR1']:>24}  {r['dmAP']:>24}  {r['dmSD']:>24}")
    return 0
