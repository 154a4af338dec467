import ase
import numpy as np
import pytest
import torch

from molsamp import State, System
from molsamp.systems import shipped_pdb


def test_system_rejects_non_positive_masses():
    with pytest.raises(ValueError, match=r"masses must be > 0 amu; atoms \[1\]"):
        System([1, 6], [1.0, 0.0])


def test_system_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="masses must have shape"):
        System([1, 6, 8], [1.0, 12.0])
    with pytest.raises(ValueError, match="atomic_numbers must have shape"):
        System([[1, 6]], [[1.0, 12.0]])


def test_system_rejects_bad_cell_and_pbc_without_cell():
    with pytest.raises(ValueError, match=r"cell must have shape \(3, 3\)"):
        System([1], [1.0], cell=[1.0, 1.0, 1.0], pbc=(True, True, True))
    with pytest.raises(ValueError, match="pbc is set but cell is None"):
        System([1], [1.0], pbc=(True, True, True))
    with pytest.raises(ValueError, match="singular"):
        System([1], [1.0], cell=np.zeros((3, 3)), pbc=(True, True, True))


def test_state_rejects_unbatched_positions_and_mismatched_velocities():
    with pytest.raises(ValueError, match=r"positions must be a \(B, N, 3\) tensor.*from_positions"):
        State(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="velocities must have the shape of positions"):
        State(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="must match positions"):
        State(torch.zeros(1, 4, 3, dtype=torch.float64), torch.zeros(1, 4, 3, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"no walkers \(B = 0\)"):
        State(torch.zeros(0, 4, 3), torch.zeros(0, 4, 3))


def test_state_from_positions_adds_walker_axis_and_replace_drops_cached_forces():
    state = State.from_positions(np.ones((5, 3)))
    assert state.positions.shape == (1, 5, 3) and state.positions.dtype == torch.float64
    cached = state.replace(forces=torch.ones(1, 5, 3), potential_energy=torch.ones(1))
    moved = cached.replace(positions=cached.positions + 1)
    assert moved.forces is None and moved.potential_energy is None
    assert cached.replace(step=3).forces is not None


def test_from_pdb_reads_alanine_dipeptide():
    system = System.from_pdb(shipped_pdb("alanine_dipeptide"))
    assert system.n_atoms == 22
    assert system.atomic_numbers.tolist().count(6) == 6 and system.atomic_numbers.tolist().count(1) == 12
    assert system.masses.sum().item() == pytest.approx(144.17, abs=0.05)  # C6H12N2O2
    assert system.topology.n_residues == 3 and not system.periodic


def test_from_pdb_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="PDB file not found: .*nope.pdb"):
        System.from_pdb(tmp_path / "nope.pdb")


def test_from_openmm_takes_masses_from_the_force_field(alanine):
    system, _, potential = alanine
    openmm_masses = [potential.openmm_system.getParticleMass(i)._value for i in range(22)]
    assert system.masses.tolist() == pytest.approx(openmm_masses)
    assert system.topology.n_atoms == 22


def test_from_ase_converts_cell_to_nm():
    atoms = ase.Atoms("Ar2", positions=[[0, 0, 0], [3.5, 0, 0]], cell=[10.0, 12.0, 14.0], pbc=True)
    system = System.from_ase(atoms)
    assert torch.allclose(system.cell, torch.diag(torch.tensor([1.0, 1.2, 1.4], dtype=torch.float64)))
    assert system.pbc == (True, True, True)
    assert system.masses.tolist() == pytest.approx([39.948, 39.948], abs=1e-3)
