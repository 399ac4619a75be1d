"""The trainer: an application of the library that turns a config into a run folder of checkpoints.

One process or many under ``torchrun`` (gloo on CPU, nccl on GPU). N processes see exactly the
batches one process would (``DistributedBatchSampler``); losses that need the whole batch gather it
(``ufinebench.losses``): global SDM, granularity SDM, the matcher's hard negatives and the MLM token
count. So with the same global batch size, N processes reach the same weights as one, up to float
rounding (tests/test_train.py checks 2 processes on the CPU).

Each epoch ends with an atomic checkpoint (weights, config, tokenizer, attribute vocabulary,
optimizer, scheduler, RNG states), optional validation with the metrics engine, a best checkpoint
by a chosen metric, JSONL log lines and TensorBoard events (when tensorboard is installed).
``resume`` continues a killed run from its last checkpoint to the same weights an uninterrupted run
reaches (exactly, on the CPU): data order, augmentation and negatives are functions of (seed,
epoch, step). On the CPU a run is also bit-identical to a rerun at the same thread count: training
runs under ``torch.use_deterministic_algorithms`` (:func:`~ufinebench.training.optim.deterministic_cpu`).

Modules: :mod:`.optim` (parameter groups, schedule, autocast), :mod:`.augment` (per-pair caption
streams), :mod:`.data` (annotations, tokenizer, vocabulary, pairs, sampler, val set), :mod:`.state`
(model, optimizer, resume), :mod:`.step` (one step), :mod:`.validation` (val metrics, the re-rank
blend), :mod:`.checkpointing` (end of epoch), :mod:`.run` (the run), :mod:`.dry_run`, :mod:`.log`.
"""

from ufinebench.training.dry_run import dry_run
from ufinebench.training.run import TRAIN_ENTRIES, train
from ufinebench.training.step import NonFiniteLossError

__all__ = ["TRAIN_ENTRIES", "NonFiniteLossError", "dry_run", "train"]
