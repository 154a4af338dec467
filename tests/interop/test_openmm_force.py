"""openmm_force: molsamp potentials inside OpenMM reproduce molsamp's physics."""

from __future__ import annotations

import importlib.util

import numpy as np
import openmm
import pytest
import torch
from openmm import app

from molsamp import System
from molsamp.integrators import LangevinBAOAB
from molsamp.interop.openmm import (
    load_openmm_xml,
    openmm_force,
    openmm_system_from,
    torch_force,
    torchscript_module,
)
from molsamp.potentials import HarmonicPotential, LennardJones, Potential
from molsamp.systems import alanine_dipeptide, double_well, lennard_jones_fluid
from molsamp.testing import effective_sample_size, mean_and_standard_error
from molsamp.units import kT

REFERENCE = openmm.Platform.getPlatformByName("Reference")


def energy_and_forces(context: openmm.Context, groups: set[int] | None = None):
    kwargs = {} if groups is None else {"groups": groups}
    state = context.getState(getEnergy=True, getForces=True, **kwargs)
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


def simulation(topology: app.Topology, omm_system: openmm.System, positions) -> app.Simulation:
    sim = app.Simulation(topology, omm_system, openmm.VerletIntegrator(0.001), REFERENCE)
    sim.context.setPositions(np.asarray(positions))
    return sim


# --- the same energies and forces -------------------------------------------------------------


def test_simulation_reproduces_amber_on_alanine_dipeptide():
    """The Amber force field wrapped as a molsamp potential gives Amber's numbers in OpenMM."""
    system, state, amber = alanine_dipeptide()
    topology = system.topology.to_openmm()
    reference = simulation(topology, openmm.XmlSerializer.clone(amber.openmm_system), state.positions[0])
    wrapped = simulation(topology, openmm_system_from(system, amber), state.positions[0])
    reference.context.setVelocitiesToTemperature(300.0, 1)
    for _ in range(3):
        reference.step(25)  # move off the starting structure
        positions = reference.context.getState(getPositions=True).getPositions(asNumpy=True)._value
        wrapped.context.setPositions(positions)
        expected_energy, expected_forces = energy_and_forces(reference.context)
        energy, forces = energy_and_forces(wrapped.context)
        assert energy == pytest.approx(expected_energy, rel=1e-10, abs=1e-8)
        np.testing.assert_allclose(forces, expected_forces, rtol=1e-9, atol=1e-7)
        own_energy, own_forces = amber.energy_and_forces(torch.from_numpy(positions)[None])
        assert energy == pytest.approx(own_energy.item(), rel=1e-10)
        np.testing.assert_allclose(forces, own_forces[0].numpy(), rtol=1e-9, atol=1e-7)
    assert np.abs(expected_forces).max() > 100.0


def test_simulation_reproduces_periodic_lj_box_and_follows_the_box():
    system, state, potential = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.6, seed=0)
    generator = torch.Generator().manual_seed(1)
    positions = state.positions[0] + 0.02 * torch.randn(
        state.positions[0].shape, generator=generator, dtype=torch.float64
    )
    omm_system = openmm_system_from(system, potential)
    assert omm_system.usesPeriodicBoundaryConditions()
    # atoms moved by whole box vectors: the same configuration for a periodic force
    images = torch.zeros_like(positions)
    images[::3] = torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64) @ system.cell
    sim = simulation(system.topology.to_openmm(), omm_system, positions + images)
    for scale in (1.0, 1.03):
        cell = system.cell * scale
        sim.context.setPeriodicBoxVectors(*cell.tolist())
        sim.context.setPositions((scale * (positions + images)).numpy())
        expected_energy, expected_forces = potential.energy_and_forces(scale * positions[None], cell)
        energy, forces = energy_and_forces(sim.context)
        assert energy == pytest.approx(expected_energy.item(), rel=1e-10)
        np.testing.assert_allclose(forces, expected_forces[0].numpy(), rtol=1e-9, atol=1e-9)
    assert np.abs(forces).max() > 1.0


