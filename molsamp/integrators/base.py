"""What every position-space integrator shares: settings validation and cached forces."""

from __future__ import annotations

from typing import Any

import torch

from molsamp.potentials.base import Potential
from molsamp.system import State


def as_generator(generator: torch.Generator | int, device: torch.device | str = "cpu") -> torch.Generator:
    """Accept a seeded ``torch.Generator`` or an int seed (a new generator on ``device``)."""
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator(device=device).manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator or an int seed, got {type(generator).__name__}")


def on_same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` name one device: ``cuda`` (a generator's device) is the current
    CUDA device, ``cuda:0`` a tensor's, and ``cpu`` is ``cpu:0``."""

    def index(device: torch.device) -> int:
        if device.index is not None:
            return device.index
        return torch.cuda.current_device() if device.type == "cuda" else 0

    return a.type == b.type and index(a) == index(b)


def require_positive(name: str, value: float, unit: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be > 0 {unit}, got {value!r}")
    return float(value)


class Integrator:
    """Base of position-space integrators: ``step(state, n_steps) -> State``.

    Parameters
    ----------
    potential : the potential energy model
    masses : (N,) tensor, amu, all > 0
    timestep : ps, > 0
    """

    def __init__(self, potential: Potential, masses: Any, timestep: float):
        if not isinstance(potential, Potential):
            raise TypeError(f"potential must be a molsamp Potential, got {type(potential).__name__}")
        masses = torch.as_tensor(masses, dtype=torch.float64)
        if masses.ndim != 1:
            raise ValueError(f"masses must have shape (N,) in amu, got {tuple(masses.shape)}")
        if not (masses > 0).all():
            raise ValueError(f"masses must be > 0 amu, got min {masses.min().item()}")
        self.potential = potential
        self.masses = masses
        self.timestep = require_positive("timestep", timestep, "ps")

    @property
    def temperature(self) -> float | None:
        """Target temperature in K, or None for microcanonical integrators."""
        return None

    def degrees_of_freedom(self, n_atoms: int) -> int:
        """Kinetic degrees of freedom for the instantaneous temperature."""
        return 3 * n_atoms

    def step(self, state: State, n_steps: int = 1) -> State:
        """Advance ``state`` by ``n_steps`` steps; returns a new State."""
        if not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative int, got {n_steps!r}")
        if state.n_atoms != self.masses.numel():
            raise ValueError(f"state has {state.n_atoms} atoms but masses has {self.masses.numel()}")
        with torch.no_grad():
            return self._step(state, n_steps)

    def _step(self, state: State, n_steps: int) -> State:
        raise NotImplementedError

    def checkpoint_data(self) -> dict[str, torch.Tensor]:
        """Internal state (random-number state, engine state) a checkpoint must hold."""
        return {}

    def restore_checkpoint_data(self, data: dict[str, torch.Tensor], state: State) -> None:
        """Restore what :meth:`checkpoint_data` returned, for a run resuming from ``state``."""

    def settings(self) -> dict[str, float | str]:
        """Settings a checkpoint records so a resume with different settings is refused."""
        return {"integrator": type(self).__name__, "timestep": self.timestep}

    def _masses_like(self, like: torch.Tensor) -> torch.Tensor:
        """The (N,) masses on ``like``'s device and dtype, copied there once, not every call."""
        key = (like.device, like.dtype)
        cached = getattr(self, "_masses_cache", None)
        if cached is None or cached[0] != key:
            cached = self._masses_cache = (key, self.masses.to(like))
        return cached[1]

    def _energy_and_forces(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        if state.forces is not None and state.potential_energy is not None:
            return state.potential_energy, state.forces
        return self.potential.energy_and_forces(state.positions, state.cell)
