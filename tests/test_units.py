import math

import pytest
import torch

from molsamp import units


def test_boltzmann_constant_is_gas_constant_per_kilojoule():
    assert units.BOLTZMANN_KJ_PER_MOL_K == pytest.approx(8.314462618e-3, rel=1e-12)
    assert units.kT(300.0) == pytest.approx(2.494338785, rel=1e-9)


def test_ev_is_faraday_constant_in_kilojoule():
    # 1 eV · N_A = e · N_A J/mol = F J/mol, F = 96485.33212 C/mol
    assert units.kj_per_mol_from_ev(1.0) == pytest.approx(96.48533212, rel=1e-9)


@pytest.mark.parametrize(
    ("forward", "backward", "value"),
    [
        (units.nm_from_angstrom, units.angstrom_from_nm, 3.7),
        (units.ps_from_fs, units.fs_from_ps, 2.0),
        (units.kj_per_mol_from_ev, units.ev_from_kj_per_mol, -1.25),
        (units.kj_per_mol_nm_from_ev_per_angstrom, units.ev_per_angstrom_from_kj_per_mol_nm, 0.3),
    ],
)
def test_conversions_round_trip(forward, backward, value):
    assert backward(forward(value)) == pytest.approx(value, rel=1e-14)
    tensor = torch.tensor([value], dtype=torch.float64)
    assert torch.allclose(backward(forward(tensor)), tensor, rtol=1e-14)


def test_force_conversion_is_energy_over_length():
    force = 1.0  # kJ/mol/nm
    expected = units.ev_from_kj_per_mol(1.0) / units.angstrom_from_nm(1.0)
    assert math.isclose(units.ev_per_angstrom_from_kj_per_mol_nm(force), expected, rel_tol=1e-14)
