"""CUDA tensors give the same metrics as the CPU kernel. Runs only where a GPU is present
(the project's device checks); on CPU-only machines these tests are skipped, and the same code
path (the torch backend) is covered on the CPU by test_metrics.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference import reference_metrics
from ufinebench.metrics import metrics_from_features, metrics_from_similarity

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("msd, levels", [("paper", None), ("paper", 8), ("official", None)])  # official: tie-free
def test_cuda_similarity_matches_reference(msd, levels):
    rng = np.random.default_rng(7)
    sim = rng.uniform(-1, 1, (300, 257))
    if levels:
        sim = np.round(sim * levels) / levels
    sim = sim.astype(np.float32)
    qids, gids = rng.integers(0, 40, 300), rng.integers(0, 35, 257)
    ref = reference_metrics(sim, qids, gids, msd=msd)["summary"]
    res = metrics_from_similarity(torch.from_numpy(sim).cuda(), torch.from_numpy(qids).cuda(), gids, msd=msd, chunk_size=64)
    assert res.as_dict() == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_cuda_features_equal_cpu_kernel(dtype, direction):
    rng = np.random.default_rng(3)
    q = rng.choice([-1.0, 1.0], (700, 64)).astype(np.float32)  # +-1/8 after normalising: exact
    g = rng.choice([-1.0, 1.0], (500, 64)).astype(np.float32)
    qids, gids = rng.integers(0, 100, 700), rng.integers(0, 90, 500)
    cpu = metrics_from_features(q, g, qids, gids, direction=direction, per_query=True)
    gpu = metrics_from_features(
        torch.from_numpy(q).to("cuda", dtype), torch.from_numpy(g).to("cuda", dtype), qids, gids,
        direction=direction, per_query=True,
    )
    assert gpu.as_dict() == pytest.approx(cpu.as_dict(), abs=1e-6)
    np.testing.assert_array_equal(gpu.per_query.first_hit_rank, cpu.per_query.first_hit_rank)
