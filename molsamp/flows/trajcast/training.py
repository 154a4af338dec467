"""Training a :class:`TrajCast` forecaster on MD trajectories.

Data are segments of frames (positions and velocities) recorded every ``stride`` MD steps;
a training example is a window of ``rollout_steps + 1`` frames at lag ``lag`` frames, i.e.
pairs at Δt = k·δt with k = lag·stride. The loss of step j of a window is

    |x̂_j − x_j|² / σ_x² + |v̂_j − v_j|² / σ_v²     (per element, mean over atoms and axes)

with x̂, v̂ the model's own rollout from frame 0 (multi-step loss for ``rollout_steps > 1``,
gradients through the whole rollout), position errors taken by minimum image, and σ the
per-element training RMS of the residuals (the model's normalisation). A rollout that diverges
mid-window contributes the steps before it (see :func:`window_loss`).

Data-parallel training (``train_forecaster(..., distributed=True)`` under ``torchrun``): every
rank holds the same data and draws the same global batch of ``batch_size × world size``
windows per step, of which it takes its own ``batch_size``; gradients are averaged over ranks
(one all-reduce per step), so a step equals a single-process step on the global batch and the
weights stay identical on every rank. Wall-clock decisions (learning rate,
stopping) use the ranks' mean elapsed time, so all ranks stop on the same step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch
from tqdm.auto import tqdm

from molsamp.distributed import all_reduce_sum, broadcast_from_root, rank_and_world_size
from molsamp.flows.trajcast.model import TrajCast
from molsamp.flows.trajcast.physics import minimum_image
from molsamp.integrators.base import Integrator
from molsamp.potentials.neighbors import neighbor_pairs
from molsamp.system import State, System


@dataclass
class TrajectoryData:
    """MD frames of one system for forecaster training.

    Attributes
    ----------
    system : the System (atomic numbers, masses, cell, pbc)
    positions, velocities : (S, T, N, 3) float64, nm and nm/ps: S segments of T frames each
    frame_time : ps between consecutive frames (stride × MD step)
    segment_weights : (S,) relative probability with which training draws each segment's
        windows (:func:`with_share`), or None: every window equally often
    """

    system: System
    positions: torch.Tensor
    velocities: torch.Tensor
    frame_time: float
    segment_weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.positions.ndim != 4 or self.positions.shape != self.velocities.shape:
            raise ValueError(
                f"positions and velocities must be (S, T, N, 3) of one shape, got {tuple(self.positions.shape)} "
                f"and {tuple(self.velocities.shape)}"
            )
        if self.positions.shape[2] != self.system.n_atoms:
            raise ValueError(f"frames have {self.positions.shape[2]} atoms, the system {self.system.n_atoms}")
        w = self.segment_weights
        if w is not None and (
            w.shape != self.positions.shape[:1]
            or not bool(torch.isfinite(w).all() and (w >= 0).all() and w.sum() > 0)
        ):
            raise ValueError(
                f"segment_weights must be ({self.positions.shape[0]},), finite, >= 0 and not all 0, got "
                f"{tuple(w.shape)} with sum {float(w.sum())}; pass None to draw every window equally often"
            )

    def windows(self, lag: int, rollout_steps: int) -> torch.Tensor:
        """(W, 2) (segment, first frame) of every window of rollout_steps + 1 frames at ``lag``."""
        span = lag * rollout_steps
        n_segments, n_frames = self.positions.shape[:2]
        if span >= n_frames:
            raise ValueError(
                f"segments of {n_frames} frames are too short for {rollout_steps} steps at lag {lag}"
            )
        starts = torch.arange(n_frames - span)
        return torch.cartesian_prod(torch.arange(n_segments), starts)

    def draw_windows(self, windows: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` of ``windows`` (W, 2), drawn with replacement: uniformly, or in proportion to
        their segments' ``segment_weights``."""
        if self.segment_weights is None:
            return windows[torch.randint(len(windows), (n,), generator=generator)]
        weights = self.segment_weights.double()[windows[:, 0]]
        return windows[torch.multinomial(weights, n, replacement=True, generator=generator)]

    def split(self, val_fraction: float) -> tuple[TrajectoryData, TrajectoryData]:
        """Time-ordered split of every segment: the last ``val_fraction`` of frames validate."""
        n = self.positions.shape[1]
        cut = n - max(1, int(round(val_fraction * n)))
        return (
            replace(self, positions=self.positions[:, :cut], velocities=self.velocities[:, :cut]),
            replace(self, positions=self.positions[:, cut:], velocities=self.velocities[:, cut:]),
        )

    def chunks(self, n_frames: int) -> TrajectoryData:
        """Every segment cut into consecutive pieces of ``n_frames`` (a remainder is dropped);
        windows that crossed a cut are lost, 1 in ``n_frames / span`` of them. A piece keeps its
        segment's weight."""
        n_segments, n_total = self.positions.shape[:2]
        pieces = n_total // n_frames
        if pieces < 1:
            raise ValueError(f"segments of {n_total} frames are shorter than one chunk of {n_frames}")

        def cut(frames: torch.Tensor) -> torch.Tensor:
            return frames[:, : pieces * n_frames].reshape(n_segments * pieces, n_frames, *frames.shape[2:])

        w = self.segment_weights
        return replace(
            self,
            positions=cut(self.positions),
            velocities=cut(self.velocities),
            segment_weights=None if w is None else w.repeat_interleave(pieces),
        )


