"""``ufinebench compare``: results files side by side, with paired bootstrap intervals."""

from __future__ import annotations

import argparse
import json
import math
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


METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mINP", "mSD")


def _figures(value: Any, where: str) -> dict[str, Any]:
    """A results row: a JSON object whose metrics are numbers (or null: mSD may be missing); else a one-line error."""
    if not isinstance(value, dict) or "R1" not in value:
        raise UFineBenchError(f"{where}: expected an object of figures (R1, R5, R10, mAP, mINP, mSD)")
    for k in METRIC_KEYS:
        v = value.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise UFineBenchError(f"{where}.{k}: expected a number, got {json.dumps(v)[:40]}")
    q = value.get("queries")
    if q is not None and (isinstance(q, bool) or not isinstance(q, int)):
        raise UFineBenchError(f"{where}.queries: expected a whole number, got {json.dumps(q)[:40]}")
    return value


def _per_query(value: Any, where: str) -> dict[str, Any]:
    """A model's per-query record (query keys, R1 / AP / SD per query: numbers or null), checked."""
    if not isinstance(value, dict) or not isinstance(value.get("query_keys"), list):
        raise UFineBenchError(f"{where}: expected query_keys and per-query R1 / AP / SD lists")
    n = len(value["query_keys"])
    for k in ("R1", "AP", "SD"):
        col = value.get(k)
        if not isinstance(col, list) or len(col) != n or not all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                                and math.isfinite(x)) for x in col):
            raise UFineBenchError(f"{where}.{k}: expected {n} numbers (or nulls), one per query")
    return value


def _read_results(path: str) -> tuple[dict[str, dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """Table rows and (model name, per-query record) pairs of one results file, every part checked."""
    data = read_json(path, "a results file", limit=1 << 30)
    rows: dict[str, dict[str, Any]] = {}
    paired: list[tuple[str, dict[str, Any]]] = []
    if isinstance(data, dict) and "models" in data:
        if not isinstance(data["models"], list):
            raise UFineBenchError(f"{path}: models must be a list")
        for j, m in enumerate(data["models"]):
            where = f"{path}: models[{j}]"
            if not isinstance(m, dict):
                raise UFineBenchError(f"{where}: expected an object")
            name = str(m.get("name", Path(path).stem))
            rows[name] = _figures(m.get("overall"), f"{where}.overall")
            if "rerank" in m:
                rr = m["rerank"]
                rows[f"{name} + re-rank"] = _figures(rr.get("overall") if isinstance(rr, dict) else None, f"{where}.rerank.overall")
            if "per_query" in m:
                paired.append((name, _per_query(m["per_query"], f"{where}.per_query")))
    elif isinstance(data, dict) and "R1" in data:
        rows[Path(path).stem] = _figures(data, path)
    else:
        raise UFineBenchError(f"{path}: not an output of `ufinebench eval --json` or `ufinebench metrics --json`")
    return rows, paired


def run(args: argparse.Namespace) -> int:
    if args.bootstrap < 100:
        raise UFineBenchError("--bootstrap: at least 100 resamples")
    rows: dict[str, dict[str, Any]] = {}
    paired: list[tuple[str, dict[str, Any]]] = []  # (model name, per-query results) of every model that has them
    for path in args.files:
        file_rows, file_pairs = _read_results(path)
        rows.update(file_rows)
        paired += file_pairs
    print(format_table(rows, markdown=args.markdown))
    comparisons = []
    for i, (na, pa) in enumerate(paired):
        for nb, pb in paired[i + 1 :]:
            if pa["query_keys"] != pb["query_keys"]:
                continue  # different queries: no pairing
            row: dict[str, str] = {"pair": f"{na} - {nb}"}
            for metric, key in (("R1", "R1"), ("mAP", "AP"), ("mSD", "SD")):
                try:
                    iv = paired_bootstrap(pa[key], pb[key], n_boot=args.bootstrap, seed=args.seed)
                except ValueError:  # no query has both values (mSD not reported by one of them)
                    row[f"d{metric}"] = "-"
                    continue
                row[f"d{metric}"] = f"{iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}]"
            comparisons.append(row)
    if comparisons:
        print(f"\npaired bootstrap over queries ({args.bootstrap} resamples, seed {args.seed}): difference, 95 % interval")
        width = max(len(r["pair"]) for r in comparisons)
        print(f"{'pair':{width}}  {'dR1':>24}  {'dmAP':>24}  {'dmSD':>24}")
        for r in comparisons:
            print(f"{r['pair']:{width}}  {r['dR1']:>24}  {r['dmAP']:>24}  {r['dmSD']:>24}")
    return 0
