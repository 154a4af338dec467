"""Physics around the forecaster: conserved momenta, periodic wrapping and the stochastic
velocity-rescaling thermostat. All functions work on B walkers, (B, N, 3) tensors, and are
differentiable (the conservation layer sits inside training).

Units: positions nm, velocities nm/ps, masses amu, time ps, energies kJ/mol, temperature K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from molsamp.integrators.base import as_generator, require_positive
from molsamp.units import BOLTZMANN_KJ_PER_MOL_K


def _weights(masses: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = masses.to(like)[:, None]  # (N, 1)
    return m, m.sum()


def center_of_mass(positions: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """(B, 1, 3) mass-weighted mean of (B, N, 3) positions (or velocities), same units."""
    m, total = _weights(masses, positions)
    return (m * positions).sum(-2, keepdim=True) / total


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cross(a, b, dim=-1)


def angular_momentum(positions: torch.Tensor, velocities: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """(B, 3) angular momentum about the centre of mass, amu·nm²/ps, in the COM frame."""
    m, _ = _weights(masses, positions)
    r = positions - center_of_mass(positions, masses)
    u = velocities - center_of_mass(velocities, masses)
    return (m * _cross(r, u)).sum(-2)


def _rigid_rotation(
    positions: torch.Tensor, masses: torch.Tensor, torque_free_l: torch.Tensor
) -> torch.Tensor:
    """Velocities ω × r (B, N, 3) of the rigid rotation about the COM whose angular momentum
    is ``torque_free_l`` (B, 3): ω = I⁻¹ L, I the inertia tensor at ``positions``. A walker
    whose inertia tensor is singular (collapsed or non-finite positions) gets NaN velocities,
    for the caller's non-finite checks, instead of an error that would stop every walker."""
    m, _ = _weights(masses, positions)
    r = positions - center_of_mass(positions, masses)
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    inertia = (
        m[..., None] * (r.square().sum(-1)[..., None, None] * eye - r[..., :, None] * r[..., None, :])
    ).sum(-3)
    omega, info = torch.linalg.solve_ex(inertia, torque_free_l[..., None])  # no host sync on CUDA
    omega = torch.where(info[..., None] == 0, omega[..., 0], math.nan)
    return _cross(omega[:, None, :].expand_as(r), r)


