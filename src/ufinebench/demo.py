"""The main job, ``ufinebench demo``.

Until the data, model and training issues land, the demo shows the most complete thing that
exists: the metrics engine on a generated retrieval problem. It demonstrates the two points
that set our metrics apart:

1. mSD sees what rank metrics cannot: two "models" with the same ranking (so the same R@K, mAP
   and mINP) but differently separated similarity distributions get different mSD.
2. The released mSD script depends on the gallery's order; the paper's definition does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ufinebench.io import save_metrics_npz, write_json
from ufinebench.metrics import metrics_from_features, metrics_from_similarity
from ufinebench.tables import format_table


def make_problem(
    num_ids: int = 300, images_per_id: int = 3, captions_per_image: int = 2, dim: int = 256, noise: float = 2.2, seed: int = 0
) -> dict[str, np.ndarray]:
    """Text/image features around per-identity prototypes, like a trained dual encoder's output."""
    rng = np.random.default_rng(seed)
    proto = rng.standard_normal((num_ids, dim)).astype(np.float32)  # (I, D)
    gallery_ids = np.repeat(np.arange(1, num_ids + 1), images_per_id)  # (G,)
    query_ids = np.repeat(gallery_ids, captions_per_image)  # (Q,)
    g = proto[gallery_ids - 1] + noise * rng.standard_normal((len(gallery_ids), dim)).astype(np.float32)
    q = proto[query_ids - 1] + noise * rng.standard_normal((len(query_ids), dim)).astype(np.float32)
    return {"query_features": q, "gallery_features": g, "query_ids": query_ids, "gallery_ids": gallery_ids}


def run_demo(out: str | Path = "demo_out") -> int:
    """Build the problem, evaluate it several ways, print tables, write npz/JSON under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    print("ufinebench demo: metrics engine (training, evaluation and reports arrive with later issues)")
    prob = make_problem()
    save_metrics_npz(out / "features.npz", **prob)
    res = metrics_from_features(prob["query_features"], prob["gallery_features"], prob["query_ids"], prob["gallery_ids"])
    q, g = prob["query_features"], prob["gallery_features"]
    sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    # A monotone squashing keeps every ranking (R@K, mAP, mINP identical) but pulls positive and
    # negative similarities together: only mSD notices.
    squashed = 0.9 + 0.05 * np.tanh(sim)
    res_sq = metrics_from_similarity(squashed, prob["query_ids"], prob["gallery_ids"])
    rows = {"simulated dual encoder": res.as_dict(), "same ranking, squashed scores": res_sq.as_dict()}
    print(f"\n{len(q)} text queries x {len(g)} gallery images, {len(np.unique(prob['gallery_ids']))} identities\n")
    print(format_table(rows))
    print("Same ranking, so the same R@K, mAP and mINP; only mSD sees the positives and negatives move closer.")

    perm = np.random.default_rng(1).permutation(len(g))
    shuffled = sim[:, perm]
    variants = {}
    for name, s, gid in (("gallery as given", sim, prob["gallery_ids"]), ("gallery shuffled", shuffled, prob["gallery_ids"][perm])):
        for msd in ("paper", "official"):
            variants[f"mSD {msd}, {name}"] = metrics_from_similarity(s, prob["query_ids"], gid, msd=msd).as_dict()
    print("\nGallery order: the paper's mSD is invariant; the released script's is not\n")
    print(format_table(variants, columns=("R1", "mAP", "mSD"), extra=()))
    write_json(out / "metrics.json", {"t2i": rows, "gallery_order": variants})
    print(f"\nwrote {out / 'features.npz'} (try: ufinebench metrics {out / 'features.npz'}) and {out / 'metrics.json'}")
    return 0
