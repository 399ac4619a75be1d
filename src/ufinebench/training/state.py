"""The model part of a training run: model (and its DDP wrapper), optimizer, schedule, scaler, counters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ufinebench.config import Config
from ufinebench.distributed import Processes
from ufinebench.errors import UFineBenchError
from ufinebench.model.cfam import RetrievalModel
from ufinebench.model.checkpoint import load_weights, resolve_checkpoint
from ufinebench.training.optim import amp_dtype, make_optimizer


@dataclass
class TrainState:
    """The model part of a run and where it stands (epoch, step, best validation value)."""

    model: RetrievalModel
    ddp: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    amp_dtype: torch.dtype | None
    device: torch.device
    epoch: int = 0
    global_step: int = 0
    best_value: float = -math.inf


def setup_model(cfg: Config, steps_per_epoch: int, resume_ck: Path | None, procs: Processes) -> TrainState:
    """Build the model (or load it for a resume), its optimizer, schedule and gradient scaler."""
    t, device = cfg.train, procs.device
    torch.manual_seed(t.seed)
    model = RetrievalModel(cfg.model)
    if t.init_from and resume_ck is None:
        init_from(model, t.init_from)
    model.to(device)
    opt, sched = make_optimizer(model, t, steps_per_epoch)
    dtype = amp_dtype(t.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    if resume_ck is not None:
        model.load_state_dict(load_weights(resume_ck))
        state = torch.load(resume_ck / "train_state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
    ddp: torch.nn.Module = model
    if procs.distributed:
        m = cfg.model  # the conv tower's token projection is unused when no head reads image tokens
        unused = m.vision == "conv" and not (m.use_granularity or m.use_matching or m.mlm)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[procs.local_rank] if device.type == "cuda" else None,
                                                        find_unused_parameters=unused)
    return TrainState(model, ddp, opt, sched, scaler, dtype, device)


def init_from(model: RetrievalModel, path: str) -> None:
    """Start from a checkpoint's encoder weights (e.g. imported CLIP); new heads stay fresh."""
    folder = resolve_checkpoint(path)
    sd = load_weights(folder)
    own = model.state_dict()
    take = {k: v for k, v in sd.items() if k.startswith(("visual.", "text.")) and k in own}
    bad = [k for k, v in take.items() if v.shape != own[k].shape]
    if bad:
        raise UFineBenchError(f"{path}: {bad[0]} has shape {tuple(take[bad[0]].shape)}, the model needs {tuple(own[bad[0]].shape)} "
                              "(import the weights with this image size and text length)")
    missing = [k for k in own if k.startswith(("visual.", "text.")) and k not in take and k != "text.mask_embedding"]  # MLM's, new
    if missing:
        raise UFineBenchError(f"{path}: encoder weights missing ({missing[0]}, ...)")
    model.load_state_dict(take, strict=False)
