"""Rolling a forecaster out: one step = one interval Δt, driven by :func:`simulate`.

The forecaster is wrapped as a molsamp :class:`~molsamp.integrators.Integrator`, so a rollout
gets the same reporters (CSV, trajectory files), atomic checkpoints with exact resume and the
NaN/explosion guard as MD. Each step: forecast (Δx, v') through the conservation layer,
move, add the model's velocity noise (its fitted per-element σ, without net linear or angular
momentum; optional), thermostat the velocities (optional), wrap the positions into the cell;
the graph is rebuilt from the new positions at the next step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from molsamp.flows.trajcast.model import TrajCast
from molsamp.flows.trajcast.physics import (
    THERMOSTATS,
    conserved_degrees_of_freedom,
    split_motion,
    wrap_positions,
)
from molsamp.integrators.base import Integrator, as_generator
from molsamp.integrators.guard import ExplosionGuard
from molsamp.integrators.simulate import DEFAULT_GUARD, simulate
from molsamp.io.reporters import Reporter
from molsamp.potentials.base import Potential
from molsamp.system import State, System


class UnknownEnergy(Potential):
    """Stands in for a potential when a rollout has no reference: energies are NaN (force-free
    dynamics has no energy), so CSV reports show ``nan`` and the guard checks only positions,
    velocities and kinetic energy."""

    accepts_cell = True

    def _energy(self, positions: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
        return torch.full(positions.shape[:1], float("nan"), dtype=positions.dtype, device=positions.device)


class ForecastIntegrator(Integrator):
    """A TrajCast model as an integrator whose time step is the forecast interval.

    Parameters
    ----------
    model : trained :class:`TrajCast`
    system : the System (atomic numbers, masses, cell, pbc)
    temperature : K of the thermostat, or None (no thermostat)
    thermostat_time : τ of the thermostat, ps
    thermostat : "bussi" (Bussi–Donadio–Parrinello velocity rescaling, one factor for all
        atoms) or "langevin" (per-atom, :class:`LocalLangevinThermostat`; holds every atom at
        the temperature when the forecaster heats some atoms and cools others)
    velocity_noise : add ``model.velocity_noise`` (per element, nm/ps) Gaussian noise to the
        forecast velocities, which restores the mean square an MSE-trained forecast lacks
    generator : seeded ``torch.Generator`` or int seed (the thermostat's and the noise's)
    potential : reference potential used only for reports (energy columns), or None
    angular : conserve angular momentum; default: for isolated systems (no cell)
    """

    def __init__(
        self,
        model: TrajCast,
        system: System,
        *,
        temperature: float | None = None,
        thermostat_time: float = 0.5,
        thermostat: str = "bussi",
        velocity_noise: bool = True,
        generator: torch.Generator | int = 0,
        potential: Potential | None = None,
        angular: bool | None = None,
    ):
        if thermostat not in THERMOSTATS:
            raise ValueError(f"thermostat must be one of {sorted(THERMOSTATS)}, got {thermostat!r}")
        super().__init__(UnknownEnergy() if potential is None else potential, system.masses, model.interval)
        self.model = model
        self.system = system
        self.angular = (not system.periodic) if angular is None else bool(angular)
        self.generator = as_generator(
            generator, model.displacement_scale.device
        )  # int: on the model's device
        self.noise = bool(velocity_noise) and bool((model.velocity_noise > 0).any())
        # per-atom σ (N, 1), nm/ps; the conserved momenta take no noise, the free dofs take all of it
        free = self.degrees_of_freedom(system.n_atoms) / (3 * system.n_atoms)
        self._noise_sigma = model.velocity_noise[model.species(system.atomic_numbers)][:, None] / free**0.5
        self.thermostat = (
            None
            if temperature is None
            else THERMOSTATS[thermostat](temperature, thermostat_time, self.generator, angular=self.angular)
        )

    @property
    def temperature(self) -> float | None:
        return None if self.thermostat is None else self.thermostat.temperature

    def degrees_of_freedom(self, n_atoms: int) -> int:
        """3N − 3 (linear momentum conserved), − 3 more with angular momentum conserved."""
        return 3 * n_atoms - conserved_degrees_of_freedom(self.angular)

    def settings(self) -> dict[str, float | str]:
        settings = {
            **super().settings(), "integrator": "TrajCast", "angular": str(self.angular),
            "velocity_noise": str(self.noise),
        }  # fmt: skip
        if self.thermostat is not None:
            settings.update(
                temperature=self.thermostat.temperature,
                thermostat_time=self.thermostat.time_constant,
                thermostat=type(self.thermostat).__name__,
            )
        return settings

    def checkpoint_data(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def restore_checkpoint_data(self, data: dict[str, torch.Tensor], state: State) -> None:
        self.generator.set_state(data["generator"])

    def _step(self, state: State, n_steps: int) -> State:
        x, v = state.positions, state.velocities
        for _ in range(n_steps):
            x, v = self.advance(x, v, state.cell)
            if not (torch.isfinite(x).all() and torch.isfinite(v).all()):
                # simulate() turns this into SimulationExploded with the last good state
                raise ArithmeticError("the forecast produced non-finite positions or velocities")
        return state.replace(
            positions=x, velocities=v, step=state.step + n_steps, time=state.time + n_steps * self.timestep
        )

    def advance(
        self, x: torch.Tensor, v: torch.Tensor, cell: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forecast step of (B, N, 3) positions and velocities: forecast, velocity noise,
        thermostat, wrap. Walkers are independent (a non-finite one leaves the others alone)."""
        x, v = self.forecast(x, v, cell)
        return self.perturb(x, v, cell)

    def forecast(
        self, x: torch.Tensor, v: torch.Tensor, cell: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's (B, N, 3) positions x + Δx and velocities v' through the conservation layer."""
        z = self.system.atomic_numbers.to(x.device)
        dx, v = self.model.forecast(z, self.masses.to(x), x, v, cell, self.system.pbc, angular=self.angular)
        return x + dx, v

    def perturb(
        self, x: torch.Tensor, v: torch.Tensor, cell: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rest of :meth:`advance` after :meth:`forecast`: noise, thermostat, wrap."""
        masses = self.masses.to(x)
        if self.noise:
            kick = self._noise_sigma.to(x) * torch.randn(
                v.shape, generator=self.generator, dtype=v.dtype, device=v.device
            )
            v = v + split_motion(x, kick, masses, self.angular)[1]
        if self.thermostat is not None:
            v = self.thermostat.apply(x, v, masses, self.timestep)
        if cell is not None and self.system.periodic:
            x = wrap_positions(x, cell, self.system.pbc)
        return x, v


def rollout(
    model: TrajCast,
    system: System,
    state: State,
    n_steps: int,
    *,
    temperature: float | None = None,
    thermostat_time: float = 0.5,
    thermostat: str = "bussi",
    velocity_noise: bool = True,
    generator: torch.Generator | int = 0,
    potential: Potential | None = None,
    reporters: Sequence[Reporter] = (),
    checkpoint: str | Path | None = None,
    checkpoint_interval: int | None = None,
    resume: bool = False,
    progress: bool = True,
    guard: ExplosionGuard | None = DEFAULT_GUARD,
    guard_interval: int = 100,
) -> State:
    """Forecast ``n_steps`` intervals of ``model.interval`` ps from ``state``.

    Parameters
    ----------
    model, system : the trained forecaster and the System it runs on
    state : starting State (positions nm, velocities nm/ps); its momenta are conserved, so give
        zero total momentum (and zero angular momentum for isolated molecules) for a system at rest
    temperature, thermostat_time : thermostat at ``temperature`` K with τ ps (None: none)
    thermostat : "bussi" or "langevin" (per atom), as in :class:`ForecastIntegrator`
    velocity_noise : add the model's fitted velocity noise (:class:`ForecastIntegrator`)
    generator : seeded generator or int seed of the thermostat and the noise
    potential : reference potential for the energy columns of reports (None: NaN energies)
    reporters, checkpoint, checkpoint_interval, resume, progress, guard, guard_interval :
        as in :func:`molsamp.integrators.simulate`; intervals count forecast steps

    Returns
    -------
    The final State (``step`` counts forecast steps, ``time`` in ps).
    """
    integrator = ForecastIntegrator(
        model, system, temperature=temperature, thermostat_time=thermostat_time, thermostat=thermostat,
        velocity_noise=velocity_noise, generator=generator, potential=potential,
    )  # fmt: skip
    with torch.no_grad():
        return simulate(
            integrator,
            state,
            n_steps,
            reporters=reporters,
            checkpoint=checkpoint,
            checkpoint_interval=checkpoint_interval,
            resume=resume,
            progress=progress,
            guard=guard,
            guard_interval=guard_interval,
            engine="torch",
        )


class FrameRecorder(Reporter):
    """Keeps positions and velocities of every report in memory (for analysis after a run).

    ``positions`` and ``velocities`` are lists of (B, N, 3) CPU float64 tensors, ``steps`` the
    step of each. It writes no file (``path`` only names it) and cannot resume.
    """

    def __init__(self, interval: int, name: str = "memory"):
        super().__init__(name, interval)
        self.positions: list[torch.Tensor] = []
        self.velocities: list[torch.Tensor] = []
        self.steps: list[int] = []

    def start(self) -> None:  # nothing on disk
        self.count = 0
        self._is_open = True

    def resume(self, progress: dict) -> None:
        raise ValueError("FrameRecorder keeps frames in memory only and cannot resume a run")

    def _write(self, state: State, integrator: Integrator) -> None:
        self.positions.append(state.positions.detach().to("cpu", torch.float64).clone())
        self.velocities.append(state.velocities.detach().to("cpu", torch.float64).clone())
        self.steps.append(state.step)
