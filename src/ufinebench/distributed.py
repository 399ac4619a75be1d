"""One process-group set-up for every command that runs under ``torchrun`` (training, evaluation).

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`setup` joins the group (gloo on
the CPU, nccl on CUDA) and picks this process's device. Without ``torchrun`` everything is one
process and nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """Where this process stands: its rank among ``world`` processes, and its device."""

    world: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1


def env_ranks() -> tuple[int, int, int]:
    """(world size, rank, local rank) as ``torchrun`` sets them; (1, 0, 0) without it."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def setup(device: str | None = None) -> Processes:
    """Join the process group when there are several processes and choose this process's device.

    ``device``: "cpu", "cuda" or None (CUDA when available). On CUDA each process takes the GPU
    of its local rank.
    """
    world, rank, local = env_ranks()
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        dev = torch.device(f"cuda:{local}") if world > 1 or device in (None, "cuda") else torch.device(str(device))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    return Processes(world, rank, local, dev)


def _active() -> bool:
    """Whether this process belongs to an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def group_ranks() -> tuple[int, int]:
    """(rank, world size) of an initialised process group, else (0, 1)."""
    if _active():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """``t`` replaced by its element-wise maximum over the processes (in place; one process: as it is)."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier() -> None:
    """Wait for every process (nothing to wait for without a group)."""
    if _active():
        dist.barrier()
