"""The GPU-friendly paths of the graph potentials, checked on the CPU: long skin edges kept
instead of dropped, the batched pair search, cached walker graphs and ``use_compile``."""

from __future__ import annotations

import math

import pytest
import torch

from molsamp.potentials.neighbors import _torch_pairs, neighbor_pairs

from .conftest import random_structure
from .models import MODELS

ELEMENTS = torch.tensor([8, 1, 1, 6, 1, 7, 1, 8, 6, 1])


def _walkers(n_walkers: int = 3) -> torch.Tensor:
    return torch.stack([random_structure(10, 0.55, seed=20 + k) for k in range(n_walkers)])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_keeping_skin_edges_beyond_the_cutoff_changes_nothing(name, monkeypatch):
    model = MODELS[name](r_max=0.3).bind(ELEMENTS)
    model._cache.skin = 0.15  # many pairs between r_max and r_max + skin
    x = _walkers()
    dropped = model.energy_and_forces(x)
    pairs = model._cache._pairs  # the Verlet list the call above used
    lengths = (x.reshape(-1, 3)[pairs.edge_index[1]] - x.reshape(-1, 3)[pairs.edge_index[0]]).norm(dim=-1)
    assert (lengths > 0.3).sum() > 10  # the check is not vacuous
    monkeypatch.setattr(model, "_keep_long_edges", lambda device: True)  # what CUDA does
    kept = model.energy_and_forces(x)
    torch.testing.assert_close(kept[0], dropped[0], rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(kept[1], dropped[1], rtol=1e-10, atol=1e-10)


def test_batched_pair_search_equals_the_search_per_structure():
    x = _walkers(4)
    batch = torch.arange(4).repeat_interleave(10)
    pairs = neighbor_pairs(x.reshape(-1, 3), 0.3, batch, 4, backend="torch")
    edges = []
    for s in range(4):
        i, j, _ = _torch_pairs(x[s], 0.3, None, (True,) * 3)
        edges.append(torch.stack([i, j]) + 10 * s)
    assert torch.equal(pairs.edge_index, torch.cat(edges, dim=1))  # same pairs, same order
    assert pairs.shifts.shape == (pairs.edge_index.shape[1], 3) and not pairs.shifts.any()
    reference = neighbor_pairs(x.reshape(-1, 3), 0.3, batch, 4, backend="vesin")
    as_set = {tuple(e) for e in pairs.edge_index.T.tolist()}
    assert as_set == {tuple(e) for e in reference.edge_index.T.tolist()}


def test_walker_graph_follows_a_new_binding():
    model = MODELS["mace"]()
    x = _walkers(2)
    first = model.bind(ELEMENTS).energy(x)
    swapped = ELEMENTS.flip(0)
    second = model.bind(swapped).energy(x)
    fresh = MODELS["mace"]().bind(swapped).energy(x)
    torch.testing.assert_close(second, fresh)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_all_pairs_skin_is_built_once_and_changes_nothing(name, monkeypatch):
    reference = MODELS[name](r_max=0.3).bind(ELEMENTS)
    model = MODELS[name](r_max=0.3).bind(ELEMENTS)
    model._cache.skin = math.inf
    monkeypatch.setattr(model, "_keep_long_edges", lambda device: True)  # what CUDA does
    x = _walkers()
    for shift in (0.0, 0.05, 0.2):  # atoms moving far: still the same pair list
        got, want = model.energy_and_forces(x * (1 + shift)), reference.energy_and_forces(x * (1 + shift))
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-10)
    assert model._cache.n_builds == 1
    assert model._cache._pairs.edge_index.shape[1] == 3 * 10 * 9  # every ordered pair
    with pytest.raises(ValueError, match="isolated"):
        model.energy_and_forces(x, 0.6 * torch.eye(3, dtype=torch.float64))