def join(parts: Sequence[TrajectoryData]) -> TrajectoryData:
    """One data set from several of the same system, frame time and segment length. If any
    part has segment weights, a part without them weighs 1 per segment."""
    first = parts[0]
    for part in parts[1:]:
        if part.positions.shape[1:] != first.positions.shape[1:] or part.frame_time != first.frame_time:
            raise ValueError(
                f"can only join segments of one length and frame time: {tuple(part.positions.shape[1:])} at "
                f"{part.frame_time} ps vs {tuple(first.positions.shape[1:])} at {first.frame_time} ps"
            )
    weights = None
    if any(p.segment_weights is not None for p in parts):
        weights = torch.cat(
            [
                p.positions.new_ones(p.positions.shape[0]) if p.segment_weights is None else p.segment_weights
                for p in parts
            ]
        )
    return TrajectoryData(
        first.system,
        torch.cat([p.positions for p in parts]),
        torch.cat([p.velocities for p in parts]),
        first.frame_time,
        weights,
    )


def with_share(main: TrajectoryData, extra: TrajectoryData, share: float) -> TrajectoryData:
    """``main`` and ``extra`` (segments of one length) joined, weighted so that training draws
    the fraction ``share`` of its windows from ``extra``'s segments, whatever their numbers:
    ``main``'s segments weigh 1 (as segments joined later without weights do), ``extra``'s
    share / (1 − share) × S_main / S_extra. For strained restarts: drawn by their number
    (hundreds of hot segments), they carry most of the loss."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    n_main, n_extra = main.positions.shape[0], extra.positions.shape[0]
    extra_weight = share / (1.0 - share) * n_main / n_extra
    weights = torch.cat([torch.ones(n_main), torch.full((n_extra,), extra_weight)]).to(main.positions.dtype)
    plain = [replace(part, segment_weights=None) for part in (main, extra)]
    return replace(join(plain), segment_weights=weights)


def _random_frames(
    data: TrajectoryData, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and velocities (n, N, 3) of ``n`` frames drawn at random from every segment."""
    picks = torch.randint(data.positions.shape[0] * data.positions.shape[1], (n,), generator=generator)
    return data.positions.flatten(0, 1)[picks], data.velocities.flatten(0, 1)[picks]


def perturbed_restarts(
    integrator: Integrator,
    data: TrajectoryData,
    n_segments: int,
    n_frames: int,
    stride: int,
    position_noise: float,
    seed: int = 0,
) -> TrajectoryData:
    """Reference MD restarted from ``n_segments`` frames of ``data`` whose positions were
    displaced by Gaussian noise of standard deviation drawn uniformly from [0, position_noise]
    nm per segment (velocities kept). The segments are real trajectories of the reference
    dynamics, hotter and more strained than the data, so the forecaster also learns the true
    dynamics a little off the equilibrium manifold, where a rollout's errors take it."""
    if n_segments < 1 or not position_noise >= 0:
        raise ValueError(
            f"n_segments must be >= 1 and position_noise >= 0 nm, got {n_segments}, {position_noise}"
        )
    generator = torch.Generator().manual_seed(seed)
    positions, velocities = _random_frames(data, n_segments, generator)
    scale = position_noise * torch.rand(n_segments, 1, 1, generator=generator, dtype=positions.dtype)
    positions = positions + scale * torch.randn(positions.shape, generator=generator, dtype=positions.dtype)
    restarts, _ = record_trajectory(
        integrator, data.system, State(positions, velocities, data.system.cell), n_frames, stride
    )
    return restarts