def conserve(
    masses: torch.Tensor,
    positions: torch.Tensor,
    velocities: torch.Tensor,
    displacement: torch.Tensor,
    new_velocities: torch.Tensor,
    interval: float,
    angular: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The conservation layer: project a forecast onto the conserved momenta of the input.

    * total linear momentum of ``new_velocities`` := that of ``velocities`` (subtract the
      mass-weighted excess, spread in proportion to mass);
    * centre-of-mass displacement := P·Δt / M (no drift of the COM beyond free flight);
    * with ``angular`` (isolated molecules): the angular momentum about the new COM at the new
      positions := the input's, by adding the rigid rotation ω × r that makes up the difference
      (it carries no linear momentum, so both constraints hold together).

    Every correction is built from masses, cross products and the inertia tensor, so the layer
    is E(3)-equivariant (also under reflections) and permutation-equivariant.

    Parameters
    ----------
    masses : (N,) amu
    positions, velocities : (B, N, 3) input state, nm and nm/ps
    displacement, new_velocities : (B, N, 3) the raw forecast, nm and nm/ps
    interval : Δt, ps
    angular : also conserve angular momentum (needs ≥ 3 non-collinear atoms)

    Returns
    -------
    (displacement, new_velocities), corrected, (B, N, 3) each
    """
    com_velocity = center_of_mass(velocities, masses)  # P / M
    new_velocities = new_velocities - center_of_mass(new_velocities, masses) + com_velocity
    displacement = displacement - center_of_mass(displacement, masses) + interval * com_velocity
    if angular:
        target = angular_momentum(positions, velocities, masses)
        moved = positions + displacement
        excess = target - angular_momentum(moved, new_velocities, masses)
        new_velocities = new_velocities + _rigid_rotation(moved, masses, excess)
    return displacement, new_velocities


def wrap_positions(
    positions: torch.Tensor, cell: torch.Tensor, pbc: Sequence[bool] = (True, True, True)
) -> torch.Tensor:
    """Positions (B, N, 3) nm mapped into the cell (fractional coordinates in [0, 1)) along
    the periodic box vectors; ``cell`` (3, 3) nm with box vectors as rows."""
    cell = cell.to(positions)
    fractional = positions @ torch.linalg.inv(cell)
    periodic = torch.tensor([bool(p) for p in pbc], device=positions.device)
    fractional = torch.where(periodic, fractional - torch.floor(fractional), fractional)
    return fractional @ cell


def minimum_image(
    vectors: torch.Tensor, cell: torch.Tensor | None, pbc: Sequence[bool] = (True, True, True)
) -> torch.Tensor:
    """Difference vectors (…, 3) nm reduced to their nearest periodic image (no-op without a
    cell); exact for displacements shorter than half the smallest cell width."""
    if cell is None:
        return vectors
    cell = cell.to(vectors)
    fractional = vectors @ torch.linalg.inv(cell)
    periodic = torch.tensor([bool(p) for p in pbc], device=vectors.device)
    fractional = torch.where(periodic, fractional - torch.round(fractional), fractional)
    return fractional @ cell


def split_motion(
    positions: torch.Tensor, velocities: torch.Tensor, masses: torch.Tensor, angular: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, internal) parts of (B, N, 3) velocities: kept = the COM motion (+ with ``angular``
    the rigid rotation about the COM), internal = the rest, which carries no linear (and no
    angular) momentum."""
    kept = center_of_mass(velocities, masses).expand_as(velocities)
    if angular:
        kept = kept + _rigid_rotation(positions, masses, angular_momentum(positions, velocities, masses))
    return kept, velocities - kept


def conserved_degrees_of_freedom(angular: bool) -> int:
    """Degrees of freedom fixed by the conservation layer: 3 (linear momentum) + 3 (angular)."""
    return 6 if angular else 3


class _MomentumConservingThermostat:
    """Shared set-up of the thermostats below: they act on the internal velocities only (the
    COM motion and, with ``angular``, the rigid rotation are kept exactly).

    Parameters
    ----------
    temperature : K
    time_constant : τ, ps (relaxation time; large τ perturbs dynamics least)
    generator : seeded ``torch.Generator`` (on the velocities' device) or an int seed
    angular : keep the angular momentum too (isolated molecules)
    """

    def __init__(
        self,
        temperature: float,
        time_constant: float,
        generator: torch.Generator | int,
        *,
        angular: bool = False,
    ):
        self.temperature = require_positive("temperature", temperature, "K")
        self.time_constant = require_positive("time_constant", time_constant, "ps")
        self.generator = as_generator(generator)
        self.angular = bool(angular)

    def degrees_of_freedom(self, n_atoms: int) -> int:
        return 3 * n_atoms - conserved_degrees_of_freedom(self.angular)

    def _free_degrees_of_freedom(self, n_atoms: int) -> int:
        n_dof = self.degrees_of_freedom(n_atoms)
        if n_dof < 1:
            raise ValueError(f"{n_atoms} atoms leave no free degrees of freedom to thermostat")
        return n_dof

    def split(
        self, positions: torch.Tensor, velocities: torch.Tensor, masses: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept, internal) parts of (B, N, 3) velocities (:func:`split_motion`)."""
        return split_motion(positions, velocities, masses, self.angular)


class StochasticVelocityRescaling(_MomentumConservingThermostat):
    """Canonical sampling through velocity rescaling (Bussi, Donadio & Parrinello, J. Chem.
    Phys. 126, 014101, 2007), on the degrees of freedom the conservation layer leaves free.

    The velocities are split into the centre-of-mass motion, (with ``angular``) the rigid
    rotation about the COM, and the internal rest; only the rest is rescaled, so total linear
    and angular momentum stay exactly as they were, and its kinetic energy K follows the exact
    solution of dK = (K̄ − K) dt/τ + 2 √(K K̄ / N_f) dW / √τ with N_f = 3N − 3 (− 3 with
    ``angular``) and K̄ = N_f k_B T / 2. Its stationary law is the canonical one, a gamma
    distribution with shape N_f / 2 and scale k_B T.
    """

    def apply(
        self, positions: torch.Tensor, velocities: torch.Tensor, masses: torch.Tensor, interval: float
    ) -> torch.Tensor:
        """Velocities (B, N, 3) nm/ps after a thermostat step of ``interval`` ps."""
        n_dof = self._free_degrees_of_freedom(velocities.shape[-2])
        kept, internal = self.split(positions, velocities, masses)
        m, _ = _weights(masses, velocities)
        kinetic = 0.5 * (m * internal.square()).sum((-2, -1))  # (B,)
        target = 0.5 * n_dof * BOLTZMANN_KJ_PER_MOL_K * self.temperature
        c = math.exp(-interval / self.time_constant)
        noise = torch.randn(
            (velocities.shape[0], n_dof),
            generator=self.generator,
            device=velocities.device,
            dtype=velocities.dtype,
        )
        r1 = noise[:, 0]
        new_kinetic = (
            c * kinetic
            + (1.0 - c) * target * noise.square().sum(-1) / n_dof
            + 2.0 * r1 * torch.sqrt(c * (1.0 - c) * target * kinetic / n_dof)
        )
        alpha = torch.sqrt(new_kinetic / kinetic.clamp_min(torch.finfo(kinetic.dtype).tiny))
        return kept + alpha[:, None, None] * internal


class LocalLangevinThermostat(_MomentumConservingThermostat):
    """Per-atom Langevin (Ornstein–Uhlenbeck) thermostat on the internal velocities:
    v ← c·v + √(1 − c²)·P ξ, c = e^{−Δt/τ}, ξᵢ ~ N(0, k_B T/mᵢ), P the mass-weighted projection
    off the conserved momenta (:func:`split_motion`). Its stationary law is the canonical
    (Maxwell–Boltzmann) one on the free degrees of freedom.

    Unlike :class:`StochasticVelocityRescaling`, which rescales all atoms by one factor, it
    pulls every atom to the target temperature on its own: a forecaster that heats some atoms
    (stiff X–H bonds) and cools others cannot keep that imbalance.
    """

    def apply(
        self, positions: torch.Tensor, velocities: torch.Tensor, masses: torch.Tensor, interval: float
    ) -> torch.Tensor:
        """Velocities (B, N, 3) nm/ps after a thermostat step of ``interval`` ps."""
        self._free_degrees_of_freedom(velocities.shape[-2])
        kept, internal = self.split(positions, velocities, masses)
        m, _ = _weights(masses, velocities)
        c = math.exp(-interval / self.time_constant)
        xi = torch.randn(
            velocities.shape, generator=self.generator, device=velocities.device, dtype=velocities.dtype
        ) * torch.sqrt(BOLTZMANN_KJ_PER_MOL_K * self.temperature / m)
        _, kick = self.split(positions, xi, masses)
        return kept + c * internal + math.sqrt(1.0 - c * c) * kick


THERMOSTATS = {"bussi": StochasticVelocityRescaling, "langevin": LocalLangevinThermostat}
