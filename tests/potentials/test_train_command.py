"""``molsamp train`` end to end on a tiny extxyz file."""

from __future__ import annotations

import json

import ase
import ase.io
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from molsamp.cli import main
from molsamp.potentials import TensorNet, load_potential


def test_train_command_writes_a_loadable_model(tmp_path):
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(6):
        atoms = ase.Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
        atoms.positions += 0.05 * rng.normal(size=(3, 3))
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(3, 3)))
        frames.append(atoms)
    ase.io.write(tmp_path / "water.extxyz", frames, format="extxyz")
    output = tmp_path / "model.pt"
    code = main([
        "train", "--data", str(tmp_path / "water.extxyz"), "--model", "tensornet",
        "--channels", "4", "--epochs", "2", "--batch-size", "2", "--val-fraction", "0.34",
        "--output", str(output), "--quiet",
    ])  # fmt: skip
    assert code == 0
    model = load_potential(output)
    assert isinstance(model, TensorNet) and model.supported_atomic_numbers == [1, 8]
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["epochs"] == 2 and [row["epoch"] for row in report["history"]] == [1, 2]
    assert (tmp_path / "model_training.png").read_bytes()[:4] == b"\x89PNG"  # learning curves


def test_train_command_reports_bad_input(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "missing.extxyz"), "--quiet"])
    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_save_data_writes_the_amber_labels_in_ev_and_angstrom(tmp_path, capsys):
    """--save-data writes the labelled MD frames; ASE reads them back, and the forces are
    Amber's at those positions (converted to eV/Å), so another code can train on them."""
    from molsamp.systems import alanine_dipeptide
    from molsamp.units import ev_per_angstrom_from_kj_per_mol_nm, nm_from_angstrom

    data_path = tmp_path / "alanine.extxyz"
    code = main([
        "train", "--alanine-frames", "10", "--save-data", str(data_path), "--model", "tensornet",
        "--channels", "4", "--epochs", "1", "--output", str(tmp_path / "model.pt"), "--quiet",
    ])  # fmt: skip
    assert code == 0 and f"10 structures written to {data_path}" in capsys.readouterr().out
    frames = ase.io.read(data_path, index=":")
    assert len(frames) == 10 and all(len(atoms) == 22 and not atoms.pbc.any() for atoms in frames)
    _, _, amber = alanine_dipeptide()
    positions = torch.tensor(nm_from_angstrom(np.stack([atoms.positions for atoms in frames])))
    energy, forces = amber.energy_and_forces(positions)
    expected = ev_per_angstrom_from_kj_per_mol_nm(forces.numpy())
    np.testing.assert_allclose(np.stack([atoms.get_forces() for atoms in frames]), expected, atol=2e-5)
