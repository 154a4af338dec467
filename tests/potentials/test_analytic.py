import math

import numpy as np
import openmm
import pytest
import torch

from molsamp.potentials import DoubleWell, HarmonicPotential, LennardJones
from molsamp.systems import lennard_jones_fluid
from molsamp.testing import assert_forces_match_finite_differences

GENERATOR = torch.Generator().manual_seed(1234)


def _random_positions(walkers, atoms, scale=0.3):
    return scale * torch.randn(walkers, atoms, 3, generator=GENERATOR, dtype=torch.float64)


def test_harmonic_energy_and_forces():
    potential = HarmonicPotential(torch.tensor([100.0, 250.0]), center=torch.ones(2, 3))
    x = _random_positions(3, 2)
    expected = 0.5 * (torch.tensor([100.0, 250.0])[:, None] * (x - 1).square()).sum((-2, -1))
    torch.testing.assert_close(potential.energy(x), expected)
    assert_forces_match_finite_differences(potential, x)


def test_double_well_minima_barrier_and_forces():
    potential = DoubleWell(barrier=7.0, minimum=0.2, transverse_spring_constant=500.0)
    wells = torch.tensor([[[0.2, 0.0, 0.0]], [[-0.2, 0.0, 0.0]], [[0.0, 0.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(potential.energy(wells), torch.tensor([0.0, 0.0, 7.0], dtype=torch.float64))
    assert_forces_match_finite_differences(potential, _random_positions(2, 3, 0.2))


def test_lennard_jones_pair_minimum_and_cutoff_shift():
    sigma, epsilon, cutoff = 0.34, 1.0, 0.85
    potential = LennardJones(epsilon, sigma, cutoff)
    r_min = 2 ** (1 / 6) * sigma
    pair = torch.tensor([[[0, 0, 0], [r_min, 0, 0]]], dtype=torch.float64)
    shift = 4 * epsilon * ((sigma / cutoff) ** 12 - (sigma / cutoff) ** 6)
    assert potential.energy(pair).item() == pytest.approx(-epsilon - shift, rel=1e-12)
    beyond = torch.tensor([[[0, 0, 0], [cutoff * 1.01, 0, 0]]], dtype=torch.float64)
    assert potential.energy(beyond).item() == 0.0
    _, forces = potential.energy_and_forces(pair)
    assert forces.abs().max().item() < 1e-10  # force vanishes at the minimum


def test_lennard_jones_forces_periodic_and_free():
    _, state, potential = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.7)
    x = state.positions + 0.01 * torch.randn(state.positions.shape, generator=GENERATOR, dtype=torch.float64)
    assert_forces_match_finite_differences(potential, x, state.cell, atol=1e-4)
    cluster = LennardJones(1.0, 0.34)
    assert_forces_match_finite_differences(
        cluster,
        0.5 * torch.rand(2, 5, 3, generator=GENERATOR, dtype=torch.float64)
        + torch.arange(5.0, dtype=torch.float64)[:, None] * 0.35,
    )


def test_lennard_jones_periodic_invariances():
    _, state, potential = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.7)
    x = state.positions + 0.02 * torch.randn(state.positions.shape, generator=GENERATOR, dtype=torch.float64)
    energy = potential.energy(x, state.cell)
    box = state.cell.diagonal()
    shifted_image = x.clone()
    shifted_image[:, 3] += box  # one atom moved by a lattice vector
    torch.testing.assert_close(potential.energy(shifted_image, state.cell), energy)
    permuted = x[:, torch.randperm(x.shape[1], generator=GENERATOR)]
    torch.testing.assert_close(potential.energy(permuted, state.cell), energy)
    torch.testing.assert_close(potential.energy(x + 0.123, state.cell), energy)


def test_lennard_jones_matches_openmm_custom_nonbonded():
    """Same fluid, same truncated-and-shifted LJ: molsamp and OpenMM agree to 1e-9 relative."""
    _, state, potential = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.7)
    x = state.positions + 0.03 * torch.randn(state.positions.shape, generator=GENERATOR, dtype=torch.float64)
    force = openmm.CustomNonbondedForce(
        f"4*{potential.epsilon}*((s/r)^12-(s/r)^6) - {potential.shift}; s={potential.sigma}"
    )
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(potential.cutoff)
    system = openmm.System()
    for _ in range(x.shape[1]):
        system.addParticle(39.948)
        force.addParticle([])
    system.addForce(force)
    box = state.cell.numpy()
    system.setDefaultPeriodicBoxVectors(*box)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(x[0].numpy())
    reference = context.getState(getEnergy=True, getForces=True)
    energy, forces = potential.energy_and_forces(x, state.cell)
    assert energy.item() == pytest.approx(reference.getPotentialEnergy()._value, rel=1e-9)
    np.testing.assert_allclose(
        forces[0].numpy(), reference.getForces(asNumpy=True)._value, rtol=1e-7, atol=1e-7
    )


def test_lennard_jones_rejects_cutoff_beyond_half_the_cell_width():
    potential = LennardJones(1.0, 0.34, cutoff=1.0, periodic=True)
    x = torch.zeros(1, 2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="exceeds half the smallest cell width"):
        potential.energy(x, torch.eye(3, dtype=torch.float64) * 1.5)
    skewed = torch.tensor([[3.0, 0, 0], [2.5, 1.5, 0], [0, 0, 3.0]], dtype=torch.float64)  # width 1.5 nm
    with pytest.raises(ValueError, match="exceeds half the smallest cell width 0.75 nm"):
        potential.energy(x, skewed)
    with pytest.raises(ValueError, match="is periodic: pass cell"):
        potential.energy(x)


def test_lennard_jones_triclinic_cell_equals_its_orthorhombic_equivalent():
    """A sheared description of the same lattice (b' = b + a) gives the same energy and forces."""
    _, state, potential = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.2)  # fits the sheared cell
    x = state.positions + 0.02 * torch.randn(state.positions.shape, generator=GENERATOR, dtype=torch.float64)
    sheared = state.cell.clone()
    sheared[1] += sheared[0]
    reference = potential.energy_and_forces(x, state.cell)
    torch.testing.assert_close(potential.energy_and_forces(x, sheared), reference)
    assert_forces_match_finite_differences(potential, x, sheared, atol=1e-4)


def test_potentials_reject_bad_shapes_and_parameters():
    with pytest.raises(ValueError, match=r"positions must be a \(B, N, 3\) tensor"):
        HarmonicPotential(1.0).energy(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="built for 2"):
        HarmonicPotential(1.0, center=torch.zeros(2, 3)).energy(torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="spring_constant must be > 0"):
        HarmonicPotential(-1.0)
    with pytest.raises(ValueError, match="barrier must be > 0"):
        DoubleWell(barrier=0.0)
    with pytest.raises(ValueError, match="needs a cutoff"):
        LennardJones(1.0, 0.3, periodic=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_potentials_follow_the_callers_dtype(dtype):
    x = _random_positions(2, 4).to(dtype)
    for potential in (HarmonicPotential(3.0), DoubleWell(), LennardJones(1.0, 0.34)):
        energy, forces = potential.energy_and_forces(x + torch.arange(4, dtype=dtype)[:, None] * 0.4)
        assert energy.dtype == dtype and forces.dtype == dtype
        assert torch.isfinite(energy).all() and not math.isnan(forces.sum().item())
