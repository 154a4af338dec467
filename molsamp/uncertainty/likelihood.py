"""Gaussian likelihood of energy and force labels, for SG-MCMC over a potential's weights.

−log p(E, F | θ) = Σₛ (Eₛ(θ) − Eₛ)² / 2σ_E² + Σ (F(θ) − F)² / 2σ_F² + const, with the noise
scales σ_E (kJ/mol) and σ_F (kJ/mol/nm) set by the user, e.g. a trained model's validation
RMSE (empirical Bayes; Thaler et al., JCTC 2023).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from molsamp.potentials.graph import GraphPotential
from molsamp.potentials.training import Batch, collate


def energy_force_negative_log_likelihood(
    energy_noise: float, force_noise: float
) -> Callable[[GraphPotential, Batch], tuple[torch.Tensor, int]]:
    """An NLL for :class:`molsamp.integrators.SGMCMC` on batches from
    :func:`molsamp.potentials.training.collate`; noise scales in kJ/mol and kJ/mol/nm."""
    if not energy_noise > 0 or not force_noise > 0:
        raise ValueError(f"energy_noise and force_noise must be > 0, got {energy_noise}, {force_noise}")

    def negative_log_likelihood(model: GraphPotential, batch: Batch) -> tuple[torch.Tensor, int]:
        out = model.predict(
            batch.atomic_numbers,
            batch.positions,
            batch.batch,
            batch.cell,
            create_graph=True,
            pairs=batch.pairs,
        )
        energy_term = (out["energy"] - batch.energy).square().sum() / (2 * energy_noise**2)
        force_term = (out["forces"] - batch.forces).square().sum() / (2 * force_noise**2)
        return energy_term + force_term, len(batch.energy)

    return negative_log_likelihood


def batches_of(structures, size: int, model: GraphPotential, dtype: torch.dtype, device="cpu") -> list[Batch]:
    """Collate ``structures`` into batches of ``size`` with the model's cutoff."""
    return [
        collate(structures[k : k + size], model.r_max, dtype, device) for k in range(0, len(structures), size)
    ]
