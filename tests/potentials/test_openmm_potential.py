import pytest
import torch

from molsamp.potentials import OpenMMPotential
from molsamp.testing import assert_forces_match_finite_differences


def test_openmm_forces_are_minus_gradient_of_energy(alanine):
    _, state, potential = alanine
    generator = torch.Generator().manual_seed(7)
    x = state.positions.repeat(2, 1, 1) + 0.003 * torch.randn(
        2, 22, 3, generator=generator, dtype=torch.float64
    )
    assert_forces_match_finite_differences(potential, x, delta=1e-6, rtol=1e-4, atol=1e-3)


def test_openmm_energy_backpropagates_forces(alanine):
    _, state, potential = alanine
    x = state.positions.clone().requires_grad_(True)
    energy = potential.energy(x)
    (3.0 * energy).sum().backward()
    _, forces = potential.energy_and_forces(state.positions)
    torch.testing.assert_close(x.grad, -3.0 * forces)


def test_openmm_energy_of_minimised_structure_and_batches(alanine):
    _, state, potential = alanine
    energy = potential.energy(state.positions)
    assert energy.item() == pytest.approx(-90.93, abs=0.05)  # the shipped PDB is minimised in vacuum
    batch = torch.cat([state.positions, state.positions + 0.5])  # rigid shift: same energy
    torch.testing.assert_close(potential.energy(batch), energy.repeat(2))
    assert potential.energy(state.positions.float()).dtype == torch.float32


def test_openmm_potential_rejects_bad_input(alanine):
    _, _, potential = alanine
    with pytest.raises(TypeError, match="openmm_system must be an openmm.System"):
        OpenMMPotential("amber.xml")
    with pytest.raises(ValueError, match="platform must be one of"):
        OpenMMPotential(potential.openmm_system, platform="Metal")
    with pytest.raises(ValueError, match="built for 22"):
        potential.energy(torch.zeros(1, 21, 3, dtype=torch.float64))
