"""The MD driver: integrate, report, checkpoint, and stop cleanly if the run explodes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

import molsamp
from molsamp.integrators.base import Integrator
from molsamp.integrators.guard import ExplosionGuard, SimulationExploded
from molsamp.integrators.openmm_engine import OpenMMLangevinEngine, can_use_openmm_engine
from molsamp.io.checkpoint import load_checkpoint, save_checkpoint
from molsamp.io.reporters import Reporter
from molsamp.system import State

CHECKPOINT_FORMAT = "molsamp-md-checkpoint-1"
DEFAULT_GUARD = ExplosionGuard()


def simulate(
    integrator: Integrator,
    state: State,
    n_steps: int,
    *,
    reporters: Sequence[Reporter] = (),
    checkpoint: str | Path | None = None,
    checkpoint_interval: int | None = None,
    resume: bool = False,
    progress: bool = True,
    guard: ExplosionGuard | None = DEFAULT_GUARD,
    guard_interval: int = 1000,
    engine: Literal["auto", "torch", "openmm"] = "auto",
) -> State:
    """Run ``n_steps`` steps from ``state``, writing reports and checkpoints.

    Parameters
    ----------
    integrator : e.g. :class:`LangevinBAOAB` or :class:`VelocityVerlet`
    state : the starting state; the run ends at ``state.step + n_steps``
    reporters : each gets the state at every multiple of its ``interval``
    checkpoint : file for atomic checkpoints (written at the start, every
        ``checkpoint_interval`` steps and at the end)
    resume : continue from ``checkpoint`` if it exists; files are truncated to what the
        checkpoint recorded and appended, so the run is bit-identical to an uninterrupted one
    progress : show a progress bar
    guard : limits checked every ``guard_interval`` steps and at every report; on a breach
        the run stops with :class:`SimulationExploded`, keeping the last good checkpoint
        and frames. ``None`` disables it.
    engine : "auto" runs OpenMM's own BAOAB when the potential is an OpenMM force field;
        "torch" forces the torch step loop; "openmm" requires OpenMM's.

    Returns
    -------
    The final State.
    """
    _validate(n_steps, reporters, checkpoint, checkpoint_interval, guard_interval, engine)
    integrator = _choose_engine(integrator, engine)
    target = state.step + n_steps
    checkpoint = None if checkpoint is None else Path(checkpoint)

    if resume and checkpoint is not None and checkpoint.is_file():
        state = _resume(checkpoint, integrator, state, reporters)
    else:
        for reporter in reporters:
            reporter.start()
        if checkpoint is not None:
            _write_checkpoint(checkpoint, integrator, state, reporters)
    last_good_step = state.step
    last_checkpoint_step = state.step
    start_energy = None
    if guard is not None:
        start_energy = state.potential_energy
        if start_energy is None:
            with torch.no_grad():
                start_energy = integrator.potential.energy(state.positions, state.cell)

    bar = tqdm(total=target, initial=state.step, disable=not progress, unit="step", desc="MD")
    try:
        while state.step < target:
            stop = _next_stop(state.step, target, reporters, checkpoint_interval, guard_interval)
            try:
                state = integrator.step(state, stop - state.step)
                problem = None if guard is None else guard.problem(state, integrator.masses, start_energy)
            except ArithmeticError as error:  # an engine (OpenMM) refused non-finite numbers
                state, problem = state.replace(step=stop), str(error)
            if problem is not None:
                raise SimulationExploded(
                    f"simulation exploded at step {state.step}: {problem}. Last good state at "
                    f"step {last_good_step}; last good checkpoint at step {last_checkpoint_step}"
                    f"{'' if checkpoint is None else f' in {checkpoint}'}. Reduce the timestep "
                    f"(now {integrator.timestep} ps) or check the starting structure.",
                    step=state.step,
                    last_good_step=last_good_step,
                    checkpoint=None if checkpoint is None else str(checkpoint),
                )
            last_good_step = state.step
            for reporter in reporters:
                if state.step % reporter.interval == 0:
                    reporter.report(state, integrator)
            if checkpoint is not None and (
                state.step == target or (checkpoint_interval and state.step % checkpoint_interval == 0)
            ):
                _write_checkpoint(checkpoint, integrator, state, reporters)
                last_checkpoint_step = state.step
            bar.update(stop - bar.n)
    finally:
        bar.close()
        for reporter in reporters:
            reporter.flush()
            reporter.close()
    return state


def _validate(n_steps, reporters, checkpoint, checkpoint_interval, guard_interval, engine) -> None:
    if not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative int, got {n_steps!r}")
    if checkpoint_interval is not None and (
        not isinstance(checkpoint_interval, int) or checkpoint_interval <= 0
    ):
        raise ValueError(
            f"checkpoint_interval must be a positive number of steps, got {checkpoint_interval!r}"
        )
    if checkpoint_interval is not None and checkpoint is None:
        raise ValueError("checkpoint_interval is set but checkpoint (a file path) is None")
    if not isinstance(guard_interval, int) or guard_interval <= 0:
        raise ValueError(f"guard_interval must be a positive number of steps, got {guard_interval!r}")
    if engine not in ("auto", "torch", "openmm"):
        raise ValueError(f"engine must be 'auto', 'torch' or 'openmm', got {engine!r}")
    for reporter in reporters:
        if not isinstance(reporter, Reporter):
            raise TypeError(f"reporters must be molsamp Reporters, got {type(reporter).__name__}")


def _choose_engine(integrator: Integrator, engine: str) -> Integrator:
    if not isinstance(integrator, Integrator):
        raise TypeError(f"integrator must be a molsamp Integrator, got {type(integrator).__name__}")
    if engine == "torch" or isinstance(integrator, OpenMMLangevinEngine):
        return integrator
    if can_use_openmm_engine(integrator):
        # one engine per integrator: later calls continue its OpenMM contexts and random stream
        if integrator._openmm_engine is None:
            integrator._openmm_engine = OpenMMLangevinEngine(integrator)
        return integrator._openmm_engine
    if engine == "openmm":
        raise ValueError(
            "engine='openmm' needs a LangevinBAOAB (splitting 'BAOAB', no COM removal) with an "
            "OpenMMPotential; use engine='auto' or 'torch'"
        )
    return integrator


def _next_stop(step, target, reporters, checkpoint_interval, guard_interval) -> int:
    intervals = [r.interval for r in reporters] + [guard_interval]
    if checkpoint_interval:
        intervals.append(checkpoint_interval)
    return min([target] + [(step // every + 1) * every for every in intervals])


def _write_checkpoint(
    path: Path, integrator: Integrator, state: State, reporters: Sequence[Reporter]
) -> None:
    for reporter in reporters:
        reporter.flush()
    save_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "molsamp_version": molsamp.__version__,
            "settings": integrator.settings(),
            "state": {
                "positions": state.positions.detach().cpu(),
                "velocities": state.velocities.detach().cpu(),
                "cell": None if state.cell is None else state.cell.detach().cpu(),
                "step": state.step,
                "time": state.time,
            },
            "integrator": integrator.checkpoint_data(),
            "reporters": [reporter.progress() for reporter in reporters],
        },
    )


def _resume(path: Path, integrator: Integrator, initial: State, reporters: Sequence[Reporter]) -> State:
    payload = load_checkpoint(path)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a molsamp MD checkpoint (format {payload.get('format')!r})")
    if payload["settings"] != integrator.settings():
        raise ValueError(
            f"{path} was written with settings {payload['settings']}, but this run uses "
            f"{integrator.settings()}; resume with the same settings or start a new run"
        )
    saved = payload["state"]
    if tuple(saved["positions"].shape) != tuple(initial.positions.shape):
        raise ValueError(
            f"{path} holds positions of shape {tuple(saved['positions'].shape)}, this run "
            f"{tuple(initial.positions.shape)}"
        )
    recorded = payload["reporters"]
    if [r["path"] for r in recorded] != [str(r.path) for r in reporters]:
        raise ValueError(
            f"{path} recorded output files {[r['path'] for r in recorded]}, this run writes "
            f"{[str(r.path) for r in reporters]}; resume with the same outputs"
        )
    like = initial.positions
    state = State(
        positions=saved["positions"].to(like),
        velocities=saved["velocities"].to(like),
        cell=None if saved["cell"] is None else saved["cell"].to(like),
        step=int(saved["step"]),
        time=float(saved["time"]),
    )
    integrator.restore_checkpoint_data(payload["integrator"], state)
    for reporter, progress in zip(reporters, recorded, strict=True):
        reporter.resume(progress)
    return state
