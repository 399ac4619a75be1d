"""A dry run: a few steps of a config on its own data and model, through validation and the final evaluation."""

from __future__ import annotations

import dataclasses
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ufinebench.config import Config
from ufinebench.training.run import train


def dry_run(cfg: Config, steps: int = 5, progress: bool = False) -> dict[str, Any]:
    """A few steps of ``cfg`` on its own data and model, through validation and the final evaluation.

    Everything a long job touches is exercised (data and images, tokenizer, init weights, every
    loss, optimizer step, checkpoint writing, validation, the final test evaluation) on ``steps``
    batches and at most 64 evaluation records, in a temporary folder that is deleted afterwards.
    Returns steps/s (after the first step, which pays for warm-up) and peak memory, so a 60-epoch
    job cannot fail at epoch 5 for a reason a minute could have shown.
    """
    t = cfg.train
    with tempfile.TemporaryDirectory(prefix="ufinebench-dry-run-") as tmp:
        has_val = bool(cfg.data.val_split or cfg.data.val_identities)
        small = dataclasses.replace(t, epochs=1, max_steps_per_epoch=steps, eval_every=1 if has_val else 0, out_dir=str(Path(tmp) / "run"),
                                    tensorboard=False, log_every=1, eval_limit=64, final_eval=t.final_eval or "test")
        run_cfg = dataclasses.replace(cfg, train=small)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        run = train(run_cfg, progress=progress)
        total = time.perf_counter() - t0
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        final = json.loads((run / f"final_eval_{small.final_eval}.json").read_text())
    steps_log = [x for x in log if x["kind"] == "train"]
    epoch = next(x for x in log if x["kind"] == "epoch")
    out: dict[str, Any] = {
        "steps": len(steps_log), "batch_size": t.batch_size, "seconds": round(total, 1),
        "steps_per_s": round(len(steps_log) / epoch["seconds"], 3) if epoch["seconds"] > 0 else None,
        "loss_first": steps_log[0]["loss"] if steps_log else None, "loss_last": steps_log[-1]["loss"] if steps_log else None,
        "validated": "val_R1" in epoch, "final_eval": {"split": small.final_eval, "queries": final["overall"]["queries"]},
        "peak_cpu_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if torch.cuda.is_available():
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out
