"""MolsampCalculator: the same physics as molsamp, in ASE's units, through ASE's own tools."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.cluster import Icosahedron
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from molsamp import System
from molsamp.interop.ase import MolsampCalculator
from molsamp.potentials import LennardJones, OpenMMPotential
from molsamp.systems import alanine_dipeptide, lennard_jones_fluid
from molsamp.systems.toy import ARGON_EPSILON, ARGON_SIGMA
from molsamp.testing import effective_sample_size, mean_and_standard_error
from molsamp.units import ev_from_kj_per_mol

EV_PER_KJ_PER_MOL = units.kJ / units.mol  # ASE's own constants, independent of molsamp.units
LJ13_MINIMUM_ENERGY = -44.326801  # ε, global minimum of the 13-atom LJ cluster (icosahedron)


class ArgonEnsemble(LennardJones):
    """A stand-in for an ensemble: knows argon only, reports a force uncertainty."""

    supported_atomic_numbers = (18,)

    def force_uncertainty(self, positions, cell):
        """(B, N) kJ/mol/nm: a tenth of each atom's force magnitude."""
        return 0.1 * self.energy_and_forces(positions, cell)[1].norm(dim=-1)


def lj_fluid_atoms(potential_type=LennardJones, displacement_nm: float = 0.02, seed: int = 0):
    """32 argon atoms in a periodic box (1.6σ cutoff), displaced off the lattice."""
    system, state, reference = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.6, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    positions = state.positions[0] + displacement_nm * torch.randn(
        state.positions[0].shape, generator=generator, dtype=torch.float64
    )
    potential = potential_type(ARGON_EPSILON, ARGON_SIGMA, reference.cutoff, periodic=True)
    return system, positions, potential


def lj13_cluster(seed: int, displacement_angstrom: float = 0.0) -> Atoms:
    """The 13-atom argon icosahedron at the LJ pair distance 2^(1/6)σ, optionally shaken."""
    nearest = 2 ** (1 / 6) * ARGON_SIGMA * 10.0
    atoms = Icosahedron("Ar", noshells=2, latticeconstant=nearest * np.sqrt(2))
    atoms.center()
    atoms.pbc = False
    rng = np.random.default_rng(seed)
    atoms.positions += displacement_angstrom * rng.standard_normal(atoms.positions.shape)
    return atoms


def cluster_calculator() -> MolsampCalculator:
    return MolsampCalculator(LennardJones(ARGON_EPSILON, ARGON_SIGMA))


# --- the same numbers as molsamp -------------------------------------------------------------


def test_energy_forces_equal_molsamp_periodic_lj():
    system, positions, potential = lj_fluid_atoms()
    atoms = system.to_ase(positions)
    atoms.calc = MolsampCalculator(potential)
    energy, forces = potential.energy_and_forces(positions[None], system.cell)
    assert atoms.get_potential_energy() == pytest.approx(energy.item() * EV_PER_KJ_PER_MOL, rel=1e-7)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(
        atoms.get_forces(), forces[0].numpy() * EV_PER_KJ_PER_MOL / 10.0, rtol=1e-7, atol=1e-12
    )
    assert abs(atoms.get_potential_energy()) > 0.1  # not a vacuous comparison of zeros


def test_energy_forces_equal_molsamp_alanine_dipeptide():
    system, state, potential = alanine_dipeptide()
    atoms = system.to_ase(state.positions[0])
    atoms.calc = MolsampCalculator(potential)
    energy, forces = potential.energy_and_forces(state.positions, None)
    assert atoms.get_potential_energy() == pytest.approx(energy.item() * EV_PER_KJ_PER_MOL, rel=1e-7)
    np.testing.assert_allclose(
        atoms.get_forces(), forces[0].numpy() * EV_PER_KJ_PER_MOL / 10.0, rtol=1e-7, atol=1e-10
    )
    with pytest.raises(PropertyNotImplementedError, match="periodic cell"):
        atoms.get_stress()


def test_forces_match_finite_differences():
    system, positions, potential = lj_fluid_atoms()
    atoms = system.to_ase(positions)
    atoms.calc = MolsampCalculator(potential)
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), numerical, atol=1e-7)

    cluster = lj13_cluster(seed=1, displacement_angstrom=0.2)
    cluster.calc = cluster_calculator()
    numerical = calculate_numerical_forces(cluster, eps=1e-5)
    np.testing.assert_allclose(cluster.get_forces(), numerical, atol=1e-7)
    assert np.abs(numerical).max() > 0.01


