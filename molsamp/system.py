"""Core types: :class:`System` (what never changes) and :class:`State` (what moves).

A ``System`` describes the atoms; a ``State`` holds B walkers (replicas) of that system,
evaluated together so batched potentials can use the hardware well. B = 1 is a plain run.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from molsamp.units import nm_from_angstrom

if TYPE_CHECKING:
    import ase
    import mdtraj
    import openmm
    import openmm.app


def check_walker_count(n_walkers: int) -> int:
    """``n_walkers`` if it is a whole number ≥ 1; else a ValueError that says so."""
    if isinstance(n_walkers, bool) or not isinstance(n_walkers, numbers.Integral) or n_walkers < 1:
        raise ValueError(
            f"n_walkers must be a whole number >= 1 (on the command line: --walkers), got {n_walkers!r}"
        )
    return int(n_walkers)


def _as_cell(cell: Any, name: str = "cell") -> torch.Tensor | None:
    """Validate a (3, 3) box (rows are box vectors, nm) and return it as float64."""
    if cell is None:
        return None
    cell = torch.as_tensor(cell, dtype=torch.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"{name} must have shape (3, 3) with box vectors as rows, got {tuple(cell.shape)}")
    if not torch.isfinite(cell).all():
        raise ValueError(f"{name} must be finite, got {cell.tolist()}")
    if torch.linalg.det(cell).abs() < 1e-12:
        raise ValueError(f"{name} is singular (volume 0); give three independent box vectors in nm")
    return cell


@dataclass(frozen=True, eq=False)
class System:
    """Immutable description of the atoms.

    Attributes
    ----------
    atomic_numbers : (N,) int64 tensor
    masses : (N,) float64 tensor, amu; every mass must be > 0.
    cell : (3, 3) float64 tensor, nm, box vectors as rows; ``None`` for a non-periodic system.
    pbc : three bools, periodic along each box vector.
    topology : optional ``mdtraj.Topology`` (residues, bonds, names) for trajectory files.
    """

    atomic_numbers: torch.Tensor
    masses: torch.Tensor
    cell: torch.Tensor | None = None
    pbc: tuple[bool, bool, bool] = (False, False, False)
    topology: mdtraj.Topology | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        numbers = torch.as_tensor(self.atomic_numbers, dtype=torch.int64).cpu()
        masses = torch.as_tensor(self.masses, dtype=torch.float64).cpu()
        if numbers.ndim != 1 or numbers.numel() == 0:
            raise ValueError(f"atomic_numbers must have shape (N,) with N >= 1, got {tuple(numbers.shape)}")
        if masses.shape != numbers.shape:
            raise ValueError(
                f"masses must have shape (N,) = {tuple(numbers.shape)} like atomic_numbers, "
                f"got {tuple(masses.shape)}"
            )
        if not (masses > 0).all():
            bad = torch.nonzero(~(masses > 0)).flatten().tolist()
            raise ValueError(f"masses must be > 0 amu; atoms {bad[:10]} have {masses[bad[:10]].tolist()}")
        cell = _as_cell(self.cell)
        pbc = tuple(bool(p) for p in self.pbc)
        if len(pbc) != 3:
            raise ValueError(f"pbc must have three entries (one per box vector), got {self.pbc}")
        if any(pbc) and cell is None:
            raise ValueError("pbc is set but cell is None; give the box vectors (nm) as cell")
        if self.topology is not None and self.topology.n_atoms != numbers.numel():
            raise ValueError(
                f"topology has {self.topology.n_atoms} atoms but atomic_numbers has {numbers.numel()}"
            )
        object.__setattr__(self, "atomic_numbers", numbers)
        object.__setattr__(self, "masses", masses)
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "pbc", pbc)

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.numel())

    @property
    def periodic(self) -> bool:
        return any(self.pbc)

    @classmethod
    def from_openmm(cls, topology: openmm.app.Topology, openmm_system: openmm.System) -> System:
        """Build from an OpenMM topology and System (masses taken from the System)."""
        import mdtraj
        from openmm import unit

        n = openmm_system.getNumParticles()
        if topology.getNumAtoms() != n:
            raise ValueError(
                f"topology has {topology.getNumAtoms()} atoms but openmm_system has {n} particles"
            )
        masses = [openmm_system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)]
        numbers = [a.element.atomic_number if a.element is not None else 0 for a in topology.atoms()]
        cell = None
        pbc = (False, False, False)
        if openmm_system.usesPeriodicBoundaryConditions():
            vectors = openmm_system.getDefaultPeriodicBoxVectors()
            cell = np.array([v.value_in_unit(unit.nanometer) for v in vectors])
            pbc = (True, True, True)
        return cls(numbers, masses, cell, pbc, mdtraj.Topology.from_openmm(topology))

    @classmethod
    def from_pdb(cls, path: str | Path) -> System:
        """Read atoms, masses (from elements), box and topology from a PDB file."""
        import mdtraj

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"PDB file not found: {path}; check the path")
        traj = mdtraj.load_pdb(str(path), standard_names=False)
        return cls._from_mdtraj(traj)

    @classmethod
    def _from_mdtraj(cls, traj: mdtraj.Trajectory) -> System:
        top = traj.topology
        numbers = [a.element.atomic_number for a in top.atoms]
        masses = [a.element.mass for a in top.atoms]
        cell = None if traj.unitcell_vectors is None else traj.unitcell_vectors[0].astype(np.float64)
        pbc = (cell is not None,) * 3
        return cls(numbers, masses, cell, pbc, top)

    @classmethod
    def from_ase(cls, atoms: ase.Atoms) -> System:
        """Build from ``ase.Atoms`` (Å → nm for the cell)."""
        cell = None
        if atoms.cell.rank == 3:
            cell = nm_from_angstrom(np.asarray(atoms.cell[:], dtype=np.float64))
        if any(atoms.pbc) and cell is None:
            raise ValueError("atoms.pbc is set but atoms.cell is not a full 3D cell; set atoms.cell")
        return cls(atoms.numbers.copy(), atoms.get_masses().copy(), cell, tuple(atoms.pbc))

    def to_ase(self, positions: Any) -> ase.Atoms:
        """``ase.Atoms`` of this system at ``positions``; the inverse of :meth:`from_ase`.

        Parameters
        ----------
        positions : (N, 3) array or tensor, nm (one walker: ``state.positions[0]``)

        Returns
        -------
        ``ase.Atoms`` with positions and cell in Å, this system's masses (amu), atomic numbers
        and pbc. The topology is not carried over: ASE has no place for it.
        """
        import ase

        from molsamp.units import angstrom_from_nm

        xyz = torch.as_tensor(positions).detach().to("cpu", torch.float64)
        if tuple(xyz.shape) != (self.n_atoms, 3):
            raise ValueError(
                f"positions must have shape (N, 3) = ({self.n_atoms}, 3) in nm, got "
                f"{tuple(xyz.shape)}; for a State pass one walker, e.g. state.positions[0]"
            )
        return ase.Atoms(
            numbers=self.atomic_numbers.numpy(),
            positions=angstrom_from_nm(xyz.numpy()),
            masses=self.masses.numpy(),
            cell=None if self.cell is None else angstrom_from_nm(self.cell.numpy()),
            pbc=self.pbc,
        )


@dataclass(frozen=True, eq=False)
class State:
    """What moves: B walkers of one system.

    Attributes
    ----------
    positions : (B, N, 3) float tensor, nm
    velocities : (B, N, 3) float tensor, nm/ps, same device and dtype as positions
    cell : (3, 3) tensor, nm, or None
    step : integration steps taken so far
    time : simulated time, ps
    potential_energy : (B,) kJ/mol at ``positions`` if already known (integrators fill it)
    forces : (B, N, 3) kJ/mol/nm at ``positions`` if already known (integrators fill it)
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    cell: torch.Tensor | None = None
    step: int = 0
    time: float = 0.0
    potential_energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None

    def __post_init__(self) -> None:
        pos, vel = self.positions, self.velocities
        if not isinstance(pos, torch.Tensor) or pos.ndim != 3 or pos.shape[-1] != 3:
            shape = tuple(pos.shape) if isinstance(pos, torch.Tensor) else type(pos).__name__
            raise ValueError(
                f"positions must be a (B, N, 3) tensor in nm, got {shape}; "
                "use State.from_positions for an (N, 3) array"
            )
        if not pos.is_floating_point():
            raise ValueError(f"positions must be a floating-point tensor, got {pos.dtype}")
        if pos.shape[0] == 0:
            raise ValueError("positions hold no walkers (B = 0); a State needs at least one walker")
        if not isinstance(vel, torch.Tensor) or vel.shape != pos.shape:
            shape = tuple(vel.shape) if isinstance(vel, torch.Tensor) else type(vel).__name__
            raise ValueError(f"velocities must have the shape of positions {tuple(pos.shape)}, got {shape}")
        if vel.dtype != pos.dtype or vel.device != pos.device:
            raise ValueError(
                f"velocities ({vel.dtype}, {vel.device}) must match positions ({pos.dtype}, {pos.device})"
            )
        if self.cell is not None:
            cell = _as_cell(self.cell).to(device=pos.device, dtype=pos.dtype)
            object.__setattr__(self, "cell", cell)

    @classmethod
    def from_positions(
        cls,
        positions: Any,
        velocities: Any | None = None,
        cell: Any | None = None,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> State:
        """Make a state from (N, 3) or (B, N, 3) positions in nm; velocities default to zero."""
        pos = torch.as_tensor(positions, dtype=dtype, device=device)
        if pos.ndim == 2:
            pos = pos.unsqueeze(0)
        vel = (
            torch.zeros_like(pos)
            if velocities is None
            else torch.as_tensor(velocities, dtype=dtype, device=device)
        )
        if vel.ndim == 2:
            vel = vel.unsqueeze(0)
        return cls(pos, vel, cell)

    @property
    def n_walkers(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    def replace(self, **changes: Any) -> State:
        """A copy with some fields changed (cached energy/forces dropped if positions change)."""
        if "positions" in changes:
            changes.setdefault("potential_energy", None)
            changes.setdefault("forces", None)
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> State:
        """Copy to another device/dtype."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return dataclasses.replace(
            self,
            positions=move(self.positions),
            velocities=move(self.velocities),
            cell=move(self.cell),
            potential_energy=move(self.potential_energy),
            forces=move(self.forces),
        )
