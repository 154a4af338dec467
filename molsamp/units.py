"""Units: molsamp works in OpenMM's units everywhere inside.

length nm · time ps · energy kJ/mol · mass amu (g/mol) · temperature K · charge e.
They are consistent (kJ/mol = amu·nm²/ps²), so force/mass is an acceleration with no factor.
Values in other units appear only at the boundaries (ASE, extxyz, the CLI) and say so in their
names (``timestep_fs``, ``energy_eV``).
"""

from __future__ import annotations

BOLTZMANN_KJ_PER_MOL_K = 0.008314462618
"""k_B in kJ/mol/K (CODATA 2018 R / 1000)."""

ANGSTROM_PER_NM = 10.0
FS_PER_PS = 1000.0
KJ_PER_MOL_PER_EV = 96.48533212331002
"""1 eV per particle in kJ/mol (e · N_A / 1000)."""


def kT(temperature: float) -> float:
    """Thermal energy k_B·T in kJ/mol for ``temperature`` in K."""
    return BOLTZMANN_KJ_PER_MOL_K * temperature


def nm_from_angstrom(length_angstrom):
    """Å → nm (works on floats, numpy arrays and tensors)."""
    return length_angstrom / ANGSTROM_PER_NM


def angstrom_from_nm(length_nm):
    """nm → Å."""
    return length_nm * ANGSTROM_PER_NM


def ps_from_fs(time_fs):
    """fs → ps."""
    return time_fs / FS_PER_PS


def fs_from_ps(time_ps):
    """ps → fs."""
    return time_ps * FS_PER_PS


def kj_per_mol_from_ev(energy_ev):
    """eV → kJ/mol."""
    return energy_ev * KJ_PER_MOL_PER_EV


def ev_from_kj_per_mol(energy_kj_per_mol):
    """kJ/mol → eV."""
    return energy_kj_per_mol / KJ_PER_MOL_PER_EV


def ev_per_angstrom_from_kj_per_mol_nm(force):
    """Force kJ/mol/nm → eV/Å."""
    return force / (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM)


def kj_per_mol_nm_from_ev_per_angstrom(force_ev_per_angstrom):
    """Force eV/Å → kJ/mol/nm."""
    return force_ev_per_angstrom * KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM


def ev_per_angstrom3_from_kj_per_mol_nm3(stress):
    """Stress (energy density) kJ/mol/nm³ → eV/Å³."""
    return stress / (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM**3)


def angstrom_per_fs_from_nm_per_ps(velocity_nm_per_ps):
    """Velocity nm/ps → Å/fs (ASE's velocities are Å/fs divided by ``ase.units.fs``)."""
    return velocity_nm_per_ps * ANGSTROM_PER_NM / FS_PER_PS
