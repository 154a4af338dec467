"""A molsamp potential as an ASE calculator.

Use::

    from molsamp.interop.ase import MolsampCalculator

    atoms.calc = MolsampCalculator(potential)
    atoms.get_potential_energy()  # eV

ASE's units (Å, eV, eV/Å, eV/Å³) are converted to molsamp's (nm, kJ/mol) at this boundary with
:mod:`molsamp.units`; nothing inside the potential changes.

Duck-typed hooks a potential may offer, used when present:

- ``supported_atomic_numbers`` : iterable of int. Atoms with other elements are refused with
  an error listing them.
- ``force_uncertainty(positions (B, N, 3) nm, cell (3, 3) nm | None) -> (B, N) kJ/mol/nm`` :
  per-atom force uncertainty (an ensemble's spread); the calculator puts it into
  ``calc.results["force_uncertainty"]``, shape (N,), in eV/Å, after every calculation.

No ASE entry point is registered: ASE 3.29's calculator plugins (group ``ase.plugins``) live
in its private, experimental ``ase._4`` package, only ``ase info --plugins`` reads them, and
``get_calculator_class`` never does; a calculator built from a potential object has no use
for lookup by name anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import ase
import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from molsamp.devices import usable_device
from molsamp.potentials.base import Potential
from molsamp.units import (
    ev_from_kj_per_mol,
    ev_per_angstrom3_from_kj_per_mol_nm3,
    ev_per_angstrom_from_kj_per_mol_nm,
    nm_from_angstrom,
)


class MolsampCalculator(Calculator):
    """ASE calculator for any molsamp :class:`~molsamp.potentials.Potential`.

    Parameters
    ----------
    potential : molsamp Potential, already on ``device``
    device : where positions are placed for the potential
    dtype : floating dtype of the positions handed to the potential

    Notes
    -----
    Properties: ``energy`` and ``free_energy`` (eV, equal: there is no electronic entropy),
    ``forces`` (N, 3) eV/Å and, for periodic cells only, ``stress`` (Voigt order xx, yy, zz,
    yz, xz, xy) in eV/Å³: σ = (1/V)·∂E/∂ε, by autograd through a symmetric strain ε applied
    to positions and cell alike. Stress therefore needs a potential whose energy is
    differentiable with respect to the cell; others get a clear error.

    Periodic potentials (``potential.requires_cell``) need ``atoms.pbc`` all True and a full
    3D cell; non-periodic potentials need ``atoms.pbc`` all False.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        potential: Potential,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ):
        if not isinstance(potential, Potential):
            raise TypeError(f"potential must be a molsamp Potential, got {type(potential).__name__}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype such as torch.float64, got {dtype}")
        super().__init__()
        self.potential = potential
        self.device = usable_device(device)
        self.dtype = dtype
        supported = getattr(potential, "supported_atomic_numbers", None)
        self._supported = None if supported is None else np.asarray(sorted(set(supported)), int)

    def calculate(
        self,
        atoms: ase.Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Fill ``self.results`` for ``atoms`` (ASE calls this; use ``atoms.get_*`` instead)."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check_elements(atoms.numbers)
        cell = self._cell_nm(atoms)
        positions = torch.as_tensor(nm_from_angstrom(atoms.positions), dtype=self.dtype, device=self.device)[
            None
        ]
        if "stress" in properties:
            if cell is None:
                raise PropertyNotImplementedError(
                    "stress needs a periodic cell: set atoms.pbc = True and atoms.cell (Å), "
                    "with a periodic potential"
                )
            energy, forces, stress = self._energy_forces_stress(positions, cell)
            self.results["stress"] = full_3x3_to_voigt_6_stress(
                ev_per_angstrom3_from_kj_per_mol_nm3(_to_numpy(stress))
            )
        else:
            energy, forces = self.potential.energy_and_forces(positions, cell)
        energy_ev = float(ev_from_kj_per_mol(energy[0].item()))
        self.results["energy"] = energy_ev
        self.results["free_energy"] = energy_ev
        self.results["forces"] = ev_per_angstrom_from_kj_per_mol_nm(_to_numpy(forces[0]))
        if hasattr(self.potential, "force_uncertainty"):
            self.results["force_uncertainty"] = self._force_uncertainty(positions, cell)

    def _check_elements(self, numbers: np.ndarray) -> None:
        if self._supported is None:
            return
        unknown = ~np.isin(numbers, self._supported)
        if not unknown.any():
            return
        listing = ", ".join(
            f"{chemical_symbols[z]} (Z={z}) at atoms {np.flatnonzero(numbers == z)[:10].tolist()}"
            for z in np.unique(numbers[unknown])
        )
        known = ", ".join(chemical_symbols[z] for z in self._supported)
        raise ValueError(
            f"atoms contain elements {type(self.potential).__name__} does not know: {listing}. "
            f"It knows {known}; remove those atoms or use a potential trained on those elements"
        )

    def _cell_nm(self, atoms: ase.Atoms) -> torch.Tensor | None:
        """The cell (3, 3) in nm for a periodic potential, None otherwise; checks pbc/cell."""
        pbc = [bool(p) for p in atoms.pbc]
        name = type(self.potential).__name__
        if any(pbc) and atoms.cell.rank != 3:
            raise ValueError(
                f"atoms.pbc is {pbc} but atoms.cell is not a full 3D cell (rank "
                f"{atoms.cell.rank}); set atoms.cell to the box in Å, or atoms.pbc = False"
            )
        if self.potential.requires_cell and not all(pbc):
            raise ValueError(
                f"{name} is periodic in all three directions but atoms.pbc is {pbc}; set "
                "atoms.pbc = True and atoms.cell to the box in Å"
            )
        if not self.potential.uses_cell and any(pbc):
            raise ValueError(
                f"atoms.pbc is {pbc} but {name} is not periodic and would ignore the cell; set "
                "atoms.pbc = False, or use a periodic potential"
            )
        if any(pbc) and not all(pbc):
            raise ValueError(
                f"atoms.pbc is {pbc}: partly periodic systems are not supported; set all or none"
            )
        if not any(pbc):
            return None
        return torch.as_tensor(
            nm_from_angstrom(np.asarray(atoms.cell[:])), dtype=self.dtype, device=self.device
        )

    def _energy_forces_stress(
        self, positions: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energy (B,) kJ/mol, forces (B, N, 3) kJ/mol/nm and stress (3, 3) kJ/mol/nm³."""
        with torch.enable_grad():
            x = positions.detach().requires_grad_(True)
            strain = torch.zeros(3, 3, dtype=self.dtype, device=self.device, requires_grad=True)
            deformation = torch.eye(3, dtype=self.dtype, device=self.device) + 0.5 * (strain + strain.T)
            strained_cell = cell @ deformation
            energy = self.potential.energy(x @ deformation, strained_cell)
            grad_x, grad_strain, grad_cell = torch.autograd.grad(
                energy.sum(), [x, strain, strained_cell], allow_unused=True
            )
        if grad_cell is None:
            raise ValueError(
                f"{type(self.potential).__name__}'s energy is not differentiable with respect "
                "to the cell, so its stress is unknown; ask only for energy and forces (no "
                "stress-dependent filters or barostats), or use a potential built with torch "
                "operations on the cell"
            )
        forces = torch.zeros_like(x) if grad_x is None else -grad_x
        volume = torch.linalg.det(cell).abs()
        return energy.detach(), forces.detach(), grad_strain / volume

    def _force_uncertainty(self, positions: torch.Tensor, cell: torch.Tensor | None) -> np.ndarray:
        with torch.no_grad():
            sigma = self.potential.force_uncertainty(positions, cell)
        if tuple(sigma.shape) != tuple(positions.shape[:2]):
            raise ValueError(
                f"{type(self.potential).__name__}.force_uncertainty must return (B, N) = "
                f"{tuple(positions.shape[:2])} in kJ/mol/nm, got {tuple(sigma.shape)}"
            )
        return ev_per_angstrom_from_kj_per_mol_nm(_to_numpy(sigma[0]))


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()
