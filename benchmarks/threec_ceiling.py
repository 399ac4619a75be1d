"""How much a 3C query can tell: the attribute ceiling per granularity, and what a model gets wrong.

    python benchmarks/threec_ceiling.py --data demo_out/data [--run demo_out/run]

Every UFine-Synth 3C caption records the attributes it mentions (``caption_tags[i].mentions``) and
``identities.jsonl`` holds each person's true attributes. A query's *consistent* gallery images
are those whose person has every mentioned attribute. Ranking those first, in random order, gives
an expected R1 of (consistent images of the right person) / (consistent images): the ceiling of a
model that reads every mentioned attribute right and nothing else (what the view and pose
sentences add is left out). A coarse query ("a pedestrian in a navy top and navy blue pants")
fits several people; a medium one names enough to single one person out.

With ``--run``: the model's R1 beside that ceiling per granularity, and, among its wrong first
hits, the share whose person contradicts each mentioned attribute (a model that drops the
gender of short descriptions shows it here), and the share consistent with every mention (a
wrong hit the words cannot rule out). Then what re-ranking could add: the model's R10, and its R1
when each query's top 10 is re-ordered with the images that fit every mention first (the model's
order kept among them and among the rest): the R1 of a perfect matcher for ``--rerank-topk 10``,
one that checks every mentioned attribute the picture shows (gender and age excepted: the
renderer draws neither, so no matcher can read them from the picture).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


def ceiling(records: list[dict], attributes: dict[int, dict]) -> dict[str, tuple[int, float]]:
    """{granularity: (queries, expected R1 %)} when consistent images are ranked first at random."""
    gallery = [int(r["id"]) for r in records]  # one image per record
    hits: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for tags in r["caption_tags"]:
            mentions = tags.get("mentions", {})
            fits = [pid for pid in gallery if all(attributes[pid].get(k) == v for k, v in mentions.items())]
            own = sum(1 for pid in fits if pid == int(r["id"]))
            hits[tags.get("granularity", "all")].append(own / max(len(fits), 1))
    return {g: (len(v), 100.0 * float(np.mean(v))) for g, v in hits.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the demo's data folder (ufine_synth_3c.json, identities.jsonl)")
    ap.add_argument("--run", help="a trained run: its R1 and its wrong first hits beside the ceiling")
    args = ap.parse_args(argv)
    data = Path(args.data)
    try:
        records = json.loads((data / "ufine_synth_3c.json").read_text())
        attributes = {int(r["id"]): r["attributes"] for r in map(json.loads, (data / "identities.jsonl").read_text().splitlines())}
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {args.data}: not a UFine-Synth data folder with a 3C set ({exc})", file=sys.stderr)
        return 2
    ceil = ceiling(records, attributes)
    order = [g for g in ("fine", "medium", "coarse") if g in ceil] + [g for g in ceil if g not in ("fine", "medium", "coarse")]
    model: dict[str, tuple[float, int, int, Counter]] = {}
    if args.run:
        model = _model_errors(args.run, data / "ufine_synth_3c.json", attributes)
    print(f"{len(records)} gallery images of {len({r['id'] for r in records})} persons")
    for g in order:
        n, c = ceil[g]
        line = f"{g:>7}: {n} queries, attribute ceiling R1 {c:.1f}"
        if g in model:
            r1, wrong, consistent, contra, r10, perfect = model[g]
            share = ", ".join(f"{k} {100 * v / max(wrong, 1):.0f} %" for k, v in contra.most_common(8))
            line += (f" | model R1 {r1:.1f}; of its {wrong} wrong first hits {100 * consistent / max(wrong, 1):.0f} % fit every"
                     f" mention, contradicting: {share} | model R10 {r10:.1f}, its top 10 re-ranked by a perfect matcher: R1 {perfect:.1f}")
        print(line)
    if model:
        n = sum(ceil[g][0] for g in model)
        r1, perfect = (sum(ceil[g][0] * model[g][i] for g in model) / n for i in (0, 5))
        print(f"    all: model R1 {r1:.2f}; top 10 re-ranked by a perfect matcher {perfect:.2f} ({perfect - r1:+.2f})")
    return 0


UNDRAWN = ("gender", "age")  # attributes synth/render.py never reads: the picture does not show them


def perfect_rerank_first(top: list[int], fits: list[bool]) -> int:
    """The first of ``top`` (gallery indices, the model's order) once those that fit every mention go first."""
    return next((j for j, ok in zip(top, fits, strict=True) if ok), top[0])


def _model_errors(run: str, threec: Path, attributes: dict[int, dict]) -> dict[str, tuple[float, int, int, Counter, float, float]]:
    """{granularity: (R1 %, wrong first hits, of them consistent with every mention, Counter of contradicted keys,
    R10 %, R1 % of the top 10 re-ranked by a perfect matcher)}."""
    from ufinebench.data.annotations import load_dataset
    from ufinebench.evaluate import extract_features
    from ufinebench.model.checkpoint import from_checkpoint

    loaded = from_checkpoint(run)
    samples = load_dataset(str(threec), None, split="all").samples
    f = extract_features(loaded.model, samples, loaded.tokenizer, loaded.transform, batch_size=64, device="cpu")
    q = f.query_features / np.linalg.norm(f.query_features, axis=1, keepdims=True)  # (Q, D)
    g = f.gallery_features / np.linalg.norm(f.gallery_features, axis=1, keepdims=True)  # (G, D)
    sim = q @ g.T  # (Q, G): the model's retrieval score (features carry its granularity weight)
    top10 = np.argsort(-sim, axis=1, kind="stable")[:, :10]  # (Q, 10)
    first = top10[:, 0]  # (Q,)
    gids = [int(x) for x in f.gallery_ids]
    # queries, right, wrong, consistent, contradicted, in top 10, right after a perfect re-ranking
    out: dict[str, list] = defaultdict(lambda: [0, 0, 0, 0, Counter(), 0, 0])
    for i, tags in enumerate(f.query_tags):
        row = out[tags.get("granularity", "all")]
        row[0] += 1
        own = int(f.query_ids[i])
        mentions = tags.get("mentions", {})
        top = [int(j) for j in top10[i]]
        row[5] += own in (gids[j] for j in top)
        fits = [all(attributes[gids[j]].get(k) == v for k, v in mentions.items() if k not in UNDRAWN) for j in top]
        row[6] += gids[perfect_rerank_first(top, fits)] == own
        got = int(f.gallery_ids[first[i]])
        if got == int(f.query_ids[i]):
            row[1] += 1
            continue
        row[2] += 1
        bad = [k for k, v in tags.get("mentions", {}).items() if attributes[got].get(k) != v]
        row[3] += not bad
        row[4].update(bad)
    return {k: (100.0 * v[1] / v[0], v[2], v[3], v[4], 100.0 * v[5] / v[0], 100.0 * v[6] / v[0]) for k, v in out.items()}


if __name__ == "__main__":
    sys.exit(main())
