"""The end of an epoch: validation when due, the log line, and the epoch's checkpoint, ``last`` and ``best``."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import torch

from ufinebench.config import Config
from ufinebench.io import atomic_write_bytes
from ufinebench.model.checkpoint import save_checkpoint
from ufinebench.training.data import TrainData
from ufinebench.training.log import RunLogger
from ufinebench.training.state import TrainState
from ufinebench.training.step import NonFiniteLossError
from ufinebench.training.validation import Validation, validate


def checkpoint_meta(st: TrainState, data: TrainData, cfg: Config, val: Validation | None) -> dict[str, Any]:
    """What a checkpoint's meta.json keeps: config, tokenizer, vocabulary, where the run stands, val figures and blend."""
    meta = {"config": cfg.to_dict(), "tokenizer": data.tokenizer.state(), "epoch": st.epoch, "global_step": st.global_step,
            "metrics": val.metrics if val is not None else None, "best_metric": cfg.train.best_metric,
            "best_value": st.best_value if st.best_value > -math.inf else None, **(val.checkpoint_meta if val is not None else {})}
    meta["vocabulary"] = data.vocabulary.to_dict() if data.vocabulary is not None else None  # None: trained without one
    return meta


def end_epoch(st: TrainState, data: TrainData, cfg: Config, run_dir: Path, logger: RunLogger, record: dict[str, Any], rank: int) -> None:
    """Validate (when due), log, and write the epoch's checkpoint, ``last`` and ``best`` (rank 0)."""
    t = cfg.train
    if not all(bool(torch.isfinite(p).all()) for p in st.model.parameters()):  # a finite loss with an overflowing step
        raise NonFiniteLossError(f"train: the weights became non-finite during epoch {st.epoch + 1}; not saved "
                                 f"(the last good checkpoint is kept); try a lower train.lr")
    if rank != 0:
        return
    val = validate(st, data, cfg) if data.val_samples and (st.epoch + 1) % t.eval_every == 0 else None
    if val is not None:
        record.update(val.log)
    logger.write(record)
    improved = val is not None and val.metrics[t.best_metric] > st.best_value
    if improved:
        assert val is not None
        st.best_value = val.metrics[t.best_metric]
    meta = checkpoint_meta(st, data, cfg, val)
    state = {"optimizer": st.opt.state_dict(), "scheduler": st.sched.state_dict(), "torch_rng": torch.get_rng_state(),
             "scaler": st.scaler.state_dict()}
    ck_dir = run_dir / "checkpoints"
    name = f"epoch_{st.epoch + 1:04d}"
    save_checkpoint(ck_dir / name, st.model, meta, state)
    atomic_write_bytes(ck_dir / "last", name.encode())
    if improved or (val is None and not data.val_samples):
        save_checkpoint(ck_dir / "best", st.model, meta)
    for old in sorted(ck_dir.glob("epoch_*"))[:-1]:  # keep the newest epoch checkpoint only
        shutil.rmtree(old, ignore_errors=True)
