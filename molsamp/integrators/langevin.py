"""Langevin dynamics by operator splitting; BAOAB by default.

BAOAB (Leimkuhler & Matthews, Appl. Math. Res. Express 2013) samples configurations with
the smallest time-step error of the common splittings: for a harmonic oscillator ⟨x²⟩ is
exact at any stable step, while on-step velocities are damped by 1 − ω²Δt²/4.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from molsamp.integrators.base import Integrator, as_generator, on_same_device, require_positive
from molsamp.potentials.base import Potential
from molsamp.system import State
from molsamp.thermo import remove_center_of_mass_velocity
from molsamp.units import BOLTZMANN_KJ_PER_MOL_K


class LangevinBAOAB(Integrator):
    """Langevin integrator for B walkers at constant temperature.

    Parameters
    ----------
    potential : molsamp Potential
    masses : (N,) tensor, amu
    timestep : ps
    temperature : K
    friction : collision rate γ, 1/ps (0 gives velocity Verlet)
    generator : seeded ``torch.Generator`` on the state's device, or an int seed
    splitting : a word of the letters B (kick), A (drift) and O (Ornstein–Uhlenbeck), each
        letter's step being Δt divided by its count; "BAOAB" (default), "OBABO", "ABOBA"…
    remove_com_motion : subtract each walker's centre-of-mass velocity after every step;
        the kinetic degrees of freedom are then 3N − 3.

    Notes
    -----
    Every stochastic choice draws from ``generator``; its state goes into checkpoints, so a
    resumed run is bit-identical. When ``potential`` is an :class:`OpenMMPotential`,
    :func:`molsamp.integrators.simulate` runs OpenMM's own BAOAB (``engine="auto"``).
    """

    def __init__(
        self,
        potential: Potential,
        masses: Any,
        timestep: float,
        temperature: float,
        friction: float,
        generator: torch.Generator | int,
        *,
        splitting: str = "BAOAB",
        remove_com_motion: bool = False,
    ):
        super().__init__(potential, masses, timestep)
        self._temperature = require_positive("temperature", temperature, "K")
        if not isinstance(friction, (int, float)) or not friction >= 0:
            raise ValueError(f"friction must be >= 0 1/ps, got {friction!r}")
        if not splitting or set(splitting) - set("ABO") or "A" not in splitting or "B" not in splitting:
            raise ValueError(f"splitting must be a word of A, B and O containing A and B, got {splitting!r}")
        self.friction = float(friction)
        self.splitting = splitting
        self.remove_com_motion = bool(remove_com_motion)
        self.generator = as_generator(generator)
        self._openmm_engine = None  # set by ``simulate`` when OpenMM integrates the steps

    @property
    def temperature(self) -> float:
        return self._temperature

    def degrees_of_freedom(self, n_atoms: int) -> int:
        return 3 * n_atoms - (3 if self.remove_com_motion else 0)

    def checkpoint_data(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def restore_checkpoint_data(self, data: dict[str, torch.Tensor], state: State) -> None:
        self.generator.set_state(data["generator"])

    def settings(self) -> dict[str, float | str]:
        return {
            **super().settings(),
            "temperature": self._temperature,
            "friction": self.friction,
            "splitting": self.splitting,
        }

    def _step(self, state: State, n_steps: int) -> State:
        dt, word = self.timestep, self.splitting
        x, v = state.positions, state.velocities
        if not on_same_device(self.generator.device, x.device):
            raise ValueError(
                f"generator is on {self.generator.device} but the state is on {x.device}; "
                "make the generator on the state's device"
            )
        masses = self._masses_like(x)
        inverse_mass = (1.0 / masses)[:, None]
        h = {letter: dt / word.count(letter) for letter in set(word)}
        use_noise = "O" in word and self.friction > 0
        if use_noise:
            c1 = math.exp(-self.friction * h["O"])
            noise_scale = math.sqrt(1.0 - c1 * c1) * torch.sqrt(
                BOLTZMANN_KJ_PER_MOL_K * self._temperature * inverse_mass
            )
        energy, forces = self._energy_and_forces(state)
        stale = False
        for _ in range(n_steps):
            for letter in word:
                if letter == "B":
                    if stale:
                        energy, forces = self.potential.energy_and_forces(x, state.cell)
                        stale = False
                    v = v + h["B"] * forces * inverse_mass
                elif letter == "A":
                    x = x + h["A"] * v
                    stale = True
                elif use_noise:
                    xi = torch.randn(v.shape, generator=self.generator, device=v.device, dtype=v.dtype)
                    v = c1 * v + noise_scale * xi
            if self.remove_com_motion:
                v = remove_center_of_mass_velocity(v, masses)
        if stale:
            energy, forces = self.potential.energy_and_forces(x, state.cell)
        return state.replace(
            positions=x,
            velocities=v,
            step=state.step + n_steps,
            time=state.time + n_steps * dt,
            potential_energy=energy,
            forces=forces,
        )
