"""Ready-made forecasting set-ups for the built-in systems (what ``molsamp forecast`` and
``examples/trajcast_forecast.py`` run): the reference MD that makes training data and the
reference MD that a rollout is compared with.

* ``lennard_jones_fluid`` — liquid argon (108 atoms, ρσ³ = 0.8, periodic). MD step 5 fs.
  Training data: NVE (velocity Verlet) segments after Langevin equilibration. Reference:
  velocity Verlet with the same Bussi thermostat the rollout uses, applied once per interval.
* ``alanine_dipeptide`` — vacuum, Amber ff99SB-ILDN, no constraints. MD step 1 fs.
  Training data and reference: Langevin (OpenMM engine) at low friction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from molsamp.flows.trajcast.physics import StochasticVelocityRescaling, center_of_mass
from molsamp.flows.trajcast.training import TrajectoryData, record_trajectory
from molsamp.integrators import LangevinBAOAB, VelocityVerlet, simulate
from molsamp.system import State


@dataclass(frozen=True)
class Recipe:
    """MD settings of a built-in system (ps, K, nm, 1/ps) and its forecaster's defaults."""

    name: str
    timestep: float
    temperature: float
    r_max: float
    data_friction: float  # 0: NVE segments (velocity Verlet) after equilibration
    equilibration_ps: float
    periodic: bool
    max_ell: int  # of the forecaster's edge spherical harmonics
    learning_rate: float  # Adam's, at the start of the cosine schedule
    ema_decay: float  # of the kept weight average (training.warmed_up_ema)


RECIPES = {
    "lennard_jones_fluid": Recipe("lennard_jones_fluid", 0.005, 120.0, 0.5, 0.0, 10.0, True, 1, 3e-3, 0.99),
    "alanine_dipeptide": Recipe("alanine_dipeptide", 0.001, 300.0, 0.5, 0.2, 10.0, False, 2, 6e-3, 0.999),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"system must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


def build(name: str, n_walkers: int = 1, seed: int = 0, temperature: float | None = None):
    """(System, State, reference Potential) of a recipe's system, B = ``n_walkers``."""
    from molsamp.systems import alanine_dipeptide, lennard_jones_fluid

    settings = recipe(name)
    temperature = settings.temperature if temperature is None else temperature
    if name == "lennard_jones_fluid":
        return lennard_jones_fluid(n_cells=3, temperature=temperature, n_walkers=n_walkers, seed=seed)
    return alanine_dipeptide("vacuum", temperature=temperature, n_walkers=n_walkers, seed=seed)


def zero_momenta(system, state: State) -> State:
    """Remove total linear (and, for isolated systems, angular) momentum from the velocities."""
    thermostat = StochasticVelocityRescaling(1.0, 1.0, 0, angular=not system.periodic)
    kept, internal = thermostat.split(state.positions, state.velocities, system.masses)
    return state.replace(velocities=internal)


def equilibrate(
    name: str, system, state: State, potential, seed: int = 0, temperature: float | None = None,
    progress: bool = False,
) -> State:  # fmt: skip
    """Langevin (γ = 5/ps) for the recipe's equilibration time; returns the last state
    (``progress``: show the MD's bar)."""
    settings = recipe(name)
    temperature = settings.temperature if temperature is None else temperature
    langevin = LangevinBAOAB(potential, system.masses, settings.timestep, temperature, 5.0, seed)
    steps = int(round(settings.equilibration_ps / settings.timestep))
    return simulate(langevin, state, steps, progress=progress)


def data_integrator(name: str, system, potential, seed: int = 0, temperature: float | None = None):
    """The MD that makes a recipe's training data: Langevin at the data friction, or velocity
    Verlet (NVE) when the recipe's data friction is 0."""
    settings = recipe(name)
    temperature = settings.temperature if temperature is None else temperature
    if settings.data_friction > 0:
        return LangevinBAOAB(
            potential, system.masses, settings.timestep, temperature, settings.data_friction, seed + 1
        )
    return VelocityVerlet(potential, system.masses, settings.timestep)


def training_data(
    name: str, system, state: State, potential, picoseconds: float, stride: int, seed: int = 0,
    temperature: float | None = None, progress: bool = False,
) -> tuple[TrajectoryData, State]:  # fmt: skip
    """Frames every ``stride`` MD steps over ``picoseconds`` from every walker of ``state``
    (``progress``: show the MD's bar)."""
    settings = recipe(name)
    integrator = data_integrator(name, system, potential, seed, temperature)
    if settings.data_friction == 0:
        state = state.replace(velocities=state.velocities - center_of_mass(state.velocities, system.masses))
    n_frames = int(round(picoseconds / (stride * settings.timestep)))
    return record_trajectory(integrator, system, state, n_frames, stride, progress)


def reference_md(
    name: str, system, state: State, potential, n_frames: int, frame_steps: int, seed: int = 0,
    temperature: float | None = None, thermostat_time: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Reference frames (positions, velocities), each (n_frames, B, N, 3), every
    ``frame_steps`` MD steps: velocity Verlet + the Bussi thermostat once per frame (fluid) or
    Langevin at the data friction (dipeptide)."""
    settings = recipe(name)
    temperature = settings.temperature if temperature is None else temperature
    if settings.data_friction > 0:
        from molsamp.flows.trajcast.driver import FrameRecorder

        integrator = LangevinBAOAB(
            potential, system.masses, settings.timestep, temperature, settings.data_friction, seed + 2
        )
        recorder = FrameRecorder(frame_steps)
        state = state.replace(step=0, time=0.0)
        simulate(integrator, state, n_frames * frame_steps, reporters=[recorder], progress=False, guard=None)
        return torch.stack(recorder.positions), torch.stack(recorder.velocities)
    integrator = VelocityVerlet(potential, system.masses, settings.timestep)
    thermostat = StochasticVelocityRescaling(temperature, thermostat_time, seed + 2, angular=False)
    state = zero_momenta(system, state)
    positions, velocities = [], []
    for _ in range(n_frames):
        state = simulate(integrator, state, frame_steps, progress=False, guard=None)
        v = thermostat.apply(
            state.positions, state.velocities, system.masses, frame_steps * settings.timestep
        )
        state = state.replace(velocities=v)
        positions.append(state.positions.detach().clone())
        velocities.append(state.velocities.detach().clone())
    return torch.stack(positions), torch.stack(velocities)
