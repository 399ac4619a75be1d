"""A self-contained HTML report of one or more evaluated models (opens from disk, fetches nothing).

Sections: metrics table (and re-ranked figures), per-subset bars, CMC curves, histograms of
positive versus negative similarities (what mSD measures), example queries with their top 10
(green border: the right person; red: someone else), including the worst queries by AP, and
each run's config. Plots are matplotlib PNGs and images are JPEG thumbnails, all inlined as
data URIs.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ufinebench.data.annotations import subset_sort_key
from ufinebench.data.transforms import load_image
from ufinebench.errors import UFineBenchError
from ufinebench.evaluate import score_rows
from ufinebench.io import atomic_write_bytes
from ufinebench.outputs import add_entries, claim_dir
from ufinebench.tables import METRIC_COLUMNS

THUMB = (40, 120)  # (W, H) of example thumbnails


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt  # heavy (about a second): loaded only when a report is drawn

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(path: str) -> str:
    """A small JPEG of an example image as a data URI, through the guarded loader; "" when it cannot be shown."""
    try:
        small = load_image(path).resize(THUMB)
    except (UFineBenchError, OSError):  # missing, not a regular file, too many pixels, broken
        return ""
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt() -> Any:
    """matplotlib's pyplot on the Agg back-end (heavy: imported only when a report is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _subset_bars(results: list[dict[str, Any]], key: str, metric: str = "R1") -> str:
    plt = _plt()
    values = sorted({v for r in results for v in r["breakdown"].get(key, {})}, key=subset_sort_key)
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(values) * len(results) + 2), 3))
    width = 0.8 / len(results)
    top = 0.0
    for j, r in enumerate(results):
        b = r["breakdown"].get(key, {})
        heights = [b.get(v, {}).get(metric, 0.0) for v in values]
        ax.bar([i + j * width for i in range(len(values))], heights, width=width, label=r["name"])
        top = max([top, *heights])
    if len(results) > 1:  # a legend, with headroom above the tallest bar (one model: the metrics table names it)
        ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(values))])
    ax.set_xticklabels([f"{v}\n({results[0]['breakdown'].get(key, {}).get(v, {}).get('queries', 0)})" for v in values], fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by {key} (queries per subset in brackets)")
    return _png(fig)


def _cmc(results: list[dict[str, Any]], kmax: int = 20) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    ks = np.arange(1, kmax + 1)
    for r in results:
        pq = r["_features"].per_query
        first = pq.first_hit_rank[pq.has_positive]
        ax.plot(ks, [100.0 * np.mean(first <= k) for k in ks], marker=".", label=r["name"])
    ax.set_xlabel("rank k")
    ax.set_ylabel("R@k (%)")
    ax.set_title("CMC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _similarity_hist(r: dict[str, Any], max_queries: int = 400) -> str:
    plt = _plt()
    f = r["_features"]
    nq = len(f.query_ids)
    rng = np.random.default_rng(0)
    pick = rng.choice(nq, size=min(max_queries, nq), replace=False)
    s = score_rows(f, pick)  # (n, G)
    pos = f.query_ids[pick][:, None] == f.gallery_ids[None, :]
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(min(-1.0, float(s.min())), max(1.0, float(s.max())), 81)
    ax.hist(s[~pos], bins=bins, density=True, alpha=0.6, label="negatives", color="#c0392b")
    ax.hist(s[pos], bins=bins, density=True, alpha=0.6, label="positives", color="#27ae60")
    ax.set_xlim(float(s.min()) - 0.05, float(s.max()) + 0.05)
    ax.set_xlabel("similarity" if f.similarity is not None else "cosine similarity")
    msd = r["overall"]["mSD"]
    ax.set_title(f"{r['name']}: mSD {'-' if msd is None else f'{msd:.2f}'}")
    ax.legend(fontsize=8)
    return _png(fig)


def _examples(r: dict[str, Any], n_random: int = 4, n_worst: int = 4) -> str:
    f = r["_features"]
    pq = f.per_query
    valid = np.flatnonzero(pq.has_positive)
    rng = np.random.default_rng(1)
    chosen = [("random", int(i)) for i in rng.choice(valid, size=min(n_random, len(valid)), replace=False)]
    worst = valid[np.argsort(pq.ap[valid], kind="stable")[:n_worst]]
    chosen += [("worst by AP", int(i)) for i in worst]
    rows = []
    missing = sum(not Path(p).is_file() for p in f.gallery_paths)
    if missing:
        rows.append(f'<p class="note">{missing} of {len(f.gallery_paths)} gallery images are not where the annotation says '
                    "(scores evaluated without the images): their thumbnails are left out.</p>")
    for label, qi in chosen:
        s = score_rows(f, np.asarray([qi]))[0]
        top = np.argsort(-s, kind="stable")[:10]
        cells = []
        for rank, gi in enumerate(top, 1):
            ok = f.gallery_ids[gi] == f.query_ids[qi]
            src = _thumb(f.gallery_paths[gi])
            cells.append(
                f'<figure class="{"hit" if ok else "miss"}"><img src="{src}" alt="rank {rank}" width="{THUMB[0]}" height="{THUMB[1]}">'
                f"<figcaption>{s[gi]:.3f}</figcaption></figure>"
            )
        tags = ", ".join(f"{k}: {v}" for k, v in f.query_tags[qi].items() if k != "mentions")
        rows.append(
            f'<div class="example"><p><b>{label}</b> · AP {100 * pq.ap[qi]:.1f} · first hit at rank {pq.first_hit_rank[qi]} · '
            f'<span class="tags">{html.escape(tags)}</span><br>{html.escape(f.query_texts[qi])}</p><div class="row">{"".join(cells)}</div></div>'
        )
    return "\n".join(rows)


def _table(results: list[dict[str, Any]]) -> str:
    cols = list(METRIC_COLUMNS) + ["queries"]
    head = "".join(f"<th>{c}</th>" for c in ["model"] + cols)
    body = []
    for r in results:
        reranked = [(f"{r['name']} + re-rank top {r['rerank']['topk']}", r["rerank"]["overall"])] if "rerank" in r else []
        for label, d in [(r["name"], r["overall"]), *reranked]:
            body.append("<tr>" + f"<td>{html.escape(label)}</td>" + "".join(
                f"<td>{d[c]}</td>" if c == "queries" else "<td>-</td>" if d[c] is None else f"<td>{d[c]:.2f}</td>" for c in cols) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_report(results: list[dict[str, Any]], out_dir: str | Path, *, dataset: str = "", split: str = "", force: bool = False) -> Path:
    """Write ``out_dir/index.html`` (self-contained) for the evaluated models.

    ``out_dir`` is the report's own folder: one holding other files needs ``force`` (they are kept).
    """

    out_dir = Path(out_dir)
    claim_dir(out_dir, "report", force=force)
    add_entries(out_dir, "report", ["index.html"])
    keys = [k for k in ("source", "granularity", "style", "words") if any(k in r["breakdown"] for r in results)]
    parts = [
        f"<h1>ufinebench evaluation</h1><p>Dataset <code>{html.escape(dataset)}</code>, split <code>{html.escape(split)}</code>, "
        f"text-to-image; mSD variant: {html.escape(results[0].get('msd_variant', 'paper'))}.</p>",
        "<h2>Metrics</h2>", _table(results),
    ]
    if any("rerank" in r for r in results):
        parts.append("<p>" + "; ".join(f"{html.escape(r['name'])}: re-ranking took {r['rerank']['seconds']:.2f} s "
                                        f"(encoding {r['seconds']['encode']:.2f} s)" for r in results if "rerank" in r) + "</p>")
    parts.append("<h2>Breakdown</h2>")
    for k in keys:
        parts.append(f'<img class="plot" src="{_subset_bars(results, k)}" alt="R1 by {k}">')
    parts += ["<h2>CMC</h2>", f'<img class="plot" src="{_cmc(results)}" alt="CMC curve">',
              "<h2>Similarity distributions</h2><p>Positive and negative similarities of up to 400 queries: mSD rewards "
              "their separation, which rank metrics do not see.</p>"]
    parts += [f'<img class="plot" src="{_similarity_hist(r)}" alt="similarity histogram {html.escape(r["name"])}">' for r in results]
    for r in results:
        parts += [f"<h2>Examples: {html.escape(r['name'])}</h2>", _examples(r)]
    parts.append("<h2>Configs</h2>")
    for r in results:
        parts.append(f"<h3>{html.escape(r['name'])}</h3><pre>{html.escape(json.dumps(r.get('config', {}), indent=1))}</pre>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        ".row{display:flex;gap:4px;flex-wrap:wrap}figure{margin:0;text-align:center;font-size:11px;border:3px solid}"
        ".hit{border-color:#27ae60}.miss{border-color:#c0392b}.example{margin:1em 0}.tags{color:#666;font-size:12px}"
        ".plot{max-width:100%;margin:0.5em 0}pre{background:#f6f6f6;padding:0.5em;font-size:11px;overflow:auto}"
    )
    head = f'<head><meta charset="utf-8"><title>ufinebench report</title><style>{style}</style></head>'
    page = f'<!doctype html><html>{head}<body>{"".join(parts)}</body></html>'
    atomic_write_bytes(out_dir / "index.html", page.encode("utf-8"))
    return out_dir / "index.html"
