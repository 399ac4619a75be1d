"""Training: one process or many under ``torchrun`` (gloo on CPU, nccl on GPU).

N processes see exactly the batches one process would (``DistributedBatchSampler``); losses
that need the whole batch gather it (``ufinebench.losses``): global SDM, granularity SDM, the
matcher's hard negatives and the MLM token count. So with the same global batch size, N
processes reach the same weights as one, up to float rounding (tests/test_train.py checks 2
processes on the CPU).

Each epoch ends with an atomic checkpoint (weights, config, tokenizer, optimizer, scheduler,
RNG states), optional validation with the metrics engine, a best checkpoint by a chosen metric,
JSONL log lines and TensorBoard events (when tensorboard is installed). ``resume`` continues a
killed run from its last checkpoint to the same weights an uninterrupted run reaches (exactly,
on the CPU): data order, augmentation and negatives are functions of (seed, epoch, step).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ufinebench.config import Config, ConfigError, dump_config, load_config
from ufinebench.data.annotations import check_split, load_dataset
from ufinebench.data.datasets import TrainPairs, collate
from ufinebench.data.samplers import DistributedBatchSampler
from ufinebench.data.tokenizer import ClipTokenizer, TrainedBPETokenizer, tokenizer_from_state
from ufinebench.data.transforms import ImageTransform
from ufinebench.errors import UFineBenchError
from ufinebench.losses import DistContext, compute_losses
from ufinebench.model.cfam import RetrievalModel
from ufinebench.model.checkpoint import load_weights, read_meta, resolve_checkpoint, save_checkpoint

NO_DECAY_NAMES = ("bias", "positional_embedding", "class_embedding", "logit_scale", "queries", "token_embedding")


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


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


class _Logger:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.fh = open(run_dir / "log.jsonl", "a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)

    def close(self) -> None:
        if self.fh:
            self.fh.close()
        if self.tb is not None:
            self.tb.close()


def _mlm_mask(tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, mask_id: int, vocab: int, specials: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """IRRA-style masking (15 %: 80 % mask token, 10 % random, 10 % kept), seeded per item."""
    masked = tokens.clone()
    labels = torch.full_like(tokens, -100)
    for r in range(tokens.shape[0]):
        g = torch.Generator().manual_seed(seed * 7919 + epoch * 104729 + int(index[r]))
        for c in range(tokens.shape[1]):
            t = int(tokens[r, c])
            if t in specials:
                continue
            u = float(torch.rand(1, generator=g))
            if u < 0.15:
                labels[r, c] = t
                v = u / 0.15
                masked[r, c] = mask_id if v < 0.8 else (int(torch.randint(0, vocab, (1,), generator=g)) if v < 0.9 else t)
    return masked, labels


TRAIN_ENTRIES = ("checkpoints", "log.jsonl", "tensorboard", "config.yaml")


def train(cfg: Config | None = None, *, resume: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Train a model; returns the run folder. With ``resume``, continue that run instead.

    The run folder is the trainer's own output: a folder written by something else is refused,
    one holding the dataset or the initial weights too, and a second trainer on it is locked out.
    """
    from ufinebench.outputs import add_entries, check_outputs, claim_dir, output_lock

    if resume is None and cfg is None:
        raise ConfigError("no config given")
    run_dir = Path(resume) if resume is not None else Path(cfg.train.out_dir)  # type: ignore[union-attr]
    if _dist_info()[1] != 0:
        return _train(cfg, resume=resume, progress=progress)
    if resume is None:
        assert cfg is not None
        check_outputs({"train.out_dir": run_dir}, [cfg.data.dataset, cfg.train.init_from or None], folders=["train.out_dir"])
    with output_lock(run_dir):
        claim_dir(run_dir, "train", legacy=(("checkpoints/last", "log.jsonl", "config.yaml"), TRAIN_ENTRIES))
        if resume is None:
            if not (run_dir / "checkpoints").exists():
                add_entries(run_dir, "train", TRAIN_ENTRIES)
        return _train(cfg, resume=resume, progress=progress)