def record_trajectory(
    integrator: Integrator, system: System, state: State, n_frames: int, stride: int, progress: bool = False
) -> tuple[TrajectoryData, State]:
    """Run MD with ``integrator`` and keep every ``stride``-th step; each walker of ``state``
    becomes one segment. Returns (data, final state). Uses :func:`simulate` (so an
    OpenMM force field runs in OpenMM's engine; ``progress`` shows its bar)."""
    from molsamp.flows.trajcast.driver import FrameRecorder
    from molsamp.integrators import simulate

    state = state.replace(step=0, time=0.0)  # frames at multiples of stride
    recorder = FrameRecorder(stride)
    recorder.start()
    recorder.report(state, integrator)  # frame 0
    state = simulate(
        integrator, state, (n_frames - 1) * stride, reporters=[recorder], progress=progress, guard=None
    )
    data = TrajectoryData(
        system,
        torch.stack(recorder.positions, 1),
        torch.stack(recorder.velocities, 1),
        stride * integrator.timestep,
    )
    return data, state


@torch.no_grad()
def fit_scales(model: TrajCast, data: TrajectoryData, lag: int) -> dict[str, list[float]]:
    """Set the model's per-element normalisation from data at lag ``lag`` frames.

    σ_x = RMS of Δx − vΔt, σ_v = RMS of v' − v, input scale = RMS of v (per element, over atoms
    and axes, segments weighted as training draws them: ``data.segment_weights``);
    avg_num_neighbors = mean neighbour count within r_max.
    """
    if not math.isclose(lag * data.frame_time, model.interval, rel_tol=1e-6):
        raise ValueError(
            f"lag {lag} frames × {data.frame_time} ps = {lag * data.frame_time} ps differs from the "
            f"model's interval {model.interval} ps"
        )
    system = data.system
    x0, x1 = data.positions[:, :-lag], data.positions[:, lag:]
    v0, v1 = data.velocities[:, :-lag], data.velocities[:, lag:]
    dx = minimum_image(x1 - x0, system.cell, system.pbc)
    species = model.species(system.atomic_numbers).cpu()
    n_el = len(model.elements)
    n_segments = data.positions.shape[0]
    weights = torch.ones(n_segments) if data.segment_weights is None else data.segment_weights
    drawn = weights > 0  # segments training never draws do not count, even if not finite
    weights = (weights[drawn] / weights.sum()).double()

    def per_element(values: torch.Tensor) -> torch.Tensor:  # (S, T, N, 3) → (n_el,)
        msq = weights @ values[drawn].double().square().mean(dim=(1, 3))  # (N,)
        out = torch.zeros(n_el, dtype=torch.float64).index_add_(0, species, msq)
        counts = torch.bincount(species, minlength=n_el).clamp_min(1)
        return (out / counts).sqrt().clamp_min(1e-8)

    sigma_x = per_element(dx - v0 * model.interval)
    sigma_v = per_element(v1 - v0)
    sigma_in = per_element(data.velocities)
    all_frames = data.positions.reshape(-1, system.n_atoms, 3)
    frames = all_frames[:: max(1, len(all_frames) // 20)]
    neighbours = 0
    for x in frames:
        batch = torch.zeros(system.n_atoms, dtype=torch.int64)
        cell = None if system.cell is None else system.cell[None]
        neighbours += neighbor_pairs(x, model.r_max, batch, 1, cell, system.pbc).edge_index.shape[1]
    avg = neighbours / (len(frames) * system.n_atoms)
    model.displacement_scale.copy_(sigma_x)
    model.velocity_scale.copy_(sigma_v)
    model.input_velocity_scale.copy_(sigma_in)
    model.avg_num_neighbors.fill_(max(avg, 1.0))
    return {
        "displacement_scale_nm": sigma_x.tolist(),
        "velocity_scale_nm_per_ps": sigma_v.tolist(),
        "input_velocity_scale_nm_per_ps": sigma_in.tolist(),
        "avg_num_neighbors": avg,
    }


@torch.no_grad()
def rollout_restarts(
    model: TrajCast,
    integrator: Integrator,
    data: TrajectoryData,
    n_starts: int,
    forecast_steps: int,
    n_frames: int,
    stride: int,
    temperature: float,
    seed: int = 0,
    max_energy_rise: float = 30.0,
) -> TrajectoryData | None:
    """Reference MD restarted from the states the model's own rollout reaches (DAgger).

    ``n_starts`` frames of ``data`` are forecast ``forecast_steps`` steps (Bussi thermostat at
    ``temperature`` K, the model's velocity noise); the states after 1/4, 2/4, 3/4 and all of
    them, whose reference potential energy is at most ``max_energy_rise`` kJ/mol above the
    highest of the data, start segments of ``n_frames`` frames of ``integrator``'s MD. So the
    forecaster learns the true dynamics where its own errors take it. None when no rollout
    stayed in range (a model too young to forecast)."""
    from molsamp.flows.trajcast.driver import ForecastIntegrator

    system = data.system
    device, dtype = model.displacement_scale.device, model.dtype
    start_x, start_v = (
        t.to(device, dtype) for t in _random_frames(data, n_starts, torch.Generator().manual_seed(seed))
    )
    forecaster = ForecastIntegrator(model, system, temperature=temperature, generator=seed)
    potential = integrator.potential
    frames = data.positions.flatten(0, 1)
    sample = frames[torch.linspace(0, len(frames) - 1, 200).long()]
    ceiling = float(potential.energy(sample, system.cell).max()) + max_energy_rise
    masses = system.masses.to(device, torch.float64)
    cell = None if system.cell is None else system.cell.to(device, dtype)
    x, v = start_x, start_v
    alive = torch.ones(n_starts, dtype=torch.bool, device=device)
    kept_x, kept_v = [], []
    for step in range(1, forecast_steps + 1):
        x, v = forecaster.advance(x, v, cell)
        kinetic = 0.5 * (masses[:, None] * v.double().square()).sum((-2, -1)) / system.n_atoms
        alive &= torch.isfinite(x).all((-2, -1)) & (kinetic < 100.0)  # kJ/mol per atom, as the MD guard
        x = torch.where(alive[:, None, None], x, start_x)  # a lost walker idles at its start
        v = torch.where(alive[:, None, None], v, start_v)
        if step % max(1, forecast_steps // 4) == 0 and alive.any():
            # the reference potential (OpenMM) judges the states on the CPU, four times per rollout
            x_cpu, v_cpu, alive_cpu = x.double().cpu(), v.double().cpu(), alive.cpu()
            energy = torch.full((n_starts,), math.inf, dtype=torch.float64)
            energy[alive_cpu] = potential.energy(x_cpu[alive_cpu], system.cell).double()
            alive_cpu &= energy <= ceiling  # past the ceiling a walker only gets worse
            alive = alive_cpu.to(device)
            kept_x.append(x_cpu[alive_cpu])
            kept_v.append(v_cpu[alive_cpu])
    positions = torch.cat(kept_x) if kept_x else torch.empty(0)
    velocities = torch.cat(kept_v) if kept_v else torch.empty(0)
    if len(positions) == 0:
        return None
    restarts, _ = record_trajectory(
        integrator, system, State(positions, velocities, system.cell), n_frames, stride
    )
    return restarts


@torch.no_grad()
def fit_velocity_noise(
    model: TrajCast, data: TrajectoryData, lag: int, max_windows: int = 512
) -> list[float]:
    """Set ``model.velocity_noise`` from one-step forecasts of (up to ``max_windows``) windows of
    ``data``: per element, σ² = max(0, ⟨v'²⟩ − ⟨v̂'²⟩), the mean square the forecast lacks.

    A forecaster trained on squared errors predicts the conditional mean, which is smaller than
    the true velocity by its error: each step then drains kinetic energy (on alanine dipeptide
    ~3 % of it per 10 fs, more than a Bussi thermostat of τ = 0.5 ps restores, so a rollout ran
    100 K cold). Gaussian noise of that variance on the forecast gives back the mean square the
    data have. A rollout visits its own states, where the forecast may keep a different share;
    :func:`~molsamp.flows.trajcast.calibration.calibrate_velocity_noise` sets the noise there,
    for a given thermostat. Returns σ per element, nm/ps."""
    windows = data.windows(lag, 1)
    pick = torch.linspace(0, len(windows) - 1, min(max_windows, len(windows))).round().long()
    system = data.system
    device, dtype = model.displacement_scale.device, model.dtype
    z = system.atomic_numbers.to(device)
    masses = system.masses.to(device, dtype)
    cell = None if system.cell is None else system.cell.to(device, dtype)
    species = model.species(z).cpu()
    n_el = len(model.elements)
    true_sq = torch.zeros(n_el, dtype=torch.float64)
    forecast_sq = torch.zeros(n_el, dtype=torch.float64)
    for chunk in windows[pick].split(16):
        seg, start = chunk[:, 0], chunk[:, 1]
        x = data.positions[seg, start].to(device, dtype)
        v = data.velocities[seg, start].to(device, dtype)
        _, forecast = model.forecast(z, masses, x, v, cell, system.pbc)
        target = data.velocities[seg, start + lag]
        true_sq.index_add_(0, species, target.square().sum((0, 2)))
        forecast_sq.index_add_(0, species, forecast.double().cpu().square().sum((0, 2)))
    counts = torch.bincount(species, minlength=n_el).clamp_min(1) * 3 * len(pick)
    sigma = ((true_sq - forecast_sq) / counts).clamp_min(0.0).sqrt()
    model.velocity_noise.copy_(sigma)
    return sigma.tolist()


@dataclass
class ForecastTrainingConfig:
    """Settings of :func:`train_forecaster`.

    Attributes
    ----------
    lag : frames between forecast steps (Δt = lag × frame_time)
    rollout_steps : forecast steps per window (1: pairs; > 1: multi-step rollout loss)
    rollout_weights : loss weight of each step (default all 1)
    diverged_step_loss : a training window whose step loss exceeds this (normalised units; a
        ballistic guess scores ~2 per step) has diverged: its rollout loss stops before that step
    batch_size : windows per optimiser step (per rank when training is distributed)
    lr, final_lr_factor : Adam learning rate, cosine-decayed to lr × factor over the budget
    max_steps : optimiser steps; max_time_s : wall-clock budget (whichever comes first)
    ema_decay : exponential moving average of the weights that is validated and kept (0: off);
        after n updates the decay used is min(ema_decay, (1 + n) / (10 + n)) (warm-up, so a
        short training averages its recent weights, not its initial ones)
    val_every : optimiser steps between validations
    val_windows : validation windows used (evenly spread)
    grad_clip : gradient-norm clip (0: off)
    dtype : model and data dtype
    seed : seeds initial weights and window sampling
    compile : run the network through ``torch.compile`` (:meth:`TrajCast.use_compile`; the
        model keeps it for rollouts); on CPU a training step takes about half the time
    """

    lag: int = 1
    rollout_steps: int = 1
    rollout_weights: Sequence[float] | None = None
    diverged_step_loss: float = 1e3
    batch_size: int = 4
    lr: float = 3e-3
    final_lr_factor: float = 0.02
    max_steps: int = 10**9
    max_time_s: float = math.inf
    ema_decay: float = 0.99
    val_every: int = 200
    val_windows: int = 64
    grad_clip: float = 10.0
    dtype: torch.dtype = torch.float32
    seed: int = 0
    progress: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("lag", "rollout_steps", "batch_size", "max_steps", "val_every", "val_windows"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no weight average), got {self.ema_decay}")
        if self.max_steps == 10**9 and math.isinf(self.max_time_s):
            raise ValueError("give max_steps or max_time_s (seconds): training needs a budget")
        if self.rollout_weights is not None and len(self.rollout_weights) != self.rollout_steps:
            raise ValueError(
                f"rollout_weights needs {self.rollout_steps} entries, got {len(self.rollout_weights)}"
            )


def warmed_up_ema(decay: float):
    """``multi_avg_fn`` for ``torch.optim.swa_utils.AveragedModel``: an exponential moving
    average whose decay after n averaged updates is min(``decay``, (1 + n) / (10 + n)), the
    warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``. Early weights, far
    from trained ones, are forgotten quickly; ``decay`` is reached after ~10 / (1 − decay)
    updates. The decay stays a tensor on the weights' device (no host synchronisation)."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = n_averaged.to(averaged[0].dtype)
        weight = 1.0 - torch.clamp((1.0 + n) / (10.0 + n), max=decay)  # weight of the new weights
        for a, c in zip(averaged, current, strict=True):
            a.lerp_(c, weight)

    return update


def window_loss(
    model: TrajCast,
    data: TrajectoryData,
    windows: torch.Tensor,
    lag: int,
    weights: Sequence[float],
    diverged_step_loss: float = math.inf,
) -> tuple[torch.Tensor, list[float]]:
    """Mean normalised rollout loss of ``windows`` (W, 2) and the loss of each step taken.

    With a finite ``diverged_step_loss`` (training), a rollout that diverges (a window's step
    loss not finite or above it) stops before that step, and the loss is that of the steps
    before it, so training still learns from them: skipping such windows instead would stall a
    model whose rollouts all diverge, since it could never move out of that region. The first
    step always counts. Otherwise (validation) a non-finite step makes the loss NaN, which a
    caller that trains skips."""
    system = data.system
    device = model.displacement_scale.device
    dtype = model.dtype
    seg, start = windows[:, 0], windows[:, 1]
    frames = start[:, None] + lag * torch.arange(len(weights) + 1)
    x_true = data.positions[seg[:, None], frames].to(device, dtype)  # (W, K+1, N, 3)
    v_true = data.velocities[seg[:, None], frames].to(device, dtype)
    z = system.atomic_numbers.to(device)
    masses = system.masses.to(device, dtype)
    cell = None if system.cell is None else system.cell.to(device, dtype)
    species = model.species(z)
    sx = model.displacement_scale[species][:, None]
    sv = model.velocity_scale[species][:, None]
    x, v = x_true[:, 0], v_true[:, 0]
    truncate = math.isfinite(diverged_step_loss)
    total, used, per_step = 0.0, 0.0, []
    for j, w in enumerate(weights, start=1):
        dx, v_next = model.forecast(z, masses, x, v, cell, system.pbc)
        x_next = x + dx
        finite = bool(torch.isfinite(x_next).all() and torch.isfinite(v_next).all())
        if finite:
            ex = minimum_image(x_next - x_true[:, j], cell, system.pbc) / sx
            ev = (v_next - v_true[:, j]) / sv
            per_window = ex.square().mean((1, 2)) + ev.square().mean((1, 2))  # (W,)
        if truncate and j > 1 and (not finite or float(per_window.detach().max()) > diverged_step_loss):
            break  # diverged: the steps before it are the loss
        if not finite:  # no graph of NaN positions: NaN, still on the graph; training skips it
            return math.nan * (x_next.sum() + v_next.sum()), per_step + [math.nan]
        step_loss = per_window.mean()
        per_step.append(float(step_loss.detach()))
        total, used = total + w * step_loss, used + w
        x, v = x_next, v_next
    return total / used, per_step


def _average_gradients(model: torch.nn.Module, elapsed: float, world: int) -> float:
    """Replace every gradient by its mean over the ``world`` ranks (one all-reduce, which also
    carries ``elapsed``); returns the ranks' mean elapsed seconds. A non-finite gradient on
    one rank makes the mean non-finite on all, so every rank skips that step alike."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in parameters] + [p.grad.new_tensor([elapsed])])
    flat = all_reduce_sum(flat) / world
    offset = 0
    for p in parameters:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return float(flat[-1])


@dataclass
class ForecastTrainingResult:
    model: TrajCast
    best_val_loss: float
    history: list[dict]
    steps: int
    seconds: float
    scales: dict
    config: dict


def train_forecaster(
    model: TrajCast,
    train_data: TrajectoryData,
    val_data: TrajectoryData,
    config: ForecastTrainingConfig,
    *,
    fit: bool = True,
    distributed: bool = False,
) -> ForecastTrainingResult:
    """Train ``model`` in place; the best validated (EMA) weights are loaded into it at the end.

    With ``distributed=True`` inside a process group (``torchrun`` and
    :func:`molsamp.distributed.init_from_environment`) every rank calls this with the same
    data; rank 0's initial weights are used and every rank ends with the same model."""
    rank, world = rank_and_world_size() if distributed else (0, 1)
    torch.manual_seed(config.seed)
    model.to(config.dtype)
    if config.compile and not model.compiled:  # options given to use_compile stay
        model.use_compile()
    scales = fit_scales(model, train_data, config.lag) if fit else {}
    if world > 1:
        model.load_state_dict(broadcast_from_root(model.state_dict()))
    weights = list(config.rollout_weights or [1.0] * config.rollout_steps)
    train_windows = train_data.windows(config.lag, config.rollout_steps)
    val_all = val_data.windows(config.lag, config.rollout_steps)
    pick = torch.linspace(0, len(val_all) - 1, min(config.val_windows, len(val_all))).round().long()
    val_windows = val_all[pick][rank::world]  # every rank validates its share; sums are added
    generator = torch.Generator().manual_seed(config.seed)  # the same on every rank: global batches
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, amsgrad=True)
    ema = (
        torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=warmed_up_ema(config.ema_decay))
        if config.ema_decay > 0
        else None
    )
    # every rank must stop at the same step: rank 0's budget holds (ranks that computed theirs
    # from their own clocks differ by milliseconds, which can straddle a step)
    budget_s = broadcast_from_root(config.max_time_s) if world > 1 else config.max_time_s
    start = time.perf_counter()
    elapsed = 0.0  # seconds; with several ranks their mean, updated with every step's all-reduce
    best, best_state, history = math.inf, None, []
    bar = tqdm(total=None, disable=not config.progress or rank != 0, unit="step", desc="trajcast")
    step = skipped = truncated = 0

    def validate() -> None:
        nonlocal best, best_state
        judged = ema.module if ema is not None else model
        sums = torch.zeros(3, dtype=torch.float64)  # loss × windows, one-step loss × windows, windows
        with torch.no_grad():
            for chunk in val_windows.split(16):
                loss_value, per_step = window_loss(judged, val_data, chunk, config.lag, weights)
                sums += torch.tensor(
                    [loss_value.item() * len(chunk), per_step[0] * len(chunk), len(chunk)], dtype=sums.dtype
                )
        if world > 1:
            sums = all_reduce_sum(sums)
        loss, first = (sums[:2] / sums[2]).tolist()
        history.append(
            {"step": step, "seconds": time.perf_counter() - start, "val_loss": loss, "val_one_step": first,
             "lr": optimizer.param_groups[0]["lr"], "skipped_non_finite_steps": skipped,
             "truncated_rollouts": truncated}
        )  # fmt: skip
        if loss < best:
            best, best_state = loss, copy.deepcopy(judged.state_dict())
        bar.set_postfix(val=f"{loss:.4f}")

    while step < config.max_steps:
        if world == 1:
            elapsed = time.perf_counter() - start
        if elapsed > budget_s:
            break
        fraction = min(1.0, max(step / config.max_steps, elapsed / budget_s))
        lr_now = config.lr * (
            config.final_lr_factor + (1 - config.final_lr_factor) * 0.5 * (1 + math.cos(math.pi * fraction))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        drawn = train_data.draw_windows(train_windows, config.batch_size * world, generator)
        chosen = drawn[rank * config.batch_size : (rank + 1) * config.batch_size]
        model.train()
        loss, per_step = window_loss(
            model, train_data, chosen, config.lag, weights, config.diverged_step_loss
        )
        truncated += len(per_step) < len(weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            elapsed = _average_gradients(model, time.perf_counter() - start, world)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
        if torch.isfinite(loss) and torch.isfinite(norm):  # one bad window must not poison the weights
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
        else:
            skipped += 1
        step += 1
        bar.update(1)
        if step % config.val_every == 0:
            validate()
    validate()
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    scales["velocity_noise_nm_per_ps"] = fit_velocity_noise(model, val_data, config.lag)
    settings = {
        k: (v if isinstance(v, (int, float, bool, type(None))) else str(v)) for k, v in asdict(config).items()
    }
    return ForecastTrainingResult(model, best, history, step, time.perf_counter() - start, scales, settings)
