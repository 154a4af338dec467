"""The MD driver: exact resume, explosion guard, the OpenMM engine, settings checks."""

import pickle

import mdtraj
import numpy as np
import pytest
import torch

from molsamp.integrators import LangevinBAOAB, OpenMMLangevinEngine, SimulationExploded, simulate
from molsamp.io import CSVReporter, TrajectoryReporter, load_checkpoint
from molsamp.systems import alanine_dipeptide, lennard_jones_fluid


def _crash_at(monkeypatch, integrator_class, step):
    """Make ``integrator_class`` raise KeyboardInterrupt (Ctrl-C, a killed job) on reaching ``step``."""
    original = integrator_class._step

    def crashing(self, state, n_steps):
        if state.step == step:
            raise KeyboardInterrupt
        return original(self, state, n_steps)

    monkeypatch.setattr(integrator_class, "_step", crashing)


def _lj_run(out, n_steps=300, resume=False, suffix="dcd"):
    system, state, potential = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.7, seed=3)
    langevin = LangevinBAOAB(potential, system.masses, 0.004, 120.0, 2.0, torch.Generator().manual_seed(8))
    reporters = [
        CSVReporter(out / "energies.csv", 25),
        TrajectoryReporter(out / f"trajectory.{suffix}", 50, system.topology),
    ]
    final = simulate(
        langevin,
        state,
        n_steps,
        reporters=reporters,
        checkpoint=out / "checkpoint.pt",
        checkpoint_interval=100,
        resume=resume,
        progress=False,
    )
    return final, system


