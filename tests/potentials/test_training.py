"""Training lowers held-out force errors a lot; data enter in molsamp's units."""

from __future__ import annotations

import copy
from dataclasses import replace

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from molsamp.potentials import MACE
from molsamp.potentials.datasets import AtomsDataset, Structure, alanine_dipeptide_md_dataset
from molsamp.potentials.training import TrainingConfig, collate, evaluate, fit_statistics, train
from molsamp.units import KJ_PER_MOL_PER_EV

from .conftest import random_structure
from .models import MODELS


@pytest.fixture(scope="module")
def alanine_data():
    data = alanine_dipeptide_md_dataset(32, interval_steps=100, seed=1, equilibration_steps=1000)
    return data.split(0.25, seed=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_lowers_validation_force_error(name, alanine_data):
    train_set, val_set = alanine_data
    model = MODELS[name]()
    fit_statistics(model, train_set)
    val_batches = [collate(val_set.structures, model.r_max, torch.float64, "cpu")]
    before = evaluate(model, val_batches)
    config = TrainingConfig(
        max_epochs=6, batch_size=4, lr=1e-2, ema_decay=0.5, stage_two_fraction=0.7,
        stage_two_energy_weight=10.0, progress=False, seed=0,
    )  # fmt: skip
    result = train(model, train_set, val_set, config, fit_stats=False)
    after = evaluate(model, val_batches)
    # the untrained model is far worse than predicting zero forces; training must beat
    # both by a wide margin on frames it never saw
    zero_force_mae = float(torch.cat([s.forces for s in val_set]).abs().mean())
    assert after["forces_mae"] < 0.2 * before["forces_mae"]
    assert after["forces_mae"] < 0.6 * zero_force_mae
    assert result.history[-1]["stage"] == 2
    assert after["forces_mae"] == pytest.approx(result.best_metrics["forces_mae"], rel=1e-9)


def test_stress_training_on_periodic_data_float32():
    """A TensorNet student learns energies, forces and stress of a MACE teacher (PBC)."""
    teacher = MODELS["mace"](elements=(1, 8), seed=1)
    cell = 0.7 * torch.eye(3, dtype=torch.float64)
    structures = []
    for seed in range(12):
        x = random_structure(8, 0.7, seed=100 + seed)
        z = torch.tensor([8, 1, 1, 8, 1, 1, 8, 1])
        out = teacher.predict(z, x, cell=cell[None], stress=True)
        structures.append(Structure(z, x, out["energy"][0], out["forces"], cell, out["stress"][0]))
    data = AtomsDataset(structures)
    train_set, val_set = data.split(0.25, seed=0)
    student = MODELS["tensornet"](elements=(1, 8))
    config = TrainingConfig(
        max_epochs=6, batch_size=3, lr=1e-2, stress_weight=1e-3, ema_decay=0.0,
        stage_two_fraction=1.0, dtype=torch.float32, progress=False,
    )  # fmt: skip
    result = train(student, train_set, val_set, config)
    assert student.atomic_energies.dtype == torch.float32
    first, best = result.history[0], result.best_metrics
    assert "stress_mae" in best and best["stress_mae"] < first["stress_mae"]
    assert best["loss"] < first["loss"]


def test_extxyz_units_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(3):
        atoms = ase.Atoms("OH2", positions=rng.normal(size=(3, 3)), cell=4 * np.eye(3), pbc=True)
        atoms.calc = SinglePointCalculator(
            atoms, energy=-1.5, forces=np.full((3, 3), 0.2), stress=np.arange(1.0, 7.0) * 1e-3
        )
        frames.append(atoms)
    path = tmp_path / "data.extxyz"
    ase.io.write(path, frames, format="extxyz")
    data = AtomsDataset.from_extxyz(path)
    s = data[0]
    assert s.energy.item() == pytest.approx(-1.5 * KJ_PER_MOL_PER_EV)
    assert s.forces[0, 0].item() == pytest.approx(0.2 * KJ_PER_MOL_PER_EV * 10)
    torch.testing.assert_close(s.positions, torch.tensor(frames[0].positions / 10))
    torch.testing.assert_close(s.cell, 0.4 * torch.eye(3, dtype=torch.float64))
    assert s.stress[0, 0].item() == pytest.approx(1e-3 * KJ_PER_MOL_PER_EV * 1000)
    assert s.stress[1, 2].item() == pytest.approx(4e-3 * KJ_PER_MOL_PER_EV * 1000)  # yz
    assert data.elements() == [1, 8]


def test_extxyz_labels_under_other_keys_are_read_with_their_stress(tmp_path):
    """Data sets often store reference labels as REF_energy, REF_forces and a 3 × 3 (9-value)
    REF_stress in the frame's info; stress_key reads the last, in eV/Å³, as it reads Voigt."""
    stress = np.array([[1.0, 0.4, 0.5], [0.4, 2.0, 0.6], [0.5, 0.6, 3.0]]) * 1e-3
    atoms = ase.Atoms(
        "OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=4 * np.eye(3), pbc=True
    )
    atoms.info.update(REF_energy=-1.5, REF_stress=stress)
    atoms.arrays["REF_forces"] = np.full((3, 3), 0.2)
    path = tmp_path / "ref.extxyz"
    ase.io.write(path, [atoms], format="extxyz")
    data = AtomsDataset.from_extxyz(path, "REF_energy", "REF_forces", "REF_stress")
    torch.testing.assert_close(data[0].stress, torch.tensor(stress * KJ_PER_MOL_PER_EV * 1000))
    assert data[0].energy.item() == pytest.approx(-1.5 * KJ_PER_MOL_PER_EV)
    assert AtomsDataset.from_extxyz(path, "REF_energy", "REF_forces")[0].stress is None  # no "stress"
    atoms.info["REF_stress"] = np.ones(4)
    ase.io.write(path, [atoms], format="extxyz")
    with pytest.raises(ValueError, match=r"frame 0, 'REF_stress': a stress needs 6 \(Voigt\) or 9 values"):
        AtomsDataset.from_extxyz(path, "REF_energy", "REF_forces", "REF_stress")


def test_extxyz_written_then_read_gives_the_same_structures(tmp_path):
    """to_extxyz writes eV and Å; from_extxyz converts back: the round trip is the identity,
    periodic with stress and isolated, and ASE reads the labels in eV. ASE writes per-atom
    columns with 8 decimals (1e-8 Å, 1e-8 eV/Å ≈ 1e-6 kJ/mol/nm), the rest in full."""

    def symmetric(m: np.ndarray) -> torch.Tensor:
        return torch.tensor(m + m.T)

    atol = {"positions": 1e-9, "forces": 1e-5, "energy": 1e-9, "cell": 1e-12, "stress": 1e-9}
    rng = np.random.default_rng(1)
    periodic = [
        Structure(
            torch.tensor([8, 1, 1]), torch.tensor(rng.uniform(0, 0.4, (3, 3))),
            torch.tensor(rng.normal() * 100, dtype=torch.float64), torch.tensor(rng.normal(size=(3, 3)) * 500),
            torch.tensor([[0.4, 0.0, 0.0], [0.1, 0.5, 0.0], [0.0, 0.05, 0.45]], dtype=torch.float64),
            symmetric(rng.normal(size=(3, 3))) * 1e3,
        )
        for _ in range(3)
    ]  # fmt: skip
    isolated = [replace(structure, cell=None, stress=None) for structure in periodic]
    for structures in (periodic, isolated):
        path = AtomsDataset(structures).to_extxyz(tmp_path / "out" / "data.extxyz")
        assert not list(path.parent.glob("*.partial"))
        back = AtomsDataset.from_extxyz(path)
        assert len(back) == 3 and back.periodic == (structures is periodic)
        for got, want in zip(back, structures, strict=True):
            assert torch.equal(got.atomic_numbers, want.atomic_numbers)
            for name in ("positions", "energy", "forces", "cell", "stress"):
                a, b = getattr(got, name), getattr(want, name)
                assert (a is None) == (b is None), name
                if a is not None:
                    torch.testing.assert_close(a, b, rtol=1e-12, atol=atol[name], msg=name)
    first = ase.io.read(tmp_path / "out" / "data.extxyz", index=0)
    assert first.get_potential_energy() == pytest.approx(float(isolated[0].energy) / KJ_PER_MOL_PER_EV)


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="scheduler"):
        TrainingConfig(scheduler="step")
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig(batch_size=0)


