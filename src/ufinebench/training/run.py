"""A training run from start (or resume) to finish: set-up, epochs, checkpoints, the final evaluation."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ufinebench.config import Config, ConfigError, dump_config, load_config
from ufinebench.data.annotations import check_split, load_dataset
from ufinebench.data.tokenizer import tokenizer_from_state
from ufinebench.distributed import Processes, barrier, env_ranks, setup
from ufinebench.errors import UFineBenchError
from ufinebench.evaluate import evaluate_checkpoint
from ufinebench.io import write_json
from ufinebench.model.checkpoint import CheckpointError, read_meta, resolve_checkpoint
from ufinebench.outputs import add_entries, check_outputs, claim_dir, dataset_inputs, output_lock
from ufinebench.training.checkpointing import end_epoch
from ufinebench.training.data import TrainData, epoch_batches, setup_data
from ufinebench.training.log import RunLogger
from ufinebench.training.optim import deterministic_cpu
from ufinebench.training.state import TrainState, setup_model
from ufinebench.training.step import train_step
from ufinebench.vocab import AttributeVocabulary, stored_vocabulary

TRAIN_ENTRIES = ("checkpoints", "log.jsonl", "tensorboard", "config.yaml")


def train(cfg: Config | None = None, *, resume: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Train a model; returns the run folder. With ``resume``, continue that run instead.

    The run folder is the trainer's own output: a folder written by something else is refused,
    one holding the dataset or the initial weights too, and a second trainer on it is locked out.
    """
    if resume is None and cfg is None:
        raise ConfigError("no config given")
    run_dir = Path(resume) if resume is not None else Path(cfg.train.out_dir)  # type: ignore[union-attr]
    if env_ranks()[1] != 0:
        return _train(cfg, resume=resume, progress=progress)
    if resume is None:
        assert cfg is not None
        check_outputs({"train.out_dir": run_dir}, [*dataset_inputs(cfg.data.dataset, cfg.data.format), cfg.train.init_from or None],
                      folders=["train.out_dir"])
    with output_lock(run_dir):
        claim_dir(run_dir, "train")
        if resume is None and not (run_dir / "checkpoints").exists():
            add_entries(run_dir, "train", TRAIN_ENTRIES)
        return _train(cfg, resume=resume, progress=progress)


