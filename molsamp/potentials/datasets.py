"""Training data for the neural-network potentials: structures with energies and forces.

Sources: extxyz files (through ASE; eV and Å converted on entry) and trajectories labelled
by a reference :class:`~molsamp.potentials.Potential` (e.g. an OpenMM force field).
Everything is stored in molsamp's units: nm, kJ/mol, kJ/mol/nm, kJ/mol/nm³.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from molsamp.potentials.base import Potential
from molsamp.units import (
    angstrom_from_nm,
    ev_from_kj_per_mol,
    ev_per_angstrom3_from_kj_per_mol_nm3,
    ev_per_angstrom_from_kj_per_mol_nm,
    kj_per_mol_from_ev,
    kj_per_mol_nm_from_ev_per_angstrom,
    nm_from_angstrom,
)


def _full_stress(value: np.ndarray, where: str) -> np.ndarray:
    """A (3, 3) stress from ASE's 6 Voigt values (xx, yy, zz, yz, xz, xy) or 9 values."""
    from ase.stress import voigt_6_to_full_3x3_stress

    if value.size == 6:
        return voigt_6_to_full_3x3_stress(value.reshape(6))
    if value.size == 9:
        return value.reshape(3, 3)
    raise ValueError(f"{where}: a stress needs 6 (Voigt) or 9 values, got shape {value.shape}")


@dataclass(frozen=True)
class Structure:
    """One labelled structure (float64, CPU).

    Attributes
    ----------
    atomic_numbers : (N,) int64
    positions : (N, 3) nm
    energy : () kJ/mol
    forces : (N, 3) kJ/mol/nm
    cell : (3, 3) nm, box vectors as rows, or None
    stress : (3, 3) kJ/mol/nm³ (σ = (1/V) ∂E/∂ε), or None
    """

    atomic_numbers: torch.Tensor
    positions: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    cell: torch.Tensor | None = None
    stress: torch.Tensor | None = None


