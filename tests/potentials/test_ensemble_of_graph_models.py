"""An ensemble of message-passing models in one vectorised pass equals member-by-member
evaluation (the path uncertainty-aware MD takes)."""

from __future__ import annotations

import pytest
import torch

from molsamp.potentials import EnsemblePotential

from .models import MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batched_ensemble_of_graph_models_equals_the_loop(name, alanine):
    system, state, _ = alanine
    members = [MODELS[name](seed=seed).bind(system.atomic_numbers) for seed in range(3)]
    with torch.no_grad():  # members that differ in a buffer too (per-element E0s)
        members[1].atomic_energies.add_(torch.arange(4, dtype=torch.float64))
    batched = EnsemblePotential(members, batched=True)
    looped = EnsemblePotential(members, batched=False)
    walkers = state.positions.double() + 0.005 * torch.randn(
        2, *state.positions.shape[1:], generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    expected = looped.member_energies_and_forces(walkers)
    for _ in range(2):  # the second call reuses the stacked weights
        for got, want in zip(batched.member_energies_and_forces(walkers), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-9)
    with torch.no_grad():  # changed weights are seen (the stacked copy is rebuilt)
        next(members[0].parameters()).mul_(1.1)
    torch.testing.assert_close(
        batched.member_energies_and_forces(walkers)[0], looped.member_energies_and_forces(walkers)[0]
    )
