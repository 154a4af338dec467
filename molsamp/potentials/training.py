"""Training MACE / TensorNet on energies, forces (and stress) in molsamp's units.

Loss = w_E · mean((ΔE / N)²) + w_F · mean(ΔF²) [+ w_S · mean(Δσ²)], energies in kJ/mol,
forces kJ/mol/nm, stress kJ/mol/nm³. A second stage (as in MACE's training recipe) raises the
energy weight and lowers the learning rate for the last part of the run. Validation uses an
exponential moving average (EMA) of the weights; the best EMA weights are kept and saved.

Data-parallel training (``train(..., distributed=True)`` under ``torchrun``): every rank
holds the whole data set, draws the same seeded order each epoch and takes its own slice of
each global batch of ``batch_size × world size`` structures; gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, NCCL on CUDA) and the
loss is normalised by the counts of the *global* batch, so a step equals one step of
single-process training on the combined batch. Validation metrics are summed over ranks;
rank 0 alone writes the checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from molsamp.distributed import agree_max, all_reduce_sum, broadcast_from_root, rank_and_world_size
from molsamp.potentials.datasets import AtomsDataset, Structure
from molsamp.potentials.graph import GraphPotential
from molsamp.potentials.neighbors import PairList, neighbor_pairs
from molsamp.potentials.serialization import save_potential


@dataclass
class TrainingConfig:
    """Settings of :func:`train` (units: kJ/mol, nm, seconds).

    Attributes
    ----------
    max_epochs : upper bound on passes over the training set
    batch_size : structures per step (per rank when training is distributed, so a step
        sees ``batch_size × world size`` structures)
    lr : initial learning rate
    weight_decay : AdamW decoupled weight decay (0 gives Adam)
    amsgrad : use the AMSGrad variant
    scheduler : "plateau" (halve on no improvement for ``scheduler_patience`` epochs),
        "cosine" (to lr/100 over ``max_epochs``) or "constant"
    energy_weight, forces_weight, stress_weight : loss weights w_E (1), w_F (nm²), w_S
    ema_decay : EMA decay per step (0 disables the EMA)
    stage_two_fraction : fraction of max_epochs (or of ``max_time_s``) after which stage two
        starts; 1 disables it
    stage_two_energy_weight : w_E in stage two
    stage_two_lr_factor : learning rate is multiplied by this at the start of stage two
    patience : stop after this many epochs without a better validation loss
    max_time_s : wall-clock budget; training stops after the epoch that passes it
    grad_clip : maximum gradient norm (0: no clipping)
    dtype : torch.float32 or torch.float64 for the model and data
    seed : seeds shuffling and dropout-free initial state
    progress : show a tqdm bar
    checkpoint : where to save the best model (None: not saved)
    """

    max_epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 5e-7
    amsgrad: bool = True
    scheduler: str = "plateau"
    scheduler_patience: int = 5
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 0.0
    ema_decay: float = 0.99
    stage_two_fraction: float = 0.8
    stage_two_energy_weight: float = 1000.0
    stage_two_lr_factor: float = 0.1
    patience: int = 30
    max_time_s: float = math.inf
    grad_clip: float = 100.0
    dtype: torch.dtype = torch.float64
    seed: int = 0
    progress: bool = True
    checkpoint: str | Path | None = None

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.scheduler not in ("plateau", "cosine", "constant"):
            raise ValueError(f"scheduler must be 'plateau', 'cosine' or 'constant', got {self.scheduler!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {self.dtype}")


@dataclass
class Batch:
    """Structures flattened for :meth:`GraphPotential.predict` (on one device/dtype)."""

    atomic_numbers: torch.Tensor
    positions: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    cell: torch.Tensor | None
    stress: torch.Tensor | None
    pairs: PairList | None = None


def collate(
    structures: list[Structure], r_max: float, dtype: torch.dtype, device: torch.device | str
) -> Batch:
    """Flatten structures and search their pairs within ``r_max`` (nm)."""
    counts = torch.tensor([s.atomic_numbers.shape[0] for s in structures])
    positions = torch.cat([s.positions for s in structures]).to(device, dtype)
    batch = torch.arange(len(structures)).repeat_interleave(counts).to(device)
    cell = None
    if structures[0].cell is not None:
        cell = torch.stack([s.cell for s in structures]).to(device, dtype)
    stress = None
    if all(s.stress is not None for s in structures):
        stress = torch.stack([s.stress for s in structures]).to(device, dtype)
    pairs = neighbor_pairs(positions, r_max, batch, len(structures), cell)
    return Batch(
        torch.cat([s.atomic_numbers for s in structures]).to(device),
        positions,
        batch,
        counts.to(device, dtype),
        torch.stack([s.energy for s in structures]).to(device, dtype),
        torch.cat([s.forces for s in structures]).to(device, dtype),
        cell,
        stress,
        pairs,
    )


def fit_statistics(
    model: GraphPotential, dataset: AtomsDataset, atomic_energies: dict[int, float] | None = None
) -> dict[str, float]:
    """Set the model's E0s, scale, shift and average neighbour count from data.

    E0 per element: ``atomic_energies`` if given (kJ/mol), else least squares of the
    energies on the element counts. shift = mean per-atom residual energy; scale = RMS of the
    force components (kJ/mol/nm); avg_num_neighbors = mean number of neighbours within r_max.
    """
    elements = model.supported_atomic_numbers
    missing = set(dataset.elements()) - set(elements)
    if missing:
        raise ValueError(f"dataset has elements {sorted(missing)} the model lacks ({elements})")
    counts = torch.stack(
        [torch.bincount(model.species(s.atomic_numbers).cpu(), minlength=len(elements)) for s in dataset]
    ).double()
    energies = torch.stack([s.energy for s in dataset]).double()
    if atomic_energies is not None:
        unknown = set(elements) - set(atomic_energies)
        if unknown:
            raise ValueError(f"atomic_energies lacks E0 for elements {sorted(unknown)}")
        e0 = torch.tensor([float(atomic_energies[z]) for z in elements], dtype=torch.float64)
    else:
        e0 = torch.linalg.lstsq(counts, energies[:, None], driver="gelsd").solution[:, 0]
    n_atoms = counts.sum(1)
    shift = ((energies - counts @ e0) / n_atoms).mean()
    forces = torch.cat([s.forces.flatten() for s in dataset])
    scale = forces.square().mean().sqrt().clamp_min(1e-6)
    neighbours = 0
    for s in dataset:
        batch = torch.zeros(s.positions.shape[0], dtype=torch.int64)
        cell = None if s.cell is None else s.cell[None]
        neighbours += neighbor_pairs(s.positions, model.r_max, batch, 1, cell).edge_index.shape[1]
    avg = neighbours / float(n_atoms.sum())
    with torch.no_grad():
        model.atomic_energies.copy_(e0)
        model.shift.fill_(float(shift))
        model.scale.fill_(float(scale))
        model.avg_num_neighbors.fill_(max(avg, 1.0))
    return {"shift": float(shift), "scale": float(scale), "avg_num_neighbors": avg}


def _predict(model: GraphPotential, batch: Batch, stress: bool, create_graph: bool) -> dict:
    return model.predict(
        batch.atomic_numbers,
        batch.positions,
        batch.batch,
        batch.cell,
        stress=stress,
        create_graph=create_graph,
        pairs=batch.pairs,
    )


def _loss(
    out: dict,
    batch: Batch,
    weights: tuple[float, float, float],
    totals: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """The training loss; with ``totals`` = (structures, force components, stress components)
    of a larger (global) batch, the sums over this batch are divided by those counts instead
    of taking means, so the losses of a batch's slices add up to the loss of the batch."""
    w_e, w_f, w_s = weights
    if totals is None:
        loss = w_e * ((out["energy"] - batch.energy) / batch.n_atoms).square().mean()
        loss = loss + w_f * (out["forces"] - batch.forces).square().mean()
        if w_s and batch.stress is not None:
            loss = loss + w_s * (out["stress"] - batch.stress).square().mean()
        return loss
    n_structures, n_force, n_stress = totals
    loss = w_e * ((out["energy"] - batch.energy) / batch.n_atoms).square().sum() / n_structures
    loss = loss + w_f * (out["forces"] - batch.forces).square().sum() / n_force
    if w_s and batch.stress is not None:
        loss = loss + w_s * (out["stress"] - batch.stress).square().sum() / n_stress
    return loss