class AtomsDataset(torch.utils.data.Dataset):
    """A list of :class:`Structure`; all periodic or all isolated."""

    def __init__(self, structures: Sequence[Structure]):
        structures = list(structures)
        if not structures:
            raise ValueError("a dataset needs at least one structure")
        periodic = {s.cell is not None for s in structures}
        if len(periodic) != 1:
            raise ValueError(
                "mix of periodic and isolated structures; give isolated molecules a large "
                "cell (no image within the cutoff) or use separate datasets"
            )
        for k, s in enumerate(structures):
            n = s.atomic_numbers.shape[0]
            if s.positions.shape != (n, 3) or s.forces.shape != (n, 3):
                raise ValueError(
                    f"structure {k}: positions {tuple(s.positions.shape)} and forces "
                    f"{tuple(s.forces.shape)} must both be (N, 3) with N = {n}"
                )
        self.structures = structures

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index: int) -> Structure:
        return self.structures[index]

    @property
    def periodic(self) -> bool:
        return self.structures[0].cell is not None

    @property
    def has_stress(self) -> bool:
        return all(s.stress is not None for s in self.structures)

    def elements(self) -> list[int]:
        """Sorted atomic numbers present."""
        return sorted({int(z) for s in self.structures for z in s.atomic_numbers})

    def split(self, val_fraction: float, seed: int = 0) -> tuple[AtomsDataset, AtomsDataset]:
        """Random train/validation split (seeded)."""
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        n_val = max(1, round(val_fraction * len(self)))
        if n_val >= len(self):
            raise ValueError(f"{len(self)} structures are too few to hold out {n_val}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)).tolist()
        return (
            AtomsDataset([self.structures[i] for i in order[n_val:]]),
            AtomsDataset([self.structures[i] for i in order[:n_val]]),
        )

    @classmethod
    def from_extxyz(
        cls,
        path: str | Path,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
    ) -> AtomsDataset:
        """Read an extxyz file (energies in eV, forces eV/Å, stress eV/Å³ as ASE writes: 6
        Voigt or 9 values; read for periodic frames that have it)."""
        import ase.io

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"extxyz file not found: {path}; check the path")
        structures = []
        for k, atoms in enumerate(ase.io.iread(str(path), index=":", format="extxyz")):
            calc = atoms.calc
            results = {} if calc is None else calc.results
            energy = atoms.info.get(energy_key, results.get(energy_key))
            forces = atoms.arrays.get(forces_key, results.get(forces_key))
            if energy is None or forces is None:
                raise ValueError(
                    f"{path}, frame {k}: no {energy_key!r} and/or {forces_key!r}; "
                    "pass energy_key= and forces_key= naming the fields in the file"
                )
            cell = stress = None
            if any(atoms.pbc):
                cell = torch.tensor(nm_from_angstrom(np.asarray(atoms.cell[:])))
                value = atoms.info.get(stress_key, results.get(stress_key))
                if value is not None:  # eV/Å³, σ = (1/V) ∂E/∂ε
                    full = _full_stress(np.asarray(value, dtype=float), f"{path}, frame {k}, {stress_key!r}")
                    stress = torch.tensor(kj_per_mol_from_ev(full) * angstrom_from_nm(1.0) ** 3)
            structures.append(
                Structure(
                    torch.tensor(atoms.numbers, dtype=torch.int64),
                    torch.tensor(nm_from_angstrom(atoms.positions), dtype=torch.float64),
                    torch.tensor(kj_per_mol_from_ev(float(energy)), dtype=torch.float64),
                    torch.tensor(kj_per_mol_nm_from_ev_per_angstrom(np.asarray(forces)), dtype=torch.float64),
                    cell,
                    stress,
                )
            )
        return cls(structures)

    def to_extxyz(self, path: str | Path) -> Path:
        """Write every structure to an extxyz file in ASE's units (Å, eV, eV/Å, stress eV/Å³
        in Voigt order), as :meth:`from_extxyz` reads and other MLIP codes (mace-torch,
        nequip) train on. Written to a temporary file, then renamed: an interrupted write
        leaves no partial file. Returns the path."""
        import ase
        import ase.io
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.stress import full_3x3_to_voigt_6_stress

        path = Path(path)
        frames = []
        for structure in self.structures:
            cell = None if structure.cell is None else angstrom_from_nm(structure.cell.numpy())
            atoms = ase.Atoms(
                numbers=structure.atomic_numbers.numpy(),
                positions=angstrom_from_nm(structure.positions.numpy()),
                cell=cell,
                pbc=cell is not None,
            )
            results = {
                "energy": ev_from_kj_per_mol(float(structure.energy)),
                "forces": ev_per_angstrom_from_kj_per_mol_nm(structure.forces.numpy()),
            }
            if structure.stress is not None:
                stress = ev_per_angstrom3_from_kj_per_mol_nm3(structure.stress.numpy())
                results["stress"] = full_3x3_to_voigt_6_stress(stress)
            atoms.calc = SinglePointCalculator(atoms, **results)
            frames.append(atoms)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        ase.io.write(str(partial), frames, format="extxyz")
        partial.replace(path)
        return path

    @classmethod
    def from_trajectory(
        cls,
        atomic_numbers: torch.Tensor,
        positions: torch.Tensor,
        reference: Potential,
        cell: torch.Tensor | None = None,
        batch_size: int = 256,
    ) -> AtomsDataset:
        """Label frames (T, N, 3) nm with ``reference``'s energies and forces."""
        positions = torch.as_tensor(positions, dtype=torch.float64)
        if positions.ndim != 3 or positions.shape[-1] != 3:
            raise ValueError(f"positions must be (T, N, 3) in nm, got {tuple(positions.shape)}")
        z = torch.as_tensor(atomic_numbers, dtype=torch.int64)
        structures = []
        for start in range(0, positions.shape[0], batch_size):
            chunk = positions[start : start + batch_size]
            energy, forces = reference.energy_and_forces(chunk, cell)
            for x, e, f in zip(chunk, energy, forces, strict=True):
                structures.append(Structure(z, x.clone(), e.double(), f.double(), cell))
        return cls(structures)


def alanine_dipeptide_md_dataset(
    n_frames: int,
    interval_steps: int = 50,
    temperature: float = 300.0,
    seed: int = 0,
    equilibration_steps: int = 5000,
    workdir: str | Path | None = None,
) -> AtomsDataset:
    """Frames of Langevin MD of alanine dipeptide (vacuum, Amber ff99SB-ILDN, 1 fs, γ = 1/ps)
    every ``interval_steps`` steps, labelled by the force field."""
    import tempfile

    import mdtraj

    from molsamp.integrators import LangevinBAOAB, simulate
    from molsamp.io import TrajectoryReporter
    from molsamp.systems import alanine_dipeptide
    from molsamp.units import ps_from_fs

    system, state, reference = alanine_dipeptide(temperature=temperature, seed=seed)
    langevin = LangevinBAOAB(reference, system.masses, ps_from_fs(1.0), temperature, 1.0, seed)
    state = simulate(langevin, state, equilibration_steps, progress=False)
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        path = Path(folder) / "frames.dcd"
        reporter = TrajectoryReporter(path, interval_steps, system.topology)
        simulate(langevin, state, n_frames * interval_steps, reporters=[reporter], progress=False)
        frames = mdtraj.load(str(path), top=system.topology).xyz[-n_frames:]
    return AtomsDataset.from_trajectory(
        system.atomic_numbers, torch.from_numpy(frames.astype(np.float64)), reference
    )
