"""Run BAOAB Langevin inside OpenMM when the potential *is* an OpenMM force field.

A Python step loop that calls OpenMM for forces costs several times OpenMM's own ~10 µs
step on a small molecule. OpenMM's ``LangevinMiddleIntegrator`` is BAOAB in leapfrog form:
it stores u = v − (Δt/2)·F/m, the velocity before the last half kick. Converting at the
boundaries gives exactly the BAOAB chain of :class:`LangevinBAOAB`, with OpenMM's random
numbers. OpenMM's own checkpoints (which hold its random-number state) go into molsamp's
checkpoints, so a resumed run is bit-identical.
"""

from __future__ import annotations

import numpy as np
import openmm
import torch

from molsamp.integrators.base import Integrator
from molsamp.integrators.langevin import LangevinBAOAB
from molsamp.potentials.openmm import OpenMMPotential
from molsamp.system import State


def can_use_openmm_engine(integrator: object) -> bool:
    """Whether ``integrator`` is a plain BAOAB Langevin on an OpenMM force field."""
    return (
        isinstance(integrator, LangevinBAOAB)
        and isinstance(integrator.potential, OpenMMPotential)
        and integrator.splitting == "BAOAB"
        and not integrator.remove_com_motion
    )


def _without_center_of_mass_remover(system: openmm.System) -> openmm.System:
    """A copy of ``system`` without CMMotionRemover, which BAOAB Langevin does not apply."""
    kept = openmm.XmlSerializer.clone(system)
    for index in reversed(range(kept.getNumForces())):
        if isinstance(kept.getForce(index), openmm.CMMotionRemover):
            kept.removeForce(index)
    return kept


class OpenMMLangevinEngine(Integrator):
    """Same interface and chain as a :class:`LangevinBAOAB`, integrated by OpenMM.

    One OpenMM Context per walker, each seeded from the Langevin integrator's generator.
    """

    def __init__(self, langevin: LangevinBAOAB):
        if not can_use_openmm_engine(langevin):
            raise ValueError(
                "the OpenMM engine needs a LangevinBAOAB with splitting 'BAOAB', no "
                "centre-of-mass removal and an OpenMMPotential"
            )
        super().__init__(langevin.potential, langevin.masses, langevin.timestep)
        self.langevin = langevin
        self._contexts: list[openmm.Context] = []
        self._synced: State | None = None
        self._half_kick_scale = (0.5 * self.timestep / self.masses.numpy())[:, None]
        self._openmm_system = _without_center_of_mass_remover(langevin.potential.openmm_system)

    @property
    def temperature(self) -> float:
        return self.langevin.temperature

    def degrees_of_freedom(self, n_atoms: int) -> int:
        return self.langevin.degrees_of_freedom(n_atoms)

    def settings(self) -> dict[str, float | str]:
        return {**self.langevin.settings(), "engine": "openmm"}

    def _ensure_contexts(self, n_walkers: int) -> None:
        if len(self._contexts) == n_walkers:
            return
        if self._contexts:
            raise ValueError(f"this engine runs {len(self._contexts)} walkers, the state has {n_walkers}")
        platform = openmm.Platform.getPlatformByName(self.potential.platform)
        seeds = torch.randint(1, 2**31 - 1, (n_walkers,), generator=self.langevin.generator).tolist()
        for seed in seeds:
            integrator = openmm.LangevinMiddleIntegrator(
                self.langevin.temperature, self.langevin.friction, self.timestep
            )
            integrator.setRandomNumberSeed(int(seed))
            self._contexts.append(openmm.Context(self.potential.openmm_system, integrator, platform))

    def _push(self, state: State) -> None:
        """Load positions and leapfrog velocities u = v − (Δt/2)F/m into the contexts."""
        positions = state.positions.detach().to("cpu", torch.float64).numpy()
        velocities = state.velocities.detach().to("cpu", torch.float64).numpy()
        box = None if state.cell is None else state.cell.detach().to("cpu", torch.float64).numpy()
        for walker, context in enumerate(self._contexts):
            if box is not None:
                context.setPeriodicBoxVectors(*box)
            context.setPositions(positions[walker])
            forces = context.getState(getForces=True).getForces(asNumpy=True)._value
            context.setVelocities(velocities[walker] - self._half_kick_scale * forces)

    def _step(self, state: State, n_steps: int) -> State:
        self._ensure_contexts(state.n_walkers)
        if state is not self._synced:
            self._push(state)
        positions, velocities = np.empty((2, state.n_walkers, state.n_atoms, 3))
        forces = np.empty_like(positions)
        energies = np.empty(state.n_walkers)
        for walker, context in enumerate(self._contexts):
            try:
                context.getIntegrator().step(n_steps)
            except openmm.OpenMMException as error:  # OpenMM stops on NaN coordinates
                raise ArithmeticError(f"OpenMM failed on walker {walker}: {error}") from error
            snapshot = context.getState(getPositions=True, getVelocities=True, getForces=True, getEnergy=True)
            positions[walker] = snapshot.getPositions(asNumpy=True)._value
            forces[walker] = snapshot.getForces(asNumpy=True)._value
            velocities[walker] = (
                snapshot.getVelocities(asNumpy=True)._value + self._half_kick_scale * forces[walker]
            )
            energies[walker] = snapshot.getPotentialEnergy()._value
        like = state.positions
        new_state = state.replace(
            positions=torch.from_numpy(positions).to(like),
            velocities=torch.from_numpy(velocities).to(like),
            step=state.step + n_steps,
            time=state.time + n_steps * self.timestep,
            potential_energy=torch.from_numpy(energies).to(like),
            forces=torch.from_numpy(forces).to(like),
        )
        self._synced = new_state
        return new_state

    def checkpoint_data(self) -> dict[str, torch.Tensor]:
        return {
            f"openmm_context_{walker}": torch.frombuffer(
                bytearray(context.createCheckpoint()), dtype=torch.uint8
            )
            for walker, context in enumerate(self._contexts)
        }

    def restore_checkpoint_data(self, data: dict[str, torch.Tensor], state: State) -> None:
        self._ensure_contexts(state.n_walkers)
        for walker, context in enumerate(self._contexts):
            key = f"openmm_context_{walker}"
            if key not in data:
                raise ValueError(f"checkpoint lacks {key}: it was not written by the OpenMM engine")
            context.loadCheckpoint(data[key].numpy().tobytes())
        self._synced = state
