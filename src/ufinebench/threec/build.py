"""Building a UFine3C-style evaluation set from any annotated datasets.

Cross domain: the test-split images of every source dataset, ``source`` = the dataset's name, ids
made distinct across sources. Cross granularity and cross style: each original caption is kept
and rewritten ``per_caption`` times, each time at a (granularity, style) drawn without
replacement from the requested grid (seeded). Output: a UFine3C-format JSON list whose captions
carry tags (granularity, style, rewriter, model, prompt version, the caption it came from), plus
``FILE.provenance.json`` with the command, the sources and word-count statistics.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ufinebench.data.annotations import load_dataset
from ufinebench.errors import UFineBenchError
from ufinebench.io import atomic_write_bytes
from ufinebench.outputs import check_outputs, dataset_inputs, output_lock
from ufinebench.threec.rewriters import STYLES, WORDS, LLMRewriter, Rewrite, word_count


def _source_name(ann: Any, used: set[str]) -> str:
    base = ann.path.parent.name if ann.path.stem.lower().startswith(("ufine_synth", "data_captions", "reid_raw")) else ann.path.stem
    name = f"{ann.format}:{base}"
    k = 2
    while name in used:
        name = f"{ann.format}:{base}#{k}"
        k += 1
    used.add(name)
    return name


def build_3c(
    sources: Sequence[str], out: str | os.PathLike[str], *, rewriter: Any, granularities: Sequence[str] = ("fine", "medium", "coarse"),
    styles: Sequence[str] = STYLES, per_caption: int = 2, seed: int = 0, split: str = "test", progress: bool = False, force: bool = False,
) -> dict[str, Any]:
    """Write the 3C-style set to ``out``; returns the provenance record (also written beside it).
    An existing ``out`` (or its provenance file) is replaced only with ``force``."""
    for g in granularities:
        if g not in WORDS:
            raise UFineBenchError(f"unknown granularity {g!r} (fine, medium, coarse)")
    for s in styles:
        if s not in STYLES:
            raise UFineBenchError(f"unknown style {s!r} ({', '.join(STYLES)})")
    grid = [(g, s) for g in granularities for s in styles]
    if not 0 <= per_caption <= len(grid):
        raise UFineBenchError(f"--per-caption must be between 0 and {len(grid)} (granularities x styles)")

    out = Path(out)
    check_outputs({"--out": out, "its provenance file": out.with_name(out.name + ".provenance.json")},
                  [p for src in sources for p in dataset_inputs(src)], force=force)
    if out.is_dir():
        raise UFineBenchError(f"--out {out} is a folder; give the path of the JSON file to write")
    with output_lock(out):
        return _build_3c(sources, out, rewriter, grid, per_caption, seed, split, progress)


def _build_3c(sources: Sequence[str], out: Path, rewriter: Any, grid: list[tuple[str, str]], per_caption: int, seed: int,
              split: str, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    used: set[str] = set()
    items: list[dict[str, Any]] = []  # one per image
    jobs: list[tuple[str, str, str, np.random.Generator]] = []
    where: list[tuple[int, int, str, str]] = []  # (item, source caption, granularity, style) per job
    next_id: dict[tuple[str, int], int] = {}
    for src_index, src in enumerate(sources):
        ann = load_dataset(src, split=split if split != "all" else None)
        name = _source_name(ann, used)
        samples = ann.split(split)
        if not samples:
            raise UFineBenchError(f"{src}: no {split} records")
        for s in samples:
            pid = next_id.setdefault((name, s.person_id), len(next_id) + 1)
            item: dict[str, Any] = {"id": pid, "source": name, "split": "test", "file_path": os.path.relpath(s.image_path, out.parent.resolve()),
                    "source_id": s.person_id, "captions": [], "caption_tags": []}
            for ci, (cap, tag) in enumerate(zip(s.captions, s.caption_tags, strict=False)):
                item["captions"].append(cap)
                item["caption_tags"].append({"granularity": tag.get("granularity", "original"), "style": tag.get("style", "original"),
                                             "rewriter": "none"})
                rng = np.random.default_rng([seed, src_index, s.index, ci])
                for k in rng.choice(len(grid), size=per_caption, replace=False):
                    g, st = grid[int(k)]
                    jobs.append((cap, g, st, np.random.default_rng([seed, src_index, s.index, ci, int(k)])))
                    where.append((len(items), ci, g, st))
            items.append(item)
    bar = None
    if progress:
        bar = tqdm(total=len(jobs), unit="caption", desc="rewriting", leave=False)
    if isinstance(rewriter, LLMRewriter):
        results: list[Rewrite] = asyncio.run(rewriter.rewrite_many(jobs, bar))
    else:
        results = []
        for job in jobs:
            results.append(rewriter.rewrite(*job))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    for (item_i, ci, g, st), res in zip(where, results, strict=False):
        items[item_i]["captions"].append(res.text)
        items[item_i]["caption_tags"].append({"granularity": g, "style": st, "from_caption": ci, **res.tags})
    words: dict[str, list[int]] = {}
    for it in items:
        for c, t in zip(it["captions"], it["caption_tags"], strict=False):
            words.setdefault(t["granularity"], []).append(word_count(c))
    prov = {
        "sources": sorted(used),
        "images": len(items),
        "identities": len(next_id),
        "queries": sum(len(it["captions"]) for it in items),
        "rewrites": len(jobs),
        "rewriter": rewriter.name,
        "model": getattr(rewriter, "model", "none"),
        "prompt_version": rewriter.prompt_version,
        "granularities": list(dict.fromkeys(g for g, _ in grid)),
        "styles": list(dict.fromkeys(st for _, st in grid)),
        "per_caption": per_caption,
        "seed": seed,
        "words_per_granularity": {g: {"captions": len(v), "mean": round(float(np.mean(v)), 1), "min": int(min(v)), "max": int(max(v))}
                                  for g, v in sorted(words.items())},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if isinstance(rewriter, LLMRewriter):
        stats = rewriter.stats
        prov["llm"] = {"url": rewriter.url, "requests": stats.requests, "cache_hits": stats.cache_hits, "retries": stats.retries,
                       "fallbacks": stats.fallbacks, "failures": stats.failures}
    atomic_write_bytes(out, (json.dumps(items, ensure_ascii=False) + "\n").encode())
    atomic_write_bytes(out.with_name(out.name + ".provenance.json"), (json.dumps(prov, indent=1) + "\n").encode())
    return prov