def test_ml_mm_forces_only_on_chosen_atoms():
    """Amber for all atoms plus an "ML" potential that sees only the alanine residue."""
    system, state, amber = alanine_dipeptide()
    positions = state.positions[0]
    chosen = system.topology.select("resname ALA").tolist()
    others = sorted(set(range(system.n_atoms)) - set(chosen))
    shift = 0.01 * (1.0 + torch.arange(len(chosen) * 3, dtype=torch.float64).reshape(-1, 3))
    ml = HarmonicPotential(500.0, center=positions[chosen] + shift)
    mixed = openmm.XmlSerializer.clone(amber.openmm_system)
    force = openmm_force(ml, particles=chosen)
    force.setForceGroup(1)
    mixed.addForce(force)
    sim = simulation(system.topology.to_openmm(), mixed, positions)

    ml_energy, ml_forces = energy_and_forces(sim.context, groups={1})
    expected_energy, expected_forces = ml.energy_and_forces(positions[chosen][None])
    assert ml_energy == pytest.approx(expected_energy.item(), rel=1e-12)
    np.testing.assert_allclose(ml_forces[chosen], expected_forces[0].numpy(), rtol=1e-12)
    assert np.all(ml_forces[others] == 0.0)
    assert np.abs(ml_forces[chosen]).min() > 0.0

    total_energy, total_forces = energy_and_forces(sim.context)
    amber_energy, amber_forces = amber.energy_and_forces(positions[None])
    assert total_energy == pytest.approx(amber_energy.item() + ml_energy, rel=1e-10)
    np.testing.assert_allclose(total_forces[others], amber_forces[0, others].numpy(), rtol=1e-9, atol=1e-7)
    sim.context.setVelocitiesToTemperature(300.0, 2)
    sim.step(50)
    assert np.isfinite(energy_and_forces(sim.context)[0])


# --- the same equilibrium distribution --------------------------------------------------------


def double_well_mean_energy(potential, n_atoms: int, temperature: float) -> float:
    """Exact ⟨E⟩ in kJ/mol: quadrature along x, equipartition (kT) across."""
    x = np.linspace(-0.4, 0.4, 200_001)
    e = potential.barrier * ((x / potential.minimum) ** 2 - 1.0) ** 2
    weight = np.exp(-(e - e.min()) / kT(temperature))
    return n_atoms * (float((e * weight).sum() / weight.sum()) + kT(temperature))


def test_langevin_middle_samples_same_mean_energy_as_baoab():
    temperature, friction, timestep, n_atoms = 300.0, 10.0, 0.002, 4
    system, state, potential = double_well(n_atoms=n_atoms, n_walkers=8, seed=3)
    exact = double_well_mean_energy(potential, n_atoms, temperature)

    langevin = LangevinBAOAB(
        potential, system.masses, timestep, temperature, friction, torch.Generator().manual_seed(4)
    )
    state = langevin.step(state, 1000)
    energies = []
    for _ in range(2500):
        state = langevin.step(state, 4)
        energies.append(state.potential_energy.numpy())
    molsamp_mean, molsamp_error = mean_and_standard_error(np.array(energies))

    integrator = openmm.LangevinMiddleIntegrator(temperature, friction, timestep)
    integrator.setRandomNumberSeed(5)
    context = openmm.Context(openmm_system_from(system, potential), integrator, REFERENCE)
    context.setPositions(state.positions[0].numpy())
    context.setVelocitiesToTemperature(temperature, 6)
    integrator.step(1000)
    frames = []
    for _ in range(2000):
        integrator.step(10)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    openmm_energies = potential.energy(torch.from_numpy(np.array(frames))).numpy()
    (openmm_mean, openmm_error), openmm_ess = (
        mean_and_standard_error(openmm_energies),
        effective_sample_size(openmm_energies),
    )

    assert openmm_ess > 100  # measured 177 (τ ≈ 0.2 ps)
    assert abs(molsamp_mean - exact) < 4 * molsamp_error, (molsamp_mean, molsamp_error, exact)
    assert abs(openmm_mean - exact) < 4 * openmm_error, (openmm_mean, openmm_error, exact)
    both = np.hypot(molsamp_error, openmm_error)
    assert abs(openmm_mean - molsamp_mean) < 4 * both
    assert both < 0.05 * exact  # errors small enough for the comparison to mean something


# --- saving: no pickles ---------------------------------------------------------------------


TRIPPED: list[str] = []


def _trip() -> None:
    TRIPPED.append("unpickled")


class _Tripwire:
    """A force function whose unpickling records that code from the file ran."""

    def __call__(self, state):
        return 0.0, np.zeros((state.getPositions(asNumpy=True).shape[0], 3))

    def __reduce__(self):
        return _trip, ()


def test_force_refuses_to_be_saved_as_xml():
    system, _, potential = double_well(n_atoms=2)
    omm_system = openmm_system_from(system, potential)
    with pytest.raises(openmm.OpenMMException, match="could not be pickled"):
        openmm.XmlSerializer.serialize(omm_system)


