"""Optimisation set-up: AdamW / SGD parameter groups, the warm-up + cosine schedule, autocast and
deterministic kernels on the CPU."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ufinebench.config import TrainConfig

NO_DECAY_NAMES = ("bias", "positional_embedding", "class_embedding", "logit_scale", "queries", "token_embedding")


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up from 0, then cosine decay to ``min_ratio``: a pure function of the step."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float, multipliers: dict[str, float]) -> list[dict[str, Any]]:
    """AdamW groups: decay or not (biases, norms, embeddings, queries: no), times per-prefix lr multipliers."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = 1.0
        for prefix, m in sorted(multipliers.items(), key=lambda kv: -len(kv[0])):
            if name.startswith(prefix):
                mult = m
                break
        decay = 0.0 if (p.ndim < 2 or any(n in name for n in NO_DECAY_NAMES)) else weight_decay
        groups.setdefault((mult, decay), []).append(p)
    return [{"params": ps, "lr": lr * m, "weight_decay": wd, "lr_mult": m} for (m, wd), ps in groups.items()]


@contextmanager
def deterministic_cpu(enabled: bool = True) -> Iterator[None]:
    """Within this block, PyTorch picks deterministic kernels; the previous setting comes back after.

    Why: on the CPU, the backward of ``x[idx]`` with repeated indices (``index_put_`` with
    accumulation) adds rows with atomic adds from several threads, so two runs at the same thread
    count differed from the first steps (demo: loss 30.327993 vs 30.328022 at step 20, R1 66.3 vs
    63.0 after 12 epochs). The deterministic kernel sorts the indices first; its cost was within
    the noise of the demo's step time (docs/reliability.md). Only used on the CPU: on CUDA some ops
    (e.g. ``cumsum``) have no deterministic kernel and bit-identity is not claimed there.
    """
    before, warn_before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)


def cpu_amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype ``train.amp`` gives on the CPU: bf16 where the CPU computes it natively
    (AVX512-BF16 or AMX: oneDNN's convolutions and matrix products then run ~2x faster), else
    None (float32: emulated bf16 would be slower than float32). fp16 is CUDA-only."""
    if amp != "bf16":
        return None
    try:  # a private PyTorch check (no public one exists); a build without it counts as "no native bf16"
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return torch.bfloat16 if native else None


def make_optimizer(model: torch.nn.Module, t: TrainConfig, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
    """The run's optimizer (``train.optimizer``) over :func:`param_groups` and its per-step schedule."""
    total_steps = steps_per_epoch * t.epochs
    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    groups = param_groups(model, t.lr, t.weight_decay, t.lr_multipliers)
    opt: torch.optim.Optimizer
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=t.lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW(groups, lr=t.lr, betas=(0.9, 0.98), eps=t.adam_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total_steps, warmup, t.min_lr_ratio))
    return opt, sched


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on this device (None: float32)."""
    if device.type == "cpu":
        return cpu_amp_dtype(amp)
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
