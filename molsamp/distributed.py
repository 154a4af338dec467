"""Scale out with ``torch.distributed`` (launched by ``torchrun``): one chain or walker set
per rank, results gathered on rank 0; data-parallel training lives in
:func:`molsamp.potentials.training.train` and
:func:`molsamp.flows.trajcast.train_forecaster` (``distributed=True``).

Launch on one machine with 2 processes::

    torchrun --nproc-per-node 2 examples/sgmcmc_alanine.py --output runs/sgmcmc

and on 2 machines of 4 processes each (the same command on every machine; HOST is the
address of one of them, reachable from the others on port 29500)::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id RUN_NAME examples/sgmcmc_alanine.py

Backends: NCCL when every rank has a CUDA device (rank r uses ``cuda:LOCAL_RANK``, see
:func:`local_device`), gloo on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from molsamp.system import State

Result = TypeVar("Result")


def init_from_environment(backend: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR…).

    Returns (rank, world size); a no-op returning (0, 1) when not launched by torchrun.
    """
    if "RANK" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":  # NCCL collectives (objects too) run on the current device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
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


def local_device() -> torch.device:
    """The device this process should use: ``cuda:LOCAL_RANK`` (made current) when CUDA is
    available, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def rank_seed(seed: int, rank: int | None = None) -> int:
    """An independent seed for ``rank`` (default: this process's rank) derived from ``seed``.

    Uses numpy's ``SeedSequence`` spawning, so streams of different ranks (and of different
    base seeds) do not overlap the way ``seed + rank`` would (seed 0 on rank 1 = seed 1 on
    rank 0).
    """
    import numpy as np

    if rank is None:
        rank, _ = rank_and_world_size()
    child = np.random.SeedSequence(seed).spawn(rank + 1)[rank]
    return int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))  # fits int64


def broadcast_from_root(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (pickled through the process group; the identity
    outside one). Use it for data one rank builds, e.g. a labelled training set."""
    _, world = rank_and_world_size()
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (a new tensor; the input outside a process group)."""
    _, world = rank_and_world_size()
    if world == 1:
        return values
    total = values.to(_communication_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(values.device)


def agree_max(value: float) -> float:
    """The largest of every rank's ``value``: ranks that decide on wall-clock time must
    decide alike or they deadlock (one stops while another waits for it)."""
    _, world = rank_and_world_size()
    if world == 1:
        return float(value)
    total = torch.tensor([float(value)], dtype=torch.float64, device=_communication_device())
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    return float(total[0])


def _communication_device() -> torch.device:
    """Where tensors for collectives must live: the current CUDA device for NCCL, else CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_walkers(tensor: torch.Tensor) -> torch.Tensor | None:
    """Concatenate every rank's (B_r, …) tensor along the walker axis on rank 0, in rank
    order, on the CPU (None on the other ranks). Ranks may hold different B_r."""
    parts = gather_on_root([tensor])
    return None if parts is None else torch.cat(parts)


def merge_states(state: State) -> State | None:
    """One :class:`~molsamp.system.State` on rank 0 holding every rank's walkers (rank 0's
    first), on the CPU; None on the other ranks.

    The ranks must have run the same number of steps of the same system (same step, time
    and cell): each rank runs its own independent walkers (seed them with :func:`rank_seed`)
    and this merges the results as if one process had run them all.
    """
    from molsamp.system import State

    fields = {
        "positions": state.positions,
        "velocities": state.velocities,
        "potential_energy": state.potential_energy,
        "forces": state.forces,
    }
    header = (state.step, state.time, None if state.cell is None else state.cell.detach().cpu())
    gathered = gather_on_root([(header, fields)])
    if gathered is None:
        return None
    (step, time, cell), _ = gathered[0]
    for rank, ((other_step, _, other_cell), _) in enumerate(gathered):
        if (
            other_step != step
            or (cell is None) != (other_cell is None)
            or (cell is not None and not torch.equal(cell, other_cell))
        ):
            raise ValueError(
                f"rank {rank} is at step {other_step} (cell {other_cell}) but rank 0 at step {step} "
                f"(cell {cell}); merge states of the same system after the same number of steps"
            )

    def cat(name: str) -> torch.Tensor | None:
        parts = [part[name] for _, part in gathered]
        return None if any(p is None for p in parts) else torch.cat(parts)

    return State(
        positions=cat("positions"),
        velocities=cat("velocities"),
        cell=cell,
        step=step,
        time=time,
        potential_energy=cat("potential_energy"),
        forces=cat("forces"),
    )