def evaluate(model: GraphPotential, batches: list[Batch], weights=(1.0, 1.0, 0.0)) -> dict[str, float]:
    """Loss and errors over ``batches``: energy per atom (kJ/mol), forces (kJ/mol/nm, per
    component), stress (kJ/mol/nm³), plus the mean force magnitude and the relative force MAE.

    The loss is that of all structures as one batch, whatever the batching (so ranks holding
    different shares, or runs with other batch sizes, judge alike)."""
    return _metrics(_error_sums(model, batches), weights)


_SUM_NAMES = ("e_abs", "e_sq", "f_abs", "f_sq", "f_norm", "s_abs", "s_sq")
_COUNT_NAMES = ("n_struct", "n_comp", "n_atoms", "n_stress")


def _error_sums(model: GraphPotential, batches: list[Batch]) -> dict[str, float]:
    """The sums and counts :func:`evaluate` turns into metrics (additive over batches and ranks)."""
    sums = {"e_abs": 0.0, "e_sq": 0.0, "f_abs": 0.0, "f_sq": 0.0, "f_norm": 0.0}
    sums.update(s_abs=0.0, s_sq=0.0)
    n_struct = n_comp = n_atoms = n_stress = 0
    for batch in batches:
        want_stress = batch.stress is not None
        out = _predict(model, batch, want_stress, create_graph=False)
        de = (out["energy"] - batch.energy) / batch.n_atoms
        df = out["forces"] - batch.forces
        sums["e_abs"] += float(de.abs().sum())
        sums["e_sq"] += float(de.square().sum())
        sums["f_abs"] += float(df.abs().sum())
        sums["f_sq"] += float(df.square().sum())
        sums["f_norm"] += float(batch.forces.norm(dim=-1).sum())
        if want_stress:
            ds = out["stress"] - batch.stress
            sums["s_abs"] += float(ds.abs().sum())
            sums["s_sq"] += float(ds.square().sum())
            n_stress += ds.numel()
        n_struct += len(batch.energy)
        n_comp += df.numel()
        n_atoms += df.shape[0]
    return {**sums, "n_struct": n_struct, "n_comp": n_comp, "n_atoms": n_atoms, "n_stress": n_stress}


