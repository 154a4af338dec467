"""Scale out with ``torch.distributed`` (launched by ``torchrun``): one chain or walker set
per rank, results gathered on rank 0.

Launch, e.g. on 2 nodes of 4 processes each::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 examples/distributed_sgmcmc.py

Backends: NCCL when every rank has a CUDA device, gloo on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

Result = TypeVar("Result")


def init_from_environment(backend: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR…).

    Returns (rank, world size); a no-op returning (0, 1) when not launched by torchrun.
    """
    import os

    if "RANK" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size), or (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_on_root(items: list[Any]) -> list[Any] | None:
    """Concatenate every rank's list on rank 0 in rank order (None on the other ranks).

    Tensors are moved to the CPU first so ranks on different devices can be merged.
    """
    items = [_to_cpu(item) for item in items]
    rank, world = rank_and_world_size()
    if world == 1:
        return items
    gathered: list[list[Any]] | None = [None] * world if rank == 0 else None
    dist.gather_object(items, gathered, dst=0)
    if rank != 0:
        return None
    return [item for part in gathered for item in part]


def run_per_rank(work: Callable[[int], list[Result]]) -> list[Result] | None:
    """Run ``work(rank)`` (e.g. one SG-MCMC chain or one set of MD walkers seeded by rank) on
    every rank and merge the results on rank 0."""
    rank, _ = rank_and_world_size()
    return gather_on_root(work(rank))


def _to_cpu(item: Any) -> Any:
    if isinstance(item, torch.Tensor):
        return item.detach().cpu()
    if isinstance(item, dict):
        return {key: _to_cpu(value) for key, value in item.items()}
    if isinstance(item, (list, tuple)):
        return type(item)(_to_cpu(value) for value in item)
    return item
