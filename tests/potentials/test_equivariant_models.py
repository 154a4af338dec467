"""Physics of the equivariant potentials (MACE, TensorNet), float64, seeded.

Energy invariant and forces equivariant under rotations, reflections, translations and
permutations of same-element atoms; forces = −∇E; stress = strain derivative; energy
continuous across the cutoff; batches equal one-by-one evaluation.
"""

from __future__ import annotations

import pytest
import torch

from .conftest import random_rotation, random_structure, triclinic_cell
from .models import MODELS

pytestmark = pytest.mark.parametrize("name", sorted(MODELS))


def _periodic_structure(seed=7):
    x = random_structure(8, 0.6, seed=seed)
    z = torch.tensor([8, 1, 1, 6, 1, 7, 6, 8])
    return z, x


def test_rotation_reflection_translation_invariance(name, alanine_structure):
    z, x = alanine_structure
    model = MODELS[name]().bind(z)
    generator = torch.Generator().manual_seed(11)
    energy, forces = model.energy_and_forces(x[None])
    for reflect in (False, True):
        q = random_rotation(generator, reflect)
        shift = torch.randn(3, generator=generator, dtype=torch.float64)
        e2, f2 = model.energy_and_forces((x @ q.T + shift)[None])
        torch.testing.assert_close(e2, energy, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(f2, forces @ q.T, rtol=1e-10, atol=1e-9)


def test_periodic_invariance_under_rotation_of_cell_and_atoms(name):
    z, x = _periodic_structure()
    cell = triclinic_cell()
    model = MODELS[name]().bind(z)
    q = random_rotation(torch.Generator().manual_seed(12), reflect=True)
    e1, f1 = model.energy_and_forces(x[None], cell)
    e2, f2 = model.energy_and_forces((x @ q.T)[None], cell @ q.T)
    torch.testing.assert_close(e2, e1, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(f2, f1 @ q.T, rtol=1e-10, atol=1e-9)
    # wrapping an atom into another image changes nothing
    x3 = x.clone()
    x3[2] += cell[0] - 2 * cell[2]
    e3, f3 = model.energy_and_forces(x3[None], cell)
    torch.testing.assert_close(e3, e1, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(f3, f1, rtol=1e-10, atol=1e-9)


def test_permutation_of_same_element_atoms(name, alanine_structure):
    z, x = alanine_structure
    hydrogens = torch.nonzero(z == 1).flatten()
    perm = torch.arange(len(z))
    perm[hydrogens] = hydrogens[torch.randperm(len(hydrogens), generator=torch.Generator().manual_seed(3))]
    model = MODELS[name]()
    e1, f1 = model.bind(z).energy_and_forces(x[None])
    e2, f2 = model.bind(z[perm]).energy_and_forces(x[perm][None])
    torch.testing.assert_close(e2, e1, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(f2[0], f1[0, perm], rtol=1e-10, atol=1e-9)


def test_forces_are_minus_gradient_by_finite_differences(name, alanine_structure):
    z, x = alanine_structure
    model = MODELS[name]().bind(z)
    _, forces = model.energy_and_forces(x[None])
    h = 1e-6  # central differences err by O(h²·E'''); round-off is ~1e-10 here
    generator = torch.Generator().manual_seed(5)
    for atom in torch.randint(0, len(z), (4,), generator=generator).tolist():
        for axis in range(3):
            plus, minus = x.clone(), x.clone()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            derivative = (model.energy(plus[None]) - model.energy(minus[None])) / (2 * h)
            torch.testing.assert_close(-derivative, forces[:, atom, axis], rtol=1e-6, atol=1e-6)


def test_stress_is_strain_derivative(name):
    z, x = _periodic_structure(seed=8)
    cell = triclinic_cell()
    model = MODELS[name]().bind(z)
    _, _, stress = model.energy_forces_stress(x[None], cell)
    volume = torch.linalg.det(cell).abs()
    h = 1e-6
    for a in range(3):
        for b in range(3):
            strain = torch.zeros(3, 3, dtype=torch.float64)
            strain[a, b] = h
            deformed = torch.eye(3, dtype=torch.float64) + strain
            e_plus = model.energy((x @ deformed)[None], cell @ deformed)
            deformed = torch.eye(3, dtype=torch.float64) - strain
            e_minus = model.energy((x @ deformed)[None], cell @ deformed)
            expected = (e_plus - e_minus) / (2 * h) / volume
            torch.testing.assert_close(stress[:, a, b], expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(stress, stress.transpose(1, 2), rtol=1e-10, atol=1e-8)


def test_energy_and_force_continuous_across_cutoff(name):
    model = MODELS[name]()
    z = torch.tensor([8, 1, 6])
    model.bind(z)
    r_max = model.r_max  # atom 2 sees atom 0 near r_max and never atom 1 (0.1 nm further)

    def energy_and_force(d):
        x = torch.tensor([[0.0, 0.0, 0.0], [-0.1, 0.0, 0.0], [d, 0.0, 0.0]], dtype=torch.float64)
        e, f = model.energy_and_forces(x[None])
        return e.item(), f[0, 2].norm().item()

    far, _ = energy_and_force(r_max + 0.2)
    gaps = []
    for delta in (1e-3, 1e-4):
        inside, f_in = energy_and_force(r_max - delta)
        outside, f_out = energy_and_force(r_max + delta)
        assert outside == pytest.approx(far, abs=1e-12)  # nothing beyond the cutoff
        assert f_out == 0.0
        gaps.append((abs(inside - outside), f_in))
    # the p = 5 envelope is 1 − 21x⁵ + 35x⁶ − 15x⁷ ∝ (1 − x)³ at x = 1: the energy gap
    # shrinks like δ³ and the force like δ², so neither jumps
    (e1, f1), (e2, f2) = gaps
    assert 0 < e2 < 2e-3 * e1
    assert 0 < f2 < 2e-2 * f1


def test_batched_walkers_equal_one_by_one(name, alanine_structure):
    z, x = alanine_structure
    model = MODELS[name]().bind(z)
    generator = torch.Generator().manual_seed(9)
    walkers = x + 0.01 * torch.randn(3, *x.shape, generator=generator, dtype=torch.float64)
    e, f = model.energy_and_forces(walkers)
    for k in range(3):
        ek, fk = model.energy_and_forces(walkers[k : k + 1])
        torch.testing.assert_close(e[k : k + 1], ek, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(f[k : k + 1], fk, rtol=1e-12, atol=1e-10)


def test_batch_of_different_structures_equals_one_by_one(name, alanine_structure):
    z_ala, x_ala = alanine_structure
    z_p, x_p = _periodic_structure(seed=10)
    cell = triclinic_cell()
    model = MODELS[name]()
    # one isolated molecule and one periodic structure cannot share ``cell``: give the
    # molecule a box so large that no image is within the cutoff
    big = 10.0 * torch.eye(3, dtype=torch.float64)
    out = model.predict(
        torch.cat([z_ala, z_p]),
        torch.cat([x_ala, x_p]),
        torch.tensor([0] * len(z_ala) + [1] * len(z_p)),
        torch.stack([big, cell]),
        stress=True,
    )
    alone = model.predict(z_ala, x_ala)
    periodic = model.predict(z_p, x_p, cell=cell[None], stress=True)
    torch.testing.assert_close(out["energy"], torch.cat([alone["energy"], periodic["energy"]]))
    torch.testing.assert_close(out["forces"], torch.cat([alone["forces"], periodic["forces"]]))
    torch.testing.assert_close(out["stress"][1], periodic["stress"][0])


def test_unknown_element_is_refused(name):
    model = MODELS[name]()
    with pytest.raises(ValueError, match=r"atomic numbers \[26\].*elements"):
        model.bind(torch.tensor([1, 26]))
    with pytest.raises(ValueError, match="bind"):
        MODELS[name]().energy(torch.zeros(1, 2, 3, dtype=torch.float64))