@pytest.mark.parametrize("suffix", ["dcd", "xtc", "h5"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, suffix, monkeypatch):
    reference, system = _lj_run(tmp_path / "straight", suffix=suffix)
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        _crash_at(patch, LangevinBAOAB, 250)  # rows and frames up to 250 are on disk, checkpoint at 200
        _lj_run(tmp_path / "crashed", suffix=suffix)
    assert load_checkpoint(tmp_path / "crashed" / "checkpoint.pt")["state"]["step"] == 200
    resumed, _ = _lj_run(tmp_path / "crashed", resume=True, suffix=suffix)
    assert resumed.step == 300
    assert torch.equal(resumed.positions, reference.positions)
    assert torch.equal(resumed.velocities, reference.velocities)
    straight_csv = (tmp_path / "straight" / "energies.csv").read_text()
    assert (tmp_path / "crashed" / "energies.csv").read_text() == straight_csv
    assert len(straight_csv.splitlines()) == 1 + 300 // 25
    frames = [
        mdtraj.load(str(tmp_path / run / f"trajectory.{suffix}"), top=system.topology)
        for run in ("straight", "crashed")
    ]
    assert frames[0].n_frames == frames[1].n_frames == 6
    np.testing.assert_array_equal(frames[0].xyz, frames[1].xyz)
    np.testing.assert_allclose(frames[0].xyz[-1], reference.positions[0].numpy(), atol=2e-3)  # xtc precision


def test_resume_with_the_openmm_engine_is_bit_identical(tmp_path, monkeypatch):
    def run(out, resume=False):
        system, state, potential = alanine_dipeptide(seed=4)
        langevin = LangevinBAOAB(
            potential, system.masses, 0.001, 300.0, 1.0, torch.Generator().manual_seed(2)
        )
        reporters = [TrajectoryReporter(out / "trajectory.dcd", 100, system.topology)]
        return simulate(
            langevin,
            state,
            1000,
            reporters=reporters,
            checkpoint=out / "checkpoint.pt",
            checkpoint_interval=400,
            resume=resume,
            progress=False,
        )

    reference = run(tmp_path / "a")
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        _crash_at(patch, OpenMMLangevinEngine, 700)
        run(tmp_path / "b")
    resumed = run(tmp_path / "b", resume=True)
    assert torch.equal(resumed.positions, reference.positions)
    assert torch.equal(resumed.velocities, reference.velocities)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["settings"]["engine"] == "openmm"


def test_openmm_engine_follows_the_same_baoab_chain_as_the_torch_loop():
    """Without friction both are velocity Verlet: same trajectory to round-off."""
    results = {}
    for engine in ("torch", "openmm"):
        system, state, potential = alanine_dipeptide(seed=6)
        langevin = LangevinBAOAB(potential, system.masses, 0.0005, 300.0, 0.0, 1)
        results[engine] = simulate(langevin, state, 400, engine=engine, progress=False)
    torch.testing.assert_close(results["openmm"].positions, results["torch"].positions, rtol=0, atol=1e-9)
    torch.testing.assert_close(results["openmm"].velocities, results["torch"].velocities, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        results["openmm"].potential_energy, results["torch"].potential_energy, rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("engine", ["torch", "openmm"])
def test_absurd_timestep_stops_with_error_and_keeps_a_readable_checkpoint(tmp_path, engine):
    system, state, potential = alanine_dipeptide(seed=1)
    langevin = LangevinBAOAB(potential, system.masses, 0.0045, 300.0, 1.0, 3)  # 4.5 fs, no constraints
    reporters = [TrajectoryReporter(tmp_path / "trajectory.dcd", 1, system.topology)]
    with pytest.raises(
        SimulationExploded, match=r"exploded at step \d+.*Reduce the timestep \(now 0.0045 ps\)"
    ) as error:
        simulate(
            langevin,
            state,
            5000,
            reporters=reporters,
            checkpoint=tmp_path / "checkpoint.pt",
            checkpoint_interval=2,
            guard_interval=1,
            engine=engine,
            progress=False,
        )
    assert error.value.step == error.value.last_good_step + 1 > 1
    saved = load_checkpoint(error.value.checkpoint)
    assert saved["state"]["step"] in (error.value.last_good_step, error.value.last_good_step - 1)
    assert torch.isfinite(saved["state"]["positions"]).all()
    frames = mdtraj.load(str(tmp_path / "trajectory.dcd"), top=system.topology)
    assert frames.n_frames == error.value.last_good_step  # every good frame kept, the bad one not
    assert np.isfinite(frames.xyz).all()


def test_resume_refuses_changed_settings_and_missing_outputs(tmp_path):
    _lj_run(tmp_path, n_steps=100)
    system, state, potential = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.7, seed=3)
    hotter = LangevinBAOAB(potential, system.masses, 0.004, 150.0, 2.0, 8)
    with pytest.raises(ValueError, match="was written with settings .* resume with the same settings"):
        simulate(
            hotter,
            state,
            200,
            checkpoint=tmp_path / "checkpoint.pt",
            resume=True,
            progress=False,
            reporters=[
                CSVReporter(tmp_path / "energies.csv", 25),
                TrajectoryReporter(tmp_path / "trajectory.dcd", 50, system.topology),
            ],
        )
    (tmp_path / "trajectory.dcd").unlink()
    same = LangevinBAOAB(potential, system.masses, 0.004, 120.0, 2.0, 8)
    with pytest.raises(
        FileNotFoundError, match="trajectory.dcd is missing but the checkpoint says it held 2 records"
    ):
        simulate(
            same,
            state,
            200,
            checkpoint=tmp_path / "checkpoint.pt",
            resume=True,
            progress=False,
            reporters=[
                CSVReporter(tmp_path / "energies.csv", 25),
                TrajectoryReporter(tmp_path / "trajectory.dcd", 50, system.topology),
            ],
        )


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state": object()}, handle)
    with pytest.raises(ValueError, match="not a readable molsamp checkpoint"):
        load_checkpoint(path)


def test_simulate_rejects_bad_arguments(tmp_path):
    system, state, potential = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.7)
    langevin = LangevinBAOAB(potential, system.masses, 0.004, 120.0, 2.0, 8)
    with pytest.raises(ValueError, match="n_steps must be a non-negative int"):
        simulate(langevin, state, -5)
    with pytest.raises(ValueError, match="checkpoint_interval is set but checkpoint"):
        simulate(langevin, state, 5, checkpoint_interval=10)
    with pytest.raises(ValueError, match="engine='openmm' needs"):
        simulate(langevin, state, 5, engine="openmm")
    with pytest.raises(ValueError, match="interval must be a positive number of steps"):
        CSVReporter(tmp_path / "e.csv", 0)
    with pytest.raises(ValueError, match="trajectory path must end in one of"):
        TrajectoryReporter(tmp_path / "t.pdb", 10, system.topology)


def test_guard_judges_energy_change_not_absolute_energy():
    """A model with a large constant energy offset (e.g. DFT reference energies) runs fine."""
    from molsamp.potentials import HarmonicPotential

    class Offset(HarmonicPotential):
        def _energy(self, positions, cell):
            return super()._energy(positions, cell) - 1.0e6

        def _energy_and_forces(self, positions, cell):
            energy, forces = super()._energy_and_forces(positions, cell)
            return energy - 1.0e6, forces

    system, state, _ = lennard_jones_fluid(n_cells=2, cutoff_sigma=1.7)
    potential = Offset(1000.0, center=state.positions[0])
    langevin = LangevinBAOAB(potential, system.masses, 0.004, 120.0, 2.0, 1)
    final = simulate(langevin, state, 200, guard_interval=50, progress=False)
    assert final.step == 200 and final.potential_energy.item() < -0.99e6
