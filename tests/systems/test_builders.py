import numpy as np
import pytest
import torch

from molsamp.integrators import kinetic_energy
from molsamp.systems import (
    alanine_dipeptide,
    double_well,
    from_pdb,
    harmonic_oscillator,
    lennard_jones_fluid,
    shipped_pdb,
)
from molsamp.units import kT


def test_alanine_dipeptide_has_22_atoms_no_constraints_and_l_chirality(alanine):
    import mdtraj

    system, state, potential = alanine
    assert system.n_atoms == 22 and state.positions.shape == (1, 22, 3)
    assert potential.openmm_system.getNumConstraints() == 0
    frame = mdtraj.Trajectory(state.positions[0].numpy(), system.topology)
    ca, n, c, cb = (
        system.topology.select(f"resname ALA and name {name}")[0] for name in ("CA", "N", "C", "CB")
    )
    improper = mdtraj.compute_dihedrals(frame, [[ca, n, c, cb]])[0, 0]
    assert 0.3 < improper < 0.8  # ζ(Cα-N-C'-Cβ) ≈ +34° for L-amino acids


def test_implicit_solvent_adds_generalized_born_energy(alanine):
    _, state, vacuum = alanine
    _, _, implicit = alanine_dipeptide("implicit")
    difference = (implicit.energy(state.positions) - vacuum.energy(state.positions)).item()
    assert -200.0 < difference < -20.0  # solvation of a polar dipeptide is favourable
    with pytest.raises(ValueError, match="solvent must be one of"):
        alanine_dipeptide("water")


def test_starting_velocities_are_seeded_maxwell_boltzmann():
    system, a, _ = alanine_dipeptide(n_walkers=200, seed=3, temperature=300.0)
    _, b, _ = alanine_dipeptide(n_walkers=200, seed=3, temperature=300.0)
    assert torch.equal(a.velocities, b.velocities)
    mean_kinetic = kinetic_energy(a.velocities, system.masses).mean().item()
    assert mean_kinetic == pytest.approx(1.5 * 22 * kT(300.0), rel=0.03)  # 200·66 dof: σ ≈ 1.2 %


def test_from_pdb_rejects_unknown_force_field_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"unknown force field \['amber_nonsense.xml'\].*amber99sbildn.xml"):
        from_pdb(shipped_pdb("alanine_dipeptide"), ["amber_nonsense.xml"])
    with pytest.raises(FileNotFoundError, match="PDB file not found"):
        from_pdb(tmp_path / "missing.pdb")


def test_lennard_jones_fluid_density_and_momentum():
    system, state, potential = lennard_jones_fluid(n_cells=3, reduced_density=0.8)
    assert system.n_atoms == 108
    volume = torch.linalg.det(system.cell).item()
    assert 108 / volume * potential.sigma**3 == pytest.approx(0.8, rel=1e-12)
    momentum = (system.masses[:, None] * state.velocities[0]).sum(0)
    assert momentum.abs().max().item() < 1e-10
    with pytest.raises(ValueError, match="exceeds half the box"):
        lennard_jones_fluid(n_cells=1)


def test_harmonic_oscillator_shapes_follow_walkers_and_dtype():
    _, state, potential = harmonic_oscillator(n_atoms=3, n_walkers=5, dtype=torch.float32)
    assert state.positions.shape == (5, 3, 3) and state.velocities.dtype == torch.float32
    assert potential.energy(state.positions).shape == (5,)


@pytest.mark.parametrize(
    "builder", [harmonic_oscillator, double_well, lennard_jones_fluid, alanine_dipeptide]
)
@pytest.mark.parametrize("n_walkers", [0, -2, 2.0])
def test_builders_reject_a_walker_count_that_is_not_a_positive_whole_number(builder, n_walkers):
    with pytest.raises(
        ValueError, match=r"n_walkers must be a whole number >= 1 \(on the command line: --walkers\)"
    ):
        builder(n_walkers=n_walkers)


def test_builders_take_numpy_walker_counts():
    _, state, _ = harmonic_oscillator(n_walkers=np.int64(2))
    assert state.positions.shape[0] == 2
