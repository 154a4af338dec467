"""Shared fixtures and physics checks for the neural-network potential tests (float64)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


def random_rotation(generator: torch.Generator, reflect: bool = False) -> torch.Tensor:
    """A random (3, 3) orthogonal matrix, det +1 (or −1 with ``reflect``), float64."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = -q
    return q


def triclinic_cell() -> torch.Tensor:
    """A skewed cell (nm, rows are box vectors) smaller than twice a 0.4 nm cutoff."""
    return torch.tensor([[0.62, 0.0, 0.0], [0.17, 0.58, 0.0], [-0.11, 0.13, 0.66]], dtype=torch.float64)


def random_structure(n: int, box: float, seed: int, min_distance: float = 0.09):
    """n points in a box of side ``box`` nm, no two closer than ``min_distance`` nm."""
    generator = torch.Generator().manual_seed(seed)
    points = []
    while len(points) < n:
        x = torch.rand(3, generator=generator, dtype=torch.float64) * box
        if all(torch.linalg.norm(x - p) > min_distance for p in points):
            points.append(x)
    return torch.stack(points)


@pytest.fixture(scope="session")
def alanine_structure():
    """(atomic_numbers (22,), positions (22, 3) nm) of alanine dipeptide."""
    from molsamp.systems import alanine_dipeptide

    system, state, _ = alanine_dipeptide()
    return system.atomic_numbers, state.positions[0]