def test_ema_training_of_a_mace_with_max_ell_3(alanine_data):
    """A copy of a max_ell = 3, 16-channel MACE has the original's state_dict keys (e3nn's
    einsum optimisation added a constant to copies), so the training EMA, a copy whose buffers
    are matched by position, and loading the best state back both work."""
    train_set, val_set = alanine_data
    torch.manual_seed(0)
    model = MACE((1, 6, 7, 8), r_max=0.4, max_ell=3, hidden_irreps="16x0e+16x1o", radial_mlp=(8,))
    assert set(copy.deepcopy(model).state_dict()) == set(model.state_dict())
    # a state saved without e3nn's generated constants (as before this was fixed) still loads
    older = {k: v for k, v in model.state_dict().items() if "_tensor_constant" not in k}
    assert len(older) < len(model.state_dict())
    model.load_state_dict(older)
    plain = MACE((1, 6, 7, 8), r_max=0.4, max_ell=2, hidden_irreps="16x0e+16x1o", radial_mlp=(8,))
    extra = {**plain.state_dict(), "layers.1.conv._compiled_main_left_right._tensor_constant0": torch.ones(3)}
    plain.load_state_dict(extra)  # and one with a constant this e3nn build does not generate
    config = TrainingConfig(max_epochs=2, batch_size=8, ema_decay=0.5, stage_two_fraction=1.0, progress=False)
    result = train(model, train_set, val_set, config)
    assert result.epochs == 2 and np.isfinite(result.best_metrics["forces_mae"])
