"""A 4-atom chain with harmonic bonds and angles and a cosine torsion: exact marginals."""

from __future__ import annotations

import math

import mdtraj
import torch

from molsamp.flows.coordinates import InternalCoordinates, ZMatrix, bond_angle, dihedral
from molsamp.potentials.base import Potential
from molsamp.system import System
from molsamp.units import kT

TEMPERATURE = 300.0
BOND, BOND_SIGMA = 0.15, 0.01  # nm
ANGLE, ANGLE_SIGMA = 1.9, 0.1  # rad
TORSION_BARRIER = 1.5  # kT: V(τ) = barrier · kT · cos τ


class ChainPotential(Potential):
    """Harmonic bonds and angles, V(τ) = c·cos τ, in kJ/mol; NaN where τ ∈ ``nan_window``."""

    n_atoms = 4

    def __init__(self, nan_window: tuple[float, float] | None = None):
        super().__init__()
        self.nan_window = nan_window

    def _energy(self, positions, cell):
        x = positions
        beta_inverse = kT(TEMPERATURE)
        bonds = torch.linalg.vector_norm(x[:, 1:] - x[:, :-1], dim=-1)
        angles = torch.stack(
            [bond_angle(x[:, 0], x[:, 1], x[:, 2]), bond_angle(x[:, 1], x[:, 2], x[:, 3])], 1
        )
        torsion = dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3])
        energy = beta_inverse * (
            ((bonds - BOND) ** 2).sum(1) / (2 * BOND_SIGMA**2)
            + ((angles - ANGLE) ** 2).sum(1) / (2 * ANGLE_SIGMA**2)
            + TORSION_BARRIER * torch.cos(torsion)
        )
        if self.nan_window is not None:
            low, high = self.nan_window
            energy = torch.where(
                (torsion > low) & (torsion < high), torch.full_like(energy, math.nan), energy
            )
        return energy


def chain_system() -> System:
    topology = mdtraj.Topology()
    residue = topology.add_residue("TOY", topology.add_chain())
    atoms = [topology.add_atom(f"C{i}", mdtraj.element.carbon, residue) for i in range(4)]
    for a, b in zip(atoms[:-1], atoms[1:], strict=True):
        topology.add_bond(a, b)
    return System(torch.full((4,), 6), torch.full((4,), 12.0), topology=topology)


def rough_frames(n: int, seed: int) -> torch.Tensor:
    """(n, 4, 3) frames from broadened Gaussians and uniform torsions (not the target)."""
    generator = torch.Generator().manual_seed(seed)
    transform = InternalCoordinates(ZMatrix.from_topology(chain_system().topology))
    normal = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    bonds = BOND + 1.3 * BOND_SIGMA * normal[:, :3]
    angles = ANGLE + 1.3 * ANGLE_SIGMA * normal[:, 3:5]
    torsion = (2 * torch.rand(n, 1, generator=generator, dtype=torch.float64) - 1) * math.pi
    return transform.inverse(torch.cat([bonds, angles, torsion], 1))[0]


def exact_mean(grid: torch.Tensor, log_density: torch.Tensor, values: torch.Tensor) -> float:
    weights = torch.softmax(log_density, 0)
    return float((weights * values).sum())


def exact_bond_mean() -> float:
    d = torch.linspace(BOND - 8 * BOND_SIGMA, BOND + 8 * BOND_SIGMA, 20001, dtype=torch.float64)
    return exact_mean(d, 2 * torch.log(d) - (d - BOND) ** 2 / (2 * BOND_SIGMA**2), d)


def exact_angle_mean() -> float:
    a = torch.linspace(ANGLE - 8 * ANGLE_SIGMA, ANGLE + 8 * ANGLE_SIGMA, 20001, dtype=torch.float64)
    return exact_mean(a, torch.log(torch.sin(a)) - (a - ANGLE) ** 2 / (2 * ANGLE_SIGMA**2), a)


def exact_cos_torsion_mean() -> float:
    t = torch.linspace(-math.pi, math.pi, 20001, dtype=torch.float64)
    return exact_mean(t, -TORSION_BARRIER * torch.cos(t), torch.cos(t))