def _reduced_error_sums(sums: dict[str, float]) -> dict[str, float]:
    """``sums`` added over all ranks (float64, one all-reduce)."""
    names = _SUM_NAMES + _COUNT_NAMES
    total = all_reduce_sum(torch.tensor([float(sums[k]) for k in names], dtype=torch.float64))
    reduced = dict(zip(names, total.tolist(), strict=True))
    for name in _COUNT_NAMES:
        reduced[name] = round(reduced[name])
    return reduced


def _metrics(sums: dict[str, float], weights) -> dict[str, float]:
    n_struct, n_comp, n_atoms, n_stress = (sums[k] for k in _COUNT_NAMES)
    if not n_struct:
        raise ValueError("no validation structures to evaluate; give a non-empty validation set")
    w_e, w_f, w_s = weights
    loss = w_e * sums["e_sq"] / n_struct + w_f * sums["f_sq"] / n_comp
    if w_s and n_stress:
        loss += w_s * sums["s_sq"] / n_stress
    metrics = {
        "loss": loss,
        "energy_mae_per_atom": sums["e_abs"] / n_struct,
        "energy_rmse_per_atom": math.sqrt(sums["e_sq"] / n_struct),
        "forces_mae": sums["f_abs"] / n_comp,
        "forces_rmse": math.sqrt(sums["f_sq"] / n_comp),
        "mean_force_magnitude": sums["f_norm"] / n_atoms,
    }
    metrics["forces_mae_relative"] = metrics["forces_mae"] / metrics["mean_force_magnitude"]
    if n_stress:
        metrics["stress_mae"] = sums["s_abs"] / n_stress
        metrics["stress_rmse"] = math.sqrt(sums["s_sq"] / n_stress)
    return metrics


@dataclass
class TrainingResult:
    """What :func:`train` returns: the best (EMA) model, its validation metrics, history."""

    model: GraphPotential
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    epochs: int
    seconds: float
    config: dict


