"""Kinetic energy, temperature and Maxwell–Boltzmann velocities."""

from __future__ import annotations

import torch

from molsamp.units import BOLTZMANN_KJ_PER_MOL_K


def kinetic_energy(velocities: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Kinetic energy (B,) in kJ/mol of velocities (B, N, 3) in nm/ps, masses (N,) in amu."""
    m = masses.to(velocities)
    return 0.5 * (m[:, None] * velocities.square()).sum((-2, -1))


def kinetic_temperature(kinetic: torch.Tensor, degrees_of_freedom: int) -> torch.Tensor:
    """Instantaneous temperature in K from kinetic energy in kJ/mol: T = 2K / (n_dof k_B)."""
    return 2.0 * kinetic / (degrees_of_freedom * BOLTZMANN_KJ_PER_MOL_K)


def remove_center_of_mass_velocity(velocities: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Velocities (B, N, 3) with each walker's centre-of-mass velocity subtracted."""
    m = masses.to(velocities)[:, None]
    com = (m * velocities).sum(-2, keepdim=True) / m.sum()
    return velocities - com


def maxwell_boltzmann_velocities(
    masses: torch.Tensor,
    temperature: float,
    n_walkers: int,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float64,
    remove_center_of_mass: bool = False,
) -> torch.Tensor:
    """Velocities (B, N, 3) in nm/ps drawn from the Maxwell–Boltzmann distribution.

    Each component is Gaussian with variance k_B·T/m. Drawn on ``generator``'s device.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 K, got {temperature}")
    device = generator.device
    m = masses.to(device=device, dtype=dtype)
    noise = torch.randn((n_walkers, m.numel(), 3), generator=generator, device=device, dtype=dtype)
    velocities = noise * torch.sqrt(BOLTZMANN_KJ_PER_MOL_K * temperature / m)[:, None]
    if remove_center_of_mass:
        velocities = remove_center_of_mass_velocity(velocities, m)
    return velocities
