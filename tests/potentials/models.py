"""Small float64 models for the physics tests (small so the tests stay fast on 2 cores)."""

from __future__ import annotations

import torch

from molsamp.potentials import MACE, TensorNet


def small_mace(elements=(1, 6, 7, 8), r_max=0.4, seed=0) -> MACE:
    torch.manual_seed(seed)
    return MACE(
        elements,
        r_max=r_max,
        hidden_irreps="8x0e+8x1o",
        radial_mlp=(16, 16),
        avg_num_neighbors=8.0,
        dtype=torch.float64,
    )


def small_tensornet(elements=(1, 6, 7, 8), r_max=0.4, seed=0) -> TensorNet:
    torch.manual_seed(seed)
    return TensorNet(elements, r_max=r_max, hidden_channels=8, readout_hidden=16, dtype=torch.float64)


MODELS = {"mace": small_mace, "tensornet": small_tensornet}