def _train(cfg: Config | None = None, *, resume: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    world, rank, local_rank = _dist_info()
    distributed = world > 1
    use_cuda = torch.cuda.is_available()
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)

    start_epoch, global_step, best_value = 0, 0, -math.inf
    resume_ck: Path | None = None
    if resume is not None:
        run_dir = Path(resume)
        resume_ck = resolve_checkpoint(run_dir, "last")
        meta = read_meta(resume_ck)
        cfg = load_config(meta["config"])
        start_epoch, global_step = int(meta["epoch"]) + 1, int(meta["global_step"])
        best_value = float(meta.get("best_value", -math.inf))
        tokenizer = tokenizer_from_state(meta["tokenizer"])
    else:
        if cfg is None:
            raise ConfigError("no config given")
        run_dir = Path(cfg.train.out_dir)
        if rank == 0 and (run_dir / "checkpoints").exists():
            raise UFineBenchError(f"{run_dir} already holds a run; use --resume {run_dir} or another train.out_dir")
        tokenizer = None
    assert cfg is not None
    t, d, m = cfg.train, cfg.data, cfg.model
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)

    # --- data ------------------------------------------------------------------------------
    ann = load_dataset(d.dataset, d.format, split=d.train_split)
    train_samples = ann.split(d.train_split)
    if tokenizer is None:
        if d.tokenizer == "clip":
            tokenizer = ClipTokenizer()
        else:
            tokenizer = TrainedBPETokenizer.train((c for s in train_samples for c in s.captions), vocab_size=d.bpe_vocab_size)
    transform = ImageTransform(size=tuple(m.image_size), train=True, hflip=d.hflip, pad=d.pad, color_jitter=d.color_jitter, erase_prob=d.erase_prob)
    dataset = TrainPairs(train_samples, tokenizer, transform, context_length=m.context_length, seed=t.seed)
    model_cfg = dataclasses.replace(
        m, num_classes=dataset.num_classes, vocab_size=tokenizer.vocab_size, eot_id=None if d.tokenizer == "clip" else tokenizer.eot_id
    )
    cfg = dataclasses.replace(cfg, model=model_cfg)
    sampler = DistributedBatchSampler(
        len(dataset), t.batch_size, strategy=d.sampler, labels=dataset.labels, num_instances=d.num_instances,
        seed=t.seed, rank=rank, world_size=world, drop_last=True,
    )
    if len(sampler) == 0:
        raise UFineBenchError(f"train.batch_size {t.batch_size} is larger than the {len(dataset)} training pairs")
    val_samples = []
    if d.val_split and t.eval_every > 0 and rank == 0:
        check_split(ann, d.val_split)  # the file is already parsed: no second read
        val_samples = ann.split(d.val_split)

    # --- model, optimizer, schedule -------------------------------------------------------------
    torch.manual_seed(t.seed)
    model = RetrievalModel(model_cfg)
    if t.init_from and resume_ck is None:
        _init_from(model, t.init_from)
    model.to(device)
    steps_per_epoch = len(sampler) if t.max_steps_per_epoch <= 0 else min(len(sampler), t.max_steps_per_epoch)
    total_steps = steps_per_epoch * t.epochs
    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    groups = param_groups(model, t.lr, t.weight_decay, t.lr_multipliers)
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=t.lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW(groups, lr=t.lr, betas=(0.9, 0.98), eps=t.adam_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total_steps, warmup, t.min_lr_ratio))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp) if use_cuda else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    if resume_ck is not None:
        model.load_state_dict(load_weights(resume_ck))
        state = torch.load(resume_ck / "train_state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
    ddp = model
    if distributed:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None)

    mask_id = tokenizer.sot_id  # neither vocabulary has a [MASK] token: the start token stands in
    specials = {tokenizer.sot_id, tokenizer.eot_id, tokenizer.pad_id}
    logger = _Logger(run_dir, rank == 0, t.tensorboard)
    if rank == 0:
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        logger.write({"kind": "start", "epoch": start_epoch, "step": global_step, "world_size": world, "pairs": len(dataset),
                      "steps_per_epoch": steps_per_epoch, "params": sum(p.numel() for p in model.parameters())})

    for epoch in range(start_epoch, t.epochs):
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=d.workers, collate_fn=collate, persistent_workers=False)
        model.train()
        bar = None
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{t.epochs}", unit="step", leave=False)
        t0, seen = time.perf_counter(), 0
        sums: dict[str, float] = {}
        for i, batch in enumerate(loader):
            if i >= steps_per_epoch:
                break
            images = batch["image"].to(device, non_blocking=True)
            length = torch.tensor(int(model.text.eot_index(batch["tokens"]).max()) + 1)
            if distributed:  # every process trims to the same length, so token tensors can be gathered
                import torch.distributed as dist

                dist.all_reduce(length, op=dist.ReduceOp.MAX)
            batch["tokens"] = batch["tokens"][:, : int(length)]
            tokens = batch["tokens"].to(device, non_blocking=True)
            ids = batch["person_id"].to(device)
            labels = batch["label"].to(device)
            mlm_tokens = mlm_labels = None
            if model_cfg.mlm:
                mlm_tokens, mlm_labels = _mlm_mask(batch["tokens"], batch["index"], epoch, t.seed, mask_id,
                                                   tokenizer.vocab_size, specials)
                mlm_tokens, mlm_labels = mlm_tokens.to(device), mlm_labels.to(device)
            ctx = DistContext.from_process_group(t.seed, global_step) if distributed else DistContext(seed=t.seed, step=global_step)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = ddp(images, tokens, mlm_tokens)
                losses = compute_losses(model, out, ids, labels, t.loss_weights, ctx, mlm_labels)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"] * world).backward()
            if t.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            global_step += 1
            seen += images.shape[0] * world
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if bar is not None:
                bar.set_postfix(loss=f"{float(losses['loss'].detach()) * world:.3f}", pairs_s=f"{seen / (time.perf_counter() - t0):.0f}")
                bar.update(1)
            if rank == 0 and global_step % max(1, t.log_every) == 0:
                logger.write({"kind": "train", "epoch": epoch, "step": global_step, "lr": opt.param_groups[0]["lr"] / opt.param_groups[0]["lr_mult"],
                              **{k: float(v.detach()) * world for k, v in losses.items()}, "pairs_per_s": seen / (time.perf_counter() - t0)})
        if bar is not None:
            bar.close()
        n_steps = max(1, min(steps_per_epoch, i + 1))
        epoch_record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": global_step, "seconds": time.perf_counter() - t0,
                                        **{k: v * world / n_steps for k, v in sums.items()}}
        metrics = None
        if rank == 0 and val_samples and (epoch + 1) % t.eval_every == 0:
            from ufinebench.evaluate import evaluate_samples

            eval_tf = ImageTransform(size=tuple(model_cfg.image_size))
            res = evaluate_samples(model, val_samples, tokenizer, eval_tf, batch_size=max(16, t.batch_size), device=device)
            metrics = {k: v for k, v in res.as_dict().items()}
            epoch_record.update({f"val_{k}": v for k, v in metrics.items()})
        if rank == 0:
            logger.write(epoch_record)
            improved = metrics is not None and metrics[t.best_metric] > best_value
            if improved:
                best_value = metrics[t.best_metric]
            meta = {"config": cfg.to_dict(), "tokenizer": tokenizer.state(), "epoch": epoch, "global_step": global_step,
                    "metrics": metrics, "best_metric": t.best_metric, "best_value": best_value if best_value > -math.inf else None}
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                     "scaler": scaler.state_dict()}
            ck_dir = run_dir / "checkpoints"
            name = f"epoch_{epoch + 1:04d}"
            save_checkpoint(ck_dir / name, model, meta, state)
            _atomic_text(ck_dir / "last", name)
            if improved or (metrics is None and not val_samples):
                save_checkpoint(ck_dir / "best", model, meta)
            for old in sorted(ck_dir.glob("epoch_*"))[:-1]:  # keep the newest epoch checkpoint only
                shutil.rmtree(old, ignore_errors=True)
        if distributed:
            import torch.distributed as dist

            dist.barrier()
    logger.close()
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return run_dir


def _atomic_text(path: Path, text: str) -> None:
    from ufinebench.io import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def _init_from(model: RetrievalModel, path: str) -> None:
    """Start from a checkpoint's encoder weights (e.g. imported CLIP); new heads stay fresh."""
    folder = resolve_checkpoint(path)
    sd = load_weights(folder)
    own = model.state_dict()
    take = {k: v for k, v in sd.items() if k.startswith(("visual.", "text.")) and k in own}
    bad = [k for k, v in take.items() if v.shape != own[k].shape]
    if bad:
        raise UFineBenchError(f"{path}: {bad[0]} has shape {tuple(take[bad[0]].shape)}, the model needs {tuple(own[bad[0]].shape)} "
                              "(import the weights with this image size and text length)")
    missing = [k for k in own if k.startswith(("visual.", "text.")) and k not in take]
    if missing:
        raise UFineBenchError(f"{path}: encoder weights missing ({missing[0]}, ...)")
    model.load_state_dict(take, strict=False)