def test_stress_matches_finite_differences_all_components():
    system, positions, potential = lj_fluid_atoms()
    atoms = system.to_ase(positions)
    atoms.calc = MolsampCalculator(potential)
    analytic = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-6)
    np.testing.assert_allclose(analytic, numerical, atol=1e-9)
    assert np.abs(numerical[3:]).max() > 1e-5  # the displaced fluid has shear stress


def test_lennard_jones_diagonal_stress_matches_finite_differences():
    system, positions, potential = lj_fluid_atoms()
    atoms = system.to_ase(positions)
    atoms.calc = MolsampCalculator(potential)
    stress = atoms.get_stress(voigt=False)
    cell, volume = atoms.cell.copy(), atoms.get_volume()
    eps = 1e-6
    for axis in range(3):
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[axis, axis] += sign * eps
            atoms.set_cell(cell @ strain, scale_atoms=True)
            energies.append(atoms.get_potential_energy())
            atoms.set_cell(cell, scale_atoms=True)
        numerical = (energies[0] - energies[1]) / (2 * eps * volume)
        assert stress[axis, axis] == pytest.approx(numerical, abs=1e-9)


def test_stress_refused_for_potential_not_differentiable_in_cell():
    """An OpenMM force field has no autograd path to the cell: stress must raise, not lie."""
    system, positions, _ = lj_fluid_atoms()
    omm = openmm.System()
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nonbonded.setCutoffDistance(0.5)
    for _ in range(system.n_atoms):
        omm.addParticle(system.masses[0].item())
        nonbonded.addParticle(0.0, ARGON_SIGMA, ARGON_EPSILON)
    omm.addForce(nonbonded)
    omm.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in system.cell.tolist()))
    atoms = system.to_ase(positions)
    atoms.calc = MolsampCalculator(OpenMMPotential(omm))
    assert np.isfinite(atoms.get_forces()).all()
    with pytest.raises(ValueError, match="not differentiable with respect to the cell"):
        atoms.get_stress()


# --- ASE's integrators and optimisers driven by molsamp -------------------------------------


def test_velocity_verlet_conserves_energy_on_lj_cluster():
    atoms = lj13_cluster(seed=2, displacement_angstrom=0.05)
    atoms.calc = cluster_calculator()
    masses = atoms.get_masses()[:, None]
    rng = np.random.default_rng(3)
    atoms.set_momenta(np.sqrt(masses * units.kB * 20.0) * rng.standard_normal((len(atoms), 3)))
    Stationary(atoms)
    ZeroRotation(atoms)
    dynamics = VelocityVerlet(atoms, timestep=10.0 * units.fs)
    total, kinetic = [], []

    def record():
        total.append(atoms.get_total_energy())
        kinetic.append(atoms.get_kinetic_energy())

    dynamics.attach(record, interval=1)
    dynamics.run(1500)
    total = np.array(total)
    scale = np.mean(kinetic)
    assert scale > 0.005  # the cluster really moves (13 atoms at ~20 K: ~0.03 eV)
    assert np.abs(total - total[0]).max() < 3e-3 * scale  # measured 8e-4
    slope = np.polyfit(np.arange(total.size), total, 1)[0]
    assert abs(slope) * total.size < 1e-3 * scale  # measured 1e-4


def test_langevin_reaches_target_temperature():
    system, positions, potential = lj_fluid_atoms(displacement_nm=0.0)
    atoms = system.to_ase(positions)  # on the lattice, at rest: T = 0 K
    atoms.calc = MolsampCalculator(potential)
    target = 120.0
    dynamics = Langevin(
        atoms,
        timestep=10.0 * units.fs,
        temperature_K=target,
        friction=0.01 / units.fs,
        fixcm=False,
        rng=np.random.default_rng(4),
    )
    temperatures = []
    dynamics.attach(lambda: temperatures.append(atoms.get_temperature()), interval=1)
    dynamics.run(3000)
    assert temperatures[0] < 0.2 * target
    kept = np.array(temperatures[500:])
    (mean, error), ess = mean_and_standard_error(kept), effective_sample_size(kept)
    assert ess > 50
    assert abs(mean - target) < 4 * error, (mean, error, ess)
    assert error < 0.03 * target  # tight enough to mean something


def test_bfgs_relaxes_lj13_to_the_icosahedral_minimum():
    atoms = lj13_cluster(seed=5, displacement_angstrom=0.15)
    atoms.calc = cluster_calculator()
    start = atoms.get_potential_energy()
    assert BFGS(atoms, logfile=None).run(fmax=1e-5, steps=1000)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 1e-5
    final = atoms.get_potential_energy()
    assert final < start
    expected = LJ13_MINIMUM_ENERGY * ARGON_EPSILON * EV_PER_KJ_PER_MOL
    assert final == pytest.approx(expected, rel=1e-7)


