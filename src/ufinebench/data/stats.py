"""Dataset statistics in the shape of the paper's dataset tables and word-count figure."""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ufinebench.data.annotations import Annotations, Sample
from ufinebench.io import atomic_write_bytes

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
HIST_BIN_WIDTH = 10  # words per histogram bin


def words(caption: str) -> list[str]:
    """Lower-cased word tokens of a caption (letters/digits, inner apostrophes kept)."""
    return _WORD.findall(caption.lower())


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not len(values):
        return {"mean": 0.0, "median": 0.0, "p5": 0.0, "p95": 0.0, "min": 0.0, "max": 0.0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "p5": float(np.percentile(a, 5)),
        "p95": float(np.percentile(a, 95)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def split_stats(samples: Sequence[Sample]) -> dict[str, Any]:
    """Counts and distributions for one group of samples."""
    ids = Counter(s.person_id for s in samples)
    images = {s.file_path for s in samples}
    caps = [c for s in samples for c in s.captions]
    wc = [len(words(c)) for c in caps]
    vocab = {w for c in caps for w in words(c)}
    hist: Counter[int] = Counter((n // HIST_BIN_WIDTH) * HIST_BIN_WIDTH for n in wc)
    images_per_id: Counter[int] = Counter()
    for s in {s.file_path: s for s in samples}.values():
        images_per_id[s.person_id] += 1
    return {
        "identities": len(ids),
        "images": len(images),
        "captions": len(caps),
        "words_per_caption": _summary(wc),
        "word_histogram": {f"{b}-{b + HIST_BIN_WIDTH - 1}": hist[b] for b in sorted(hist)},
        "captions_per_image": _summary([len(s.captions) for s in samples]),
        "images_per_identity": _summary(list(images_per_id.values())),
        "vocabulary": len(vocab),
    }


def dataset_stats(ann: Annotations) -> dict[str, Any]:
    """Per-split and overall statistics of a parsed dataset."""
    splits = [sp for sp in dict.fromkeys(s.split for s in ann.samples)]
    out: dict[str, Any] = {
        "dataset": str(ann.path),
        "format": ann.format,
        "records": ann.num_records,
        "splits": {sp: split_stats(ann.split(sp)) for sp in splits},
        "all": split_stats(ann.samples),
    }
    return out


def format_stats(stats: dict[str, Any]) -> str:
    """A readable table of the figures above."""
    cols = list(stats["splits"]) + ["all"]
    groups = {**stats["splits"], "all": stats["all"]}
    rows = [
        ("identities", lambda g: f"{g['identities']:,}"),
        ("images", lambda g: f"{g['images']:,}"),
        ("captions", lambda g: f"{g['captions']:,}"),
        ("words/caption mean", lambda g: f"{g['words_per_caption']['mean']:.1f}"),
        ("words/caption median", lambda g: f"{g['words_per_caption']['median']:.0f}"),
        ("words/caption p5-p95", lambda g: f"{g['words_per_caption']['p5']:.0f}-{g['words_per_caption']['p95']:.0f}"),
        ("captions/image mean", lambda g: f"{g['captions_per_image']['mean']:.2f}"),
        ("images/identity mean", lambda g: f"{g['images_per_identity']['mean']:.2f}"),
        ("vocabulary", lambda g: f"{g['vocabulary']:,}"),
    ]
    table = [[""] + cols] + [[name] + [fn(groups[c]) for c in cols] for name, fn in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols) + 1)]
    lines = [
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r)) for r in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    head = f"{stats['dataset']} ({stats['format']}, {stats['records']:,} records)"
    return head + "\n" + "\n".join(lines)


def plot_word_histogram(stats: dict[str, Any], out: str | Path) -> None:
    """Bar chart of captions per word-count bin, one series per split (PNG, written atomically)."""
    import matplotlib  # heavy (about a second): loaded only when a plot is asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    groups = stats["splits"] or {"all": stats["all"]}
    bins = sorted({int(k.split("-")[0]) for g in groups.values() for k in g["word_histogram"]})
    n = max(1, len(groups))
    width = HIST_BIN_WIDTH / (n + 1)
    for j, (name, g) in enumerate(groups.items()):
        h = {int(k.split("-")[0]): v for k, v in g["word_histogram"].items()}
        ax.bar([b + j * width for b in bins], [h.get(b, 0) for b in bins], width=width, align="edge", label=name)
    ax.set_xlabel(f"words per caption (bins of {HIST_BIN_WIDTH})")
    ax.set_ylabel("captions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    mean = stats["all"]["words_per_caption"]["mean"]
    ax.set_title(f"{Path(stats['dataset']).name}: {stats['all']['captions']:,} captions, mean {mean:.1f} words")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
