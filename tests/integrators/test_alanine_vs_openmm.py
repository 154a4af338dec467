"""molsamp's Langevin on the Amber force field samples what OpenMM's own Langevin samples."""

import numpy as np
import openmm
import pytest
import torch

from molsamp.integrators import LangevinBAOAB, kinetic_energy, kinetic_temperature
from molsamp.systems import alanine_dipeptide
from molsamp.testing import mean_and_standard_error

TIMESTEP, FRICTION, TEMPERATURE = 0.001, 5.0, 300.0
N_SAMPLES, STRIDE, BURN_IN = 2500, 20, 2000


def _molsamp_samples():
    system, state, potential = alanine_dipeptide(seed=21)
    langevin = LangevinBAOAB(
        potential, system.masses, TIMESTEP, TEMPERATURE, FRICTION, torch.Generator().manual_seed(5)
    )
    state = langevin.step(state, BURN_IN)  # the torch loop calling OpenMM only for forces
    energies, temperatures = [], []
    for _ in range(N_SAMPLES):
        state = langevin.step(state, STRIDE)
        energies.append(state.potential_energy.item())
        kinetic = kinetic_energy(state.velocities, system.masses)
        temperatures.append(kinetic_temperature(kinetic, langevin.degrees_of_freedom(22)).item())
    return np.array(energies), np.array(temperatures)


def _openmm_samples():
    system, state, potential = alanine_dipeptide(seed=22)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, TIMESTEP)
    integrator.setRandomNumberSeed(17)
    context = openmm.Context(
        potential.openmm_system, integrator, openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(state.positions[0].numpy())
    context.setVelocities(state.velocities[0].numpy())
    integrator.step(BURN_IN)
    energies, temperatures = [], []
    for _ in range(N_SAMPLES):
        integrator.step(STRIDE)
        snapshot = context.getState(getEnergy=True)
        energies.append(snapshot.getPotentialEnergy()._value)
        kinetic = torch.tensor(snapshot.getKineticEnergy()._value)
        temperatures.append(kinetic_temperature(kinetic, 3 * 22).item())
    return np.array(energies), np.array(temperatures)


@pytest.mark.slow
def test_mean_potential_energy_and_temperature_match_openmm():
    ours, theirs = _molsamp_samples(), _openmm_samples()
    for label, a, b in [("potential energy", ours[0], theirs[0]), ("temperature", ours[1], theirs[1])]:
        (mean_a, error_a), (mean_b, error_b) = mean_and_standard_error(a), mean_and_standard_error(b)
        combined = np.hypot(error_a, error_b)
        assert abs(mean_a - mean_b) < 4 * combined, (
            f"{label}: {mean_a:.3f}±{error_a:.3f} vs {mean_b:.3f}±{error_b:.3f}"
        )
        assert combined < (2.0 if label == "potential energy" else 6.5), (
            f"{label} error bar {combined} too wide to test"
        )
    # equipartition: ⟨E_pot⟩ of a 66-dof molecule sits well above the minimum (−90.9 kJ/mol)
    assert ours[0].mean() > -90.9 + 20