def train(
    model: GraphPotential,
    train_set: AtomsDataset,
    val_set: AtomsDataset,
    config: TrainingConfig | None = None,
    *,
    fit_stats: bool = True,
    distributed: bool = False,
) -> TrainingResult:
    """Train ``model`` in place on ``train_set``; select by loss on ``val_set``.

    Returns the best EMA weights (copied into ``model`` too) and the metrics history.

    With ``distributed=True`` and a process group (``torchrun`` and
    :func:`molsamp.distributed.init_from_environment`), every rank calls ``train`` with the
    same data, model and config and trains its shard (see the module docstring); the result
    is the same on every rank, and only rank 0 writes ``config.checkpoint``. Without a process
    group it is plain training. The model must be on this rank's device
    (:func:`molsamp.distributed.local_device`).
    """
    config = config or TrainingConfig()
    rank, world = rank_and_world_size() if distributed else (0, 1)
    torch.manual_seed(config.seed)
    device = model.atomic_energies.device
    model.to(config.dtype)
    if fit_stats:
        fit_statistics(model, train_set)
    with_stress = config.stress_weight > 0 and train_set.has_stress
    if config.stress_weight > 0 and not with_stress:
        raise ValueError("stress_weight > 0 but the training set has no stress; set it to 0")
    if world > 1 and len(train_set) < world:
        raise ValueError(f"{len(train_set)} training structures cannot be shared by {world} ranks")
    generator = torch.Generator().manual_seed(config.seed)
    val_batches = [
        collate(val_set.structures[k : k + config.batch_size], model.r_max, config.dtype, device)
        for k in range(rank * config.batch_size, len(val_set), config.batch_size * world)
    ]  # every rank validates its share; the sums are added over ranks
    # the step runs through DDP (gradients averaged over ranks as backward runs); DDP also
    # broadcasts rank 0's weights and buffers when it wraps the model
    step_model = _DistributedPredictor(model) if world > 1 else None
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, amsgrad=config.amsgrad
    )
    scheduler = _scheduler(optimizer, config)
    ema = (
        torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay)
        )
        if config.ema_decay > 0
        else None
    )
    weights = [config.energy_weight, config.forces_weight, config.stress_weight]
    best_loss, best_state, best_metrics, stale = math.inf, None, {}, 0
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    stage_two = config.stage_two_fraction >= 1
    bar = tqdm(total=config.max_epochs, disable=not config.progress or rank != 0, unit="epoch", desc="train")
    epoch, val_seconds, out_of_time = 0, 0.0, False
    # every rank must stop at the same epoch and batch: rank 0's budget holds for all
    budget_s = broadcast_from_root(config.max_time_s) if world > 1 else config.max_time_s
    timed = math.isfinite(budget_s)

    def clock() -> float:
        """Seconds since the start; the same on every rank when decisions depend on it."""
        elapsed = time.perf_counter() - start
        return agree_max(elapsed) if world > 1 and timed else elapsed

    def enter_stage_two(epoch: int, elapsed: float) -> bool:
        return not stage_two and (
            epoch > config.stage_two_fraction * config.max_epochs
            or elapsed > config.stage_two_fraction * budget_s
        )

    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = torch.randperm(len(train_set), generator=generator).tolist()
        train_loss, seen = 0.0, 0
        for k in range(0, len(order), config.batch_size * world):
            indices, totals = _shard(train_set, order[k : k + config.batch_size * world], rank, world)
            if not indices:  # a last global batch smaller than the number of ranks
                break
            elapsed = clock()
            if enter_stage_two(epoch, elapsed):
                stage_two = True
                weights[0] = config.stage_two_energy_weight
                for group in optimizer.param_groups:
                    group["lr"] *= config.stage_two_lr_factor
                best_loss, stale = math.inf, 0  # the loss changed meaning
            # leave room for the validation pass within the time budget
            if elapsed + val_seconds > budget_s and seen:
                out_of_time = True
                break
            batch = collate([train_set[i] for i in indices], model.r_max, config.dtype, device)
            optimizer.zero_grad(set_to_none=True)
            if step_model is None:
                loss = _loss(_predict(model, batch, with_stress, True), batch, weights)
                loss.backward()
            else:
                # this rank's part of the global batch's loss; DDP averages gradients over
                # ranks, so × world makes their mean the gradient of the global loss
                loss = _loss(step_model(batch, with_stress), batch, weights, totals)
                (loss * world).backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            n_global = len(batch.energy) if totals is None else totals[0]
            train_loss += float(loss.detach()) * n_global  # one sync per step; fine on GPU too
            seen += n_global
        if world > 1:  # the ranks' losses are parts of the global losses: add them up
            train_loss = float(all_reduce_sum(torch.tensor([train_loss], dtype=torch.float64))[0])
        val_start = clock()
        judged = ema.module if ema is not None else model
        judged.eval()
        sums = _error_sums(judged, val_batches)
        metrics = _metrics(_reduced_error_sums(sums) if world > 1 else sums, tuple(weights))
        val_end = clock()
        val_seconds = val_end - val_start
        metrics.update(
            epoch=epoch,
            train_loss=train_loss / max(seen, 1),
            lr=optimizer.param_groups[0]["lr"],
            stage=2 if stage_two else 1,
            seconds=val_end,
        )
        history.append(metrics)
        if scheduler is not None:
            if config.scheduler == "plateau":
                scheduler.step(metrics["loss"])
            else:
                scheduler.step()
        if metrics["loss"] < best_loss:
            best_loss, best_metrics, stale = metrics["loss"], metrics, 0
            best_state = copy.deepcopy(judged.state_dict())
            if config.checkpoint is not None and rank == 0:
                _save_best(model, best_state, config.checkpoint)
        else:
            stale += 1
        bar.update(1)
        bar.set_postfix(F_mae=f"{metrics['forces_mae']:.2f}", E_mae=f"{metrics['energy_mae_per_atom']:.3f}")
        if stale >= config.patience or out_of_time or metrics["seconds"] > budget_s:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    settings = {k: str(v) if not isinstance(v, int | float | bool) else v for k, v in asdict(config).items()}
    return TrainingResult(model, best_metrics, history, epoch, time.perf_counter() - start, settings)


