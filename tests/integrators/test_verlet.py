import numpy as np
import torch

from molsamp import State
from molsamp.integrators import VelocityVerlet, kinetic_energy, maxwell_boltzmann_velocities
from molsamp.potentials import LennardJones
from molsamp.systems import lennard_jones_fluid


def _total_energy_series(timestep: float, n_records: int = 100, stride: int = 10) -> np.ndarray:
    system, state, potential = lennard_jones_fluid(n_cells=3, temperature=100.0, seed=2)
    verlet = VelocityVerlet(potential, system.masses, timestep)
    state = verlet.step(state, 100)
    energies = []
    for _ in range(n_records):
        state = verlet.step(state, stride)
        energies.append((state.potential_energy + kinetic_energy(state.velocities, system.masses)).item())
    return np.array(energies), kinetic_energy(state.velocities, system.masses).item()


def test_velocity_verlet_conserves_energy_of_lj_fluid():
    """108 argon atoms, 1000 steps of 4 fs: total energy stays within 2e-4 of the kinetic energy."""
    energies, kinetic = _total_energy_series(0.004)
    assert np.abs(energies - energies[0]).max() < 2e-4 * kinetic
    slope_per_1000_steps = np.polyfit(np.arange(len(energies)) * 10, energies, 1)[0] * 1000
    assert abs(slope_per_1000_steps) < 1e-4 * kinetic


def test_velocity_verlet_energy_error_is_second_order():
    """Halving the step quarters the energy fluctuation (a symplectic second-order method).

    Uses a smooth potential (argon cluster, no cutoff): a truncated force adds errors that do
    not scale with the step.
    """
    generator = torch.Generator().manual_seed(4)
    lattice = torch.stack(torch.meshgrid(*[torch.arange(2.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (0.38 * lattice.to(torch.float64))[None]
    masses = torch.full((8,), 39.948, dtype=torch.float64)
    state = State(
        positions, maxwell_boltzmann_velocities(masses, 15.0, 1, generator, remove_center_of_mass=True)
    )
    potential = LennardJones(0.996, 0.3405)
    spreads = []
    for timestep, stride in [(0.008, 5), (0.004, 10)]:
        verlet, current, energies = VelocityVerlet(potential, masses, timestep), state, []
        for _ in range(200):
            current = verlet.step(current, stride)
            energies.append((current.potential_energy + kinetic_energy(current.velocities, masses)).item())
        spreads.append(np.std(energies))
    assert 3.5 < spreads[0] / spreads[1] < 4.5, spreads


def test_velocity_verlet_conserves_momentum():
    system, state, potential = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.7, temperature=100.0)
    final = VelocityVerlet(potential, system.masses, 0.004).step(state, 200)
    momentum = (system.masses[:, None] * final.velocities[0]).sum(0)
    assert torch.allclose(momentum, torch.zeros(3, dtype=torch.float64), atol=1e-10)