def test_load_openmm_xml_refuses_python_force_without_running_it(tmp_path):
    omm_system = openmm.System()
    omm_system.addParticle(1.0)
    omm_system.addForce(openmm.PythonForce(_Tripwire()))
    path = tmp_path / "system.xml"
    path.write_text(openmm.XmlSerializer.serialize(omm_system))
    TRIPPED.clear()
    with pytest.raises(ValueError, match="PythonForce.*re-create them in Python"):
        load_openmm_xml(path)
    assert TRIPPED == []
    openmm.XmlSerializer.deserialize(path.read_text())  # what the loader protects from
    assert TRIPPED == ["unpickled"]


def test_load_openmm_xml_reads_plain_systems(tmp_path):
    _, state, amber = alanine_dipeptide()
    path = tmp_path / "amber.xml"
    path.write_text(openmm.XmlSerializer.serialize(amber.openmm_system))
    loaded = load_openmm_xml(path)
    assert isinstance(loaded, openmm.System)
    context = openmm.Context(loaded, openmm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(state.positions[0].numpy())
    energy = context.getState(getEnergy=True).getPotentialEnergy()._value
    assert energy == pytest.approx(amber.energy(state.positions).item(), rel=1e-12)


# --- TorchForce export ----------------------------------------------------------------------


class ScriptableHarmonic(Potential):
    """A potential whose ``forward`` and ``_energy`` compile with TorchScript."""

    def __init__(self, spring_constant: float):
        super().__init__()
        self.spring_constant = spring_constant

    def forward(self, positions: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        return self._energy(positions, cell)

    def _energy(self, positions: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
        return 0.5 * self.spring_constant * positions.square().sum((-2, -1))


def test_torchscript_module_picks_particles():
    potential = ScriptableHarmonic(3.0)
    module = torchscript_module(potential, particles=[4, 1])
    positions = torch.randn(6, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = potential.energy(positions[[4, 1]][None])[0]
    torch.testing.assert_close(module(positions), expected)
    assert module(positions) != potential.energy(positions[None])[0]


def test_torchscript_module_explains_unscriptable_potentials():
    with pytest.raises(TypeError, match="does not compile with torch.jit.script.*openmm_force"):
        torchscript_module(LennardJones(1.0, 0.3))


def test_torch_force_runs_in_openmm():
    pytest.importorskip("openmmtorch")
    system = System(torch.full((3,), 6), torch.full((3,), 12.0))
    omm_system = openmm_system_from(system, ScriptableHarmonic(3.0))
    omm_system.removeForce(0)
    omm_system.addForce(torch_force(ScriptableHarmonic(3.0)))
    context = openmm.Context(omm_system, openmm.VerletIntegrator(0.001))
    positions = np.arange(9.0).reshape(3, 3) / 10
    context.setPositions(positions)
    energy, forces = energy_and_forces(context)
    assert energy == pytest.approx(1.5 * (positions**2).sum(), rel=1e-5)
    np.testing.assert_allclose(forces, -3.0 * positions, rtol=1e-5)


def test_torch_force_without_openmmtorch_says_what_to_do():
    if importlib.util.find_spec("openmmtorch") is not None:
        pytest.skip("openmmtorch is installed")
    with pytest.raises(ImportError, match="openmm_force"):
        torch_force(ScriptableHarmonic(1.0))


# --- bad input ------------------------------------------------------------------------------


def test_bad_particles_and_boxes_are_refused():
    system, _, amber = alanine_dipeptide()
    with pytest.raises(ValueError, match="distinct atom indices"):
        openmm_force(HarmonicPotential(1.0), particles=[1, 1, 2])
    with pytest.raises(ValueError, match="particles has 2 atoms but HarmonicPotential was built for 3"):
        openmm_force(HarmonicPotential(1.0, center=torch.zeros(3, 3)), particles=[0, 1])
    with pytest.raises(ValueError, match=r"atom indices in \[0, 22\)"):
        openmm_system_from(system, HarmonicPotential(1.0), particles=[0, 22])
    with pytest.raises(ValueError, match="pass particles="):
        openmm_system_from(System(torch.full((3,), 6), torch.full((3,), 12.0)), amber)
    with pytest.raises(ValueError, match="no periodic cell"):
        openmm_system_from(system, LennardJones(1.0, 0.3, 0.8, periodic=True))