def _shard(
    dataset: AtomsDataset, indices: list[int], rank: int, world: int
) -> tuple[list[int], tuple[int, int, int] | None]:
    """This rank's slice of a global batch, and the global batch's counts (structures, force
    components, stress components) to normalise the loss by (None for one process).

    The batch is split into ``world`` nearly equal contiguous slices; a batch with fewer
    structures than ranks (the end of an epoch) is skipped by every rank alike.
    """
    if world == 1:
        return indices, None
    if len(indices) < world:
        return [], None
    size, extra = divmod(len(indices), world)
    start = rank * size + min(rank, extra)
    mine = indices[start : start + size + (rank < extra)]
    n_atoms = sum(dataset[i].atomic_numbers.shape[0] for i in indices)
    return mine, (len(indices), 3 * n_atoms, 9 * len(indices))


class _DistributedPredictor(torch.nn.Module):
    """The training forward pass (energies, forces, stress of a :class:`Batch`) wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`.

    Forces are gradients of the energy with respect to edge vectors taken inside the forward
    pass (``create_graph=True``); parameter gradients, and with them DDP's all-reduce, come
    only from the loss's ``backward``.
    """

    def __init__(self, model: GraphPotential):
        super().__init__()
        from torch.nn.parallel import DistributedDataParallel

        self.inner = _Predictor(model)
        # buffers (E0s, scale, shift) are identical on every rank after the broadcast made
        # when wrapping; re-broadcasting them every step would only cost time
        import inspect

        no_resync = (
            {"forward_sync_buffers": False}  # torch >= 2.13 deprecates broadcast_buffers
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        self.ddp = DistributedDataParallel(
            self.inner, device_ids=None, find_unused_parameters=False, **no_resync
        )

    def forward(self, batch: Batch, stress: bool) -> dict:
        return self.ddp(batch, stress)


class _Predictor(torch.nn.Module):
    def __init__(self, model: GraphPotential):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, stress: bool) -> dict:
        return _predict(self.model, batch, stress, create_graph=True)


def _scheduler(optimizer, config: TrainingConfig):
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=config.scheduler_patience
        )
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.max_epochs, eta_min=config.lr / 100
        )
    return None


def _save_best(model: GraphPotential, state: dict, path: str | Path) -> None:
    snapshot = copy.deepcopy(model)
    snapshot.load_state_dict(state)
    save_potential(snapshot, path)
