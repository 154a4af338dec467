"""Velocity Verlet: the microcanonical (NVE) integrator."""

from __future__ import annotations

from molsamp.integrators.base import Integrator
from molsamp.system import State


class VelocityVerlet(Integrator):
    """Symplectic, time-reversible NVE integration (Swope et al., J. Chem. Phys. 1982).

    Parameters
    ----------
    potential : molsamp Potential;  masses : (N,) amu;  timestep : ps
    """

    def degrees_of_freedom(self, n_atoms: int) -> int:
        """3N − 3: total momentum is conserved (start from zero centre-of-mass velocity)."""
        return 3 * n_atoms - 3

    def _step(self, state: State, n_steps: int) -> State:
        dt = self.timestep
        inverse_mass = 1.0 / self._masses_like(state.positions)[:, None]
        x, v = state.positions, state.velocities
        energy, forces = self._energy_and_forces(state)
        for _ in range(n_steps):
            v = v + 0.5 * dt * forces * inverse_mass
            x = x + dt * v
            energy, forces = self.potential.energy_and_forces(x, state.cell)
            v = v + 0.5 * dt * forces * inverse_mass
        return state.replace(
            positions=x,
            velocities=v,
            step=state.step + n_steps,
            time=state.time + n_steps * dt,
            potential_energy=energy,
            forces=forces,
        )