# --- hooks, conversions and bad input -------------------------------------------------------


def test_force_uncertainty_hook_in_ev_per_angstrom():
    system, positions, _ = lj_fluid_atoms()
    potential = ArgonEnsemble(ARGON_EPSILON, ARGON_SIGMA, 0.5, periodic=True)
    atoms = system.to_ase(positions)
    atoms.calc = MolsampCalculator(potential)
    forces = atoms.get_forces()
    sigma = atoms.calc.results["force_uncertainty"]
    assert sigma.shape == (len(atoms),)
    np.testing.assert_allclose(sigma, 0.1 * np.linalg.norm(forces, axis=1), rtol=1e-12)


def test_unknown_elements_are_listed():
    system, positions, _ = lj_fluid_atoms()
    atoms = system.to_ase(positions)
    atoms.numbers[[3, 7]] = 10
    atoms.numbers[5] = 36
    atoms.calc = MolsampCalculator(ArgonEnsemble(ARGON_EPSILON, ARGON_SIGMA, 0.5, periodic=True))
    with pytest.raises(ValueError, match=r"Ne \(Z=10\) at atoms \[3, 7\], Kr \(Z=36\) at atoms \[5\]"):
        atoms.get_potential_energy()


def test_periodic_potential_refuses_non_periodic_atoms():
    system, positions, potential = lj_fluid_atoms()
    atoms = system.to_ase(positions)
    atoms.pbc = False
    atoms.calc = MolsampCalculator(potential)
    with pytest.raises(ValueError, match=r"atoms.pbc is \[False, False, False\].*set atoms.pbc = True"):
        atoms.get_forces()
    atoms.pbc = [True, True, False]
    with pytest.raises(ValueError, match="periodic in all three directions"):
        atoms.get_forces()


def test_pbc_without_cell_is_refused():
    atoms = lj13_cluster(seed=6)
    atoms.cell = None
    atoms.pbc = True
    atoms.calc = MolsampCalculator(LennardJones(ARGON_EPSILON, ARGON_SIGMA, 0.8, periodic=True))
    with pytest.raises(ValueError, match="atoms.cell is not a full 3D cell"):
        atoms.get_potential_energy()


def test_non_periodic_potential_refuses_periodic_atoms():
    system, positions, _ = lj_fluid_atoms()
    atoms = system.to_ase(positions)
    atoms.calc = cluster_calculator()
    with pytest.raises(ValueError, match="is not periodic and would ignore the cell"):
        atoms.get_potential_energy()


def test_system_ase_round_trip():
    dipeptide, state, _ = alanine_dipeptide()
    for system, positions in [lj_fluid_atoms()[:2], (dipeptide, state.positions[0])]:
        atoms = system.to_ase(positions)
        np.testing.assert_allclose(atoms.positions, positions.numpy() * 10.0)
        back = System.from_ase(atoms)
        assert torch.equal(back.atomic_numbers, system.atomic_numbers)
        assert torch.equal(back.masses, system.masses)
        assert back.pbc == system.pbc
        if system.cell is None:
            assert back.cell is None
        else:
            torch.testing.assert_close(back.cell, system.cell)
    with pytest.raises(ValueError, match=r"state.positions\[0\]"):
        system.to_ase(torch.zeros(1, system.n_atoms, 3))


def test_graph_network_serves_periodic_and_isolated_atoms():
    """MACE accepts a cell or none: the calculator passes the box only for periodic Atoms."""
    from molsamp.potentials import MACE

    torch.manual_seed(0)
    model = MACE(
        [18],
        r_max=0.5,
        max_ell=1,
        correlation=2,
        hidden_irreps="4x0e+4x1o",
        radial_mlp=(8,),
        dtype=torch.float64,
    )
    system, positions, _ = lj_fluid_atoms()
    model.bind(system.atomic_numbers)
    for periodic in (True, False):
        atoms = system.to_ase(positions)
        atoms.pbc = periodic
        atoms.calc = MolsampCalculator(model)
        cell = system.cell if periodic else None
        expected = model.energy(positions[None], cell).item()
        assert atoms.get_potential_energy() == pytest.approx(ev_from_kj_per_mol(expected), rel=1e-10)
    assert model.energy(positions[None], system.cell).item() != pytest.approx(
        model.energy(positions[None]).item()
    )
