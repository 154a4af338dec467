"""How far a forecast step is from volume-preserving: log|det J| of the map (x, v) → (x', v').

Hamiltonian dynamics preserves phase-space volume (Liouville), so the exact map over any
interval has log|det J| = 0; Langevin friction γ contracts velocities by e^(−γΔt), i.e.
−3Nγ·Δt. A learned forecaster that regresses to the mean of what it cannot predict contracts
far more; its rollout needs noise to stay warm, and the contraction acts as friction on the
slow motions too. Units: positions nm, velocities nm/ps (the determinant does not depend on
them, since it scales as x'/x · v'/v).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from molsamp.flows.trajcast.model import TrajCast
from molsamp.system import System

StepFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def log_volume_change(step: StepFunction, positions: torch.Tensor, velocities: torch.Tensor) -> torch.Tensor:
    """(B,) log|det ∂(x', v')/∂(x, v)| of ``step`` at B states.

    step : maps (B, N, 3) positions and velocities to the next ones; walkers must not
        interact (the Jacobian is read off per walker)
    positions, velocities : (B, N, 3); float64 is advised (6N backward passes, then a
        determinant of a 6N × 6N matrix)
    """
    if positions.ndim != 3 or positions.shape != velocities.shape or positions.shape[-1] != 3:
        raise ValueError(
            f"positions and velocities must be (B, N, 3) tensors of one shape, got "
            f"{tuple(positions.shape)} and {tuple(velocities.shape)}"
        )
    n_walkers, n_atoms, _ = positions.shape
    x = positions.detach().clone().requires_grad_(True)
    v = velocities.detach().clone().requires_grad_(True)
    x_next, v_next = step(x, v)
    out = torch.cat([x_next, v_next], dim=-1).reshape(n_walkers, 6 * n_atoms)
    rows = []
    for k in range(6 * n_atoms):  # row k of every walker's Jacobian in one backward pass
        gx, gv = torch.autograd.grad(
            out[:, k].sum(), (x, v), retain_graph=k < 6 * n_atoms - 1, allow_unused=True
        )
        gx = torch.zeros_like(x) if gx is None else gx
        gv = torch.zeros_like(v) if gv is None else gv
        rows.append(torch.cat([gx, gv], dim=-1).reshape(n_walkers, 6 * n_atoms))
    jacobian = torch.stack(rows, dim=1)  # (B, 6N out, 6N in), same (atom, xyz|v) order both ways
    return torch.linalg.slogdet(jacobian.detach())[1]


def forecast_log_volume_change(
    model: TrajCast,
    system: System,
    positions: torch.Tensor,
    velocities: torch.Tensor,
    cell: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) log|det J| of one forecast step of ``model`` (network and conservation layer, no
    noise or thermostat) at (B, N, 3) states of ``system``, in the model's dtype."""
    dtype = model.dtype
    z = system.atomic_numbers.to(positions.device)
    masses = system.masses.to(positions.device, dtype)
    cell = None if cell is None else cell.to(positions.device, dtype)

    def step(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dx, v_next = model.forecast(z, masses, x, v, cell, system.pbc)
        return x + dx, v_next

    return log_volume_change(step, positions.to(dtype), velocities.to(dtype))