def _train(cfg: Config | None = None, *, resume: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """The training run itself (``train`` has checked and locked the run folder); deterministic kernels on the CPU."""
    with deterministic_cpu(not torch.cuda.is_available()):
        return _train_run(cfg, resume=resume, progress=progress)


@dataclass
class _Start:
    """Where a run starts: its config and folder, and for a resume its checkpoint, counters, tokenizer and vocabulary."""

    cfg: Config
    run_dir: Path
    resume_ck: Path | None = None
    epoch: int = 0
    global_step: int = 0
    best_value: float = -math.inf
    tokenizer: Any = None
    vocabulary: AttributeVocabulary | None = None


def _start(cfg: Config | None, resume: str | os.PathLike[str] | None, rank: int) -> _Start:
    """A new run's start, or where a killed run left off (from its last checkpoint)."""
    if resume is None:
        if cfg is None:
            raise ConfigError("no config given")
        run_dir = Path(cfg.train.out_dir)
        if rank == 0 and _has_checkpoint(run_dir):
            raise UFineBenchError(f"{run_dir} already holds a run; use --resume {run_dir} or another train.out_dir")
        return _Start(cfg, run_dir)  # a run that stopped before its first checkpoint (a full disk, a kill) starts again in place
    run_dir = Path(resume)
    if not _has_checkpoint(run_dir):
        raise UFineBenchError(f"{run_dir}: no finished epoch to resume from; start the run again with --config "
                              f"(train.out_dir={run_dir} may stay)")
    ck = resolve_checkpoint(run_dir, "last")
    meta = read_meta(ck)
    saved_best = meta.get("best_value")
    return _Start(load_config(meta["config"]), run_dir, ck, int(meta["epoch"]) + 1, int(meta["global_step"]),
                  float(saved_best) if saved_best is not None else -math.inf, tokenizer_from_state(meta["tokenizer"]),
                  stored_vocabulary(meta))


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds a finished epoch's checkpoint (``checkpoints/last`` naming a whole one)."""
    try:
        resolve_checkpoint(run_dir, "last")
    except CheckpointError:
        return False
    return True


def _model_config(cfg: Config, data: TrainData) -> Config:
    """``cfg`` with what the data decides: identities, tokenizer vocabulary, end token, the word head's size."""
    d = cfg.data
    n_words = data.vocabulary.head_outputs(d.attribute_pairs) if d.attribute_words and data.vocabulary is not None else 0
    model_cfg = dataclasses.replace(cfg.model, num_classes=data.dataset.num_classes, vocab_size=data.tokenizer.vocab_size,
                                    eot_id=None if d.tokenizer == "clip" else data.tokenizer.eot_id, attribute_words=n_words)
    return dataclasses.replace(cfg, model=model_cfg)


def _train_run(cfg: Config | None, *, resume: str | os.PathLike[str] | None, progress: bool) -> Path:
    """Set up data, model and optimizer (or restore them), then run the epochs and the final evaluation."""
    procs = setup()
    start = _start(cfg, resume, procs.rank)
    run_dir = start.run_dir
    if procs.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    data = setup_data(start.cfg, start.tokenizer, start.vocabulary, procs.rank, procs.world, progress, resumed=start.resume_ck is not None)
    cfg = _model_config(start.cfg, data)
    st = setup_model(cfg, data.steps_per_epoch, start.resume_ck, procs)
    st.global_step, st.best_value = start.global_step, start.best_value
    logger = RunLogger(run_dir, procs.rank == 0, cfg.train.tensorboard)
    if procs.rank == 0:
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        logger.write({"kind": "start", "epoch": start.epoch, "step": start.global_step, "world_size": procs.world, "pairs": len(data.dataset),
                      "steps_per_epoch": data.steps_per_epoch, "in_memory": data.dataset.images is not None,
                      "autocast": str(st.amp_dtype).replace("torch.", "") if st.amp_dtype is not None else "none",
                      "params": sum(p.numel() for p in st.model.parameters())})
    for epoch in range(start.epoch, cfg.train.epochs):
        st.epoch = epoch
        record = _run_epoch(st, data, cfg, procs, logger, progress)
        end_epoch(st, data, cfg, run_dir, logger, record, procs.rank)
        barrier()
    logger.close()
    barrier()
    if cfg.train.final_eval and procs.rank == 0:
        _final_eval(cfg, run_dir, procs.device)
    return run_dir


def _run_epoch(st: TrainState, data: TrainData, cfg: Config, procs: Processes, logger: RunLogger, progress: bool) -> dict[str, Any]:
    """One epoch of steps, logged every ``train.log_every`` steps; returns the epoch's log record (mean losses)."""
    t, world, rank = cfg.train, procs.world, procs.rank
    st.model.train()
    bar = tqdm(total=data.steps_per_epoch, desc=f"epoch {st.epoch + 1}/{t.epochs}", unit="step", leave=False) if progress and rank == 0 else None
    t0, seen, n_steps = time.perf_counter(), 0, 0
    sums: dict[str, float] = {}
    for batch in epoch_batches(data, st.epoch, cfg.data.workers):
        if n_steps >= data.steps_per_epoch:
            break
        losses = train_step(st, data, cfg, batch, world)
        n_steps += 1
        seen += batch["image"].shape[0] * world
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        if bar is not None:
            bar.set_postfix(loss=f"{float(losses['loss'].detach()) * world:.3f}", pairs_s=f"{seen / (time.perf_counter() - t0):.0f}")
            bar.update(1)
        if rank == 0 and st.global_step % max(1, t.log_every) == 0:
            g = st.opt.param_groups[0]
            logger.write({"kind": "train", "epoch": st.epoch, "step": st.global_step, "lr": g["lr"] / g["lr_mult"],
                          **{k: float(v.detach()) * world for k, v in losses.items()}, "pairs_per_s": seen / (time.perf_counter() - t0)})
    if bar is not None:
        bar.close()
    return {"kind": "epoch", "epoch": st.epoch, "step": st.global_step, "seconds": time.perf_counter() - t0,
            **{k: v * world / max(1, n_steps) for k, v in sums.items()}}


def _final_eval(cfg: Config, run_dir: Path, device: torch.device) -> None:
    """Evaluate the best checkpoint (by the validation metric; the last one without validation) on
    ``train.final_eval`` and write ``final_eval_SPLIT.json`` beside the checkpoints."""
    split = cfg.train.final_eval
    assert split is not None
    ann = load_dataset(cfg.data.dataset, cfg.data.format, split=split)
    check_split(ann, split)
    samples = ann.split(split)
    res = evaluate_checkpoint(str(run_dir), samples[: cfg.train.eval_limit] if cfg.train.eval_limit > 0 else samples, device=str(device))
    res.pop("_features", None)
    add_entries(run_dir, "train", (f"final_eval_{split}.json",))
    write_json(run_dir / f"final_eval_{split}.json", res)
