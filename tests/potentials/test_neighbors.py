"""Neighbour lists: same pairs as ASE for any cell, gradients through cell, Verlet cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import primitive_neighbor_list

from molsamp.potentials.neighbors import NeighborCache, edge_vectors, neighbor_pairs

from .conftest import random_structure, triclinic_cell


def _pair_set(edge_index, shifts):
    return {
        (int(i), int(j), *map(int, s.round()))
        for i, j, s in zip(edge_index[0], edge_index[1], shifts, strict=True)
    }


def _ase_pairs(x, cell, pbc, cutoff):
    box = np.zeros((3, 3)) if cell is None else cell.numpy()
    i, j, s = primitive_neighbor_list("ijS", pbc, box, x.numpy(), cutoff, self_interaction=False)
    return {(int(a), int(b), *map(int, c)) for a, b, c in zip(i, j, s, strict=True)}


@pytest.mark.parametrize("backend", ["vesin", "torch"])
@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False,) * 3])
def test_pairs_match_ase_for_unwrapped_triclinic(backend, pbc):
    cell = triclinic_cell()
    x = random_structure(12, 0.6, seed=1)
    x = x + torch.tensor([1.3, -2.1, 0.7], dtype=torch.float64)  # far outside the box
    cutoff = 0.45  # longer than half of every box vector: several images
    pairs = neighbor_pairs(x, cutoff, torch.zeros(12, dtype=torch.int64), 1, cell[None], pbc, backend=backend)
    got = _pair_set(pairs.edge_index, pairs.shifts)
    assert got == _ase_pairs(x, cell if any(pbc) else None, pbc, cutoff)
    assert len(got) == pairs.edge_index.shape[1]  # no duplicates


@pytest.mark.parametrize("backend", ["vesin", "torch"])
def test_batch_of_structures_has_offset_indices_and_own_cells(backend):
    cell_a = triclinic_cell()
    cell_b = 1.3 * torch.eye(3, dtype=torch.float64)
    xa, xb = random_structure(7, 0.6, seed=2), random_structure(9, 1.3, seed=3)
    batch = torch.tensor([0] * 7 + [1] * 9)
    pairs = neighbor_pairs(torch.cat([xa, xb]), 0.4, batch, 2, torch.stack([cell_a, cell_b]), backend=backend)
    i, _ = pairs.edge_index
    in_a = i < 7
    pbc = (True,) * 3
    assert _pair_set(pairs.edge_index[:, in_a], pairs.shifts[in_a]) == _ase_pairs(xa, cell_a, pbc, 0.4)
    shifted = pairs.edge_index[:, ~in_a] - 7
    assert _pair_set(shifted, pairs.shifts[~in_a]) == _ase_pairs(xb, cell_b, pbc, 0.4)


_WIDE_FLAT_CHECK = """
import numpy as np, torch
from ase.neighborlist import primitive_neighbor_list
from molsamp.potentials.neighbors import neighbor_pairs
centres = np.random.default_rng(0).uniform(0, 1, size=(11, 3)) * np.array([400.0, 400.0, 0.5])
x = torch.from_numpy(np.concatenate([centres, centres + np.array([0.1, 0.05, 0.0])]))
pairs = neighbor_pairs(x, 0.5, torch.zeros(22, dtype=torch.int64), 1, None, backend="vesin")
got = {(int(i), int(j)) for i, j in pairs.edge_index.T}
i, j = primitive_neighbor_list("ij", (False,) * 3, np.zeros((3, 3)), x.numpy(), 0.5)
assert got == set(zip(i.tolist(), j.tolist())) and len(got) >= 22, got
print("same pairs")
"""


def test_wide_flat_isolated_structure_does_not_kill_the_process():
    """vesin dies of SIGFPE on an isolated 400 × 400 × 0.5 nm structure (an exploding rollout);
    such structures take the torch search and get the same pairs as ASE. In a subprocess, so
    a regression fails this test instead of killing the test run."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _WIDE_FLAT_CHECK], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and "same pairs" in run.stdout, (run.returncode, run.stderr[-2000:])


def test_edge_vectors_differentiable_in_positions_and_cell():
    cell = triclinic_cell().requires_grad_(True)
    x = random_structure(6, 0.6, seed=4).requires_grad_(True)
    batch = torch.zeros(6, dtype=torch.int64)
    pairs = neighbor_pairs(x, 0.4, batch, 1, cell[None])

    def total(x, cell):
        r = edge_vectors(x, pairs.edge_index, pairs.shifts, cell[None], batch)
        return torch.linalg.norm(r, dim=-1).pow(3).sum()

    assert torch.autograd.gradcheck(total, (x, cell))


def test_verlet_cache_rebuilds_only_past_half_skin():
    x = random_structure(10, 0.8, seed=5)
    batch = torch.zeros(10, dtype=torch.int64)
    cell = torch.eye(3, dtype=torch.float64)[None] * 0.8
    cache = NeighborCache(cutoff=0.3, skin=0.1)
    first = cache.pairs(x, batch, 1, cell, (True,) * 3)
    moved = x.clone()
    moved[3, 0] += 0.049  # less than skin / 2
    assert cache.pairs(moved, batch, 1, cell, (True,) * 3) is first
    assert cache.n_builds == 1
    moved[3, 0] += 0.002  # now past skin / 2
    second = cache.pairs(moved, batch, 1, cell, (True,) * 3)
    assert cache.n_builds == 2
    # the cached list holds every pair within the cutoff
    exact = neighbor_pairs(moved, 0.3, batch, 1, cell)
    r = edge_vectors(moved, second.edge_index, second.shifts, cell, batch).norm(dim=-1)
    assert _pair_set(exact.edge_index, exact.shifts) == _pair_set(
        second.edge_index[:, r < 0.3], second.shifts[r < 0.3]
    )
    assert cache.pairs(moved, batch, 1, 1.01 * cell, (True,) * 3) is not second  # new cell


def test_bad_arguments_name_the_field():
    x = random_structure(3, 0.5, seed=6)
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_pairs(x, -1.0, torch.zeros(3, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="cell"):
        neighbor_pairs(x, 0.3, torch.zeros(3, dtype=torch.int64), 1, torch.eye(3))
