"""Analytic potentials with known answers: test beds for integrators and samplers."""

from __future__ import annotations

import torch

from molsamp.potentials.base import Potential


class HarmonicPotential(Potential):
    """Independent harmonic wells, E = ½ Σᵢ kᵢ |xᵢ − cᵢ|².

    Parameters
    ----------
    spring_constant : float or (N,) tensor, kJ/mol/nm², > 0
    center : (N, 3) tensor, nm, or None for the origin
    """

    def __init__(self, spring_constant: float | torch.Tensor, center: torch.Tensor | None = None):
        super().__init__()
        k = torch.as_tensor(spring_constant, dtype=torch.float64)
        if not (k > 0).all():
            raise ValueError(f"spring_constant must be > 0 kJ/mol/nm², got {k.tolist()}")
        if k.ndim > 1:
            raise ValueError(f"spring_constant must be a scalar or (N,), got shape {tuple(k.shape)}")
        if center is not None:
            center = torch.as_tensor(center, dtype=torch.float64)
            if center.ndim != 2 or center.shape[-1] != 3:
                raise ValueError(f"center must have shape (N, 3) in nm, got {tuple(center.shape)}")
            self.n_atoms = center.shape[0]
        if k.ndim == 1:
            if self.n_atoms is not None and k.numel() != self.n_atoms:
                raise ValueError(
                    f"spring_constant has {k.numel()} entries but center has {self.n_atoms} atoms"
                )
            self.n_atoms = k.numel()
        self.register_buffer("spring_constant", k)
        self.register_buffer("center", center)

    def _displacement_and_k(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.spring_constant.to(positions)
        k = k[:, None] if k.ndim == 1 else k
        dx = positions if self.center is None else positions - self.center.to(positions)
        return dx, k

    def _energy(self, positions, cell):
        dx, k = self._displacement_and_k(positions)
        return 0.5 * (k * dx.square()).sum(dim=(-2, -1))

    def _energy_and_forces(self, positions, cell):
        dx, k = self._displacement_and_k(positions)
        return 0.5 * (k * dx.square()).sum(dim=(-2, -1)), -k * dx


class DoubleWell(Potential):
    """A double well along x for every atom, harmonic across it.

    E = Σᵢ h·((xᵢ/a)² − 1)² + ½·k⊥·(yᵢ² + zᵢ²): minima at x = ±a, barrier h at x = 0.

    Parameters
    ----------
    barrier : h, kJ/mol, > 0
    minimum : a, nm, > 0
    transverse_spring_constant : k⊥, kJ/mol/nm², > 0
    """

    def __init__(
        self, barrier: float = 5.0, minimum: float = 0.1, transverse_spring_constant: float = 1000.0
    ):
        super().__init__()
        for name, value in [
            ("barrier", barrier),
            ("minimum", minimum),
            ("transverse_spring_constant", transverse_spring_constant),
        ]:
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.barrier = float(barrier)
        self.minimum = float(minimum)
        self.transverse_spring_constant = float(transverse_spring_constant)

    def _energy_and_forces(self, positions, cell):
        x, yz = positions[..., 0], positions[..., 1:]
        u = (x / self.minimum).square() - 1.0
        energy = (self.barrier * u.square()).sum(
            -1
        ) + 0.5 * self.transverse_spring_constant * yz.square().sum((-2, -1))
        fx = -4.0 * self.barrier * u * x / self.minimum**2
        forces = torch.cat([fx[..., None], -self.transverse_spring_constant * yz], dim=-1)
        return energy, forces

    def _energy(self, positions, cell):
        return self._energy_and_forces(positions, cell)[0]


class LennardJones(Potential):
    """Truncated and shifted Lennard-Jones pair potential, optionally periodic.

    E = Σ_{i<j, r<r_c} 4ε[(σ/r)¹² − (σ/r)⁶] − E(r_c), all pairs by the minimum-image
    convention (any cell with r_c ≤ half its smallest perpendicular width). Dense (B, N, N)
    pair tensors: meant for test beds of up to a few hundred atoms.

    Parameters
    ----------
    epsilon : kJ/mol;  sigma : nm;  cutoff : nm (None = no cutoff, non-periodic only)
    periodic : whether the energy uses the cell passed to ``energy``.
    """

    def __init__(self, epsilon: float, sigma: float, cutoff: float | None = None, periodic: bool = False):
        super().__init__()
        if not epsilon > 0 or not sigma > 0:
            raise ValueError(f"epsilon (kJ/mol) and sigma (nm) must be > 0, got {epsilon}, {sigma}")
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f"cutoff must be > 0 nm or None, got {cutoff}")
        if periodic and cutoff is None:
            raise ValueError("a periodic LennardJones needs a cutoff (nm) ≤ half the box length")
        self.epsilon, self.sigma, self.cutoff = float(epsilon), float(sigma), cutoff
        self.requires_cell = periodic
        self.shift = 0.0 if cutoff is None else 4 * epsilon * ((sigma / cutoff) ** 12 - (sigma / cutoff) ** 6)

    def _pair_vectors(self, positions: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
        """Minimum-image vectors rᵢ − rⱼ, (B, N, N, 3), differentiable w.r.t. positions and cell."""
        d = positions[:, :, None, :] - positions[:, None, :, :]
        if self.requires_cell:
            self._check_cutoff_fits(cell)
            cell = cell.to(positions)
            fractional = d @ torch.linalg.inv(cell)
            d = (fractional - torch.round(fractional.detach())) @ cell
        return d

    def _check_cutoff_fits(self, cell: torch.Tensor) -> None:
        """Minimum image is exact when r_c ≤ half the smallest perpendicular width of the cell
        (then at most one image of a pair lies inside the cutoff). Checked once per cell tensor."""
        key = (cell.data_ptr(), cell._version, cell.device)
        if key == getattr(self, "_checked_cell", None):
            return
        with torch.no_grad():
            a, b, c = cell.to(torch.float64)
            volume = torch.abs(torch.dot(a, torch.linalg.cross(b, c)))
            areas = torch.stack(
                [torch.linalg.cross(b, c), torch.linalg.cross(c, a), torch.linalg.cross(a, b)]
            ).norm(dim=1)
            half_width = 0.5 * (volume / areas).min().item()
        if self.cutoff > half_width:
            raise ValueError(
                f"cutoff {self.cutoff} nm exceeds half the smallest cell width {half_width:.4g} nm; "
                "use a smaller cutoff or a bigger box"
            )
        self._checked_cell = key

    def _pair_terms(self, positions, cell):
        d = self._pair_vectors(positions, cell)
        n = positions.shape[1]
        r2 = d.square().sum(-1)
        eye = torch.eye(n, dtype=torch.bool, device=positions.device)
        inside = ~eye if self.cutoff is None else (r2 < self.cutoff**2) & ~eye
        r2_safe = torch.where(inside, r2, torch.ones_like(r2))
        s6 = (self.sigma**2 / r2_safe) ** 3
        return d, r2_safe, s6, inside

    def _energy(self, positions, cell):
        _, _, s6, inside = self._pair_terms(positions, cell)
        pair = torch.where(inside, 4 * self.epsilon * (s6.square() - s6) - self.shift, torch.zeros_like(s6))
        return 0.5 * pair.sum((-2, -1))

    def _energy_and_forces(self, positions, cell):
        d, r2, s6, inside = self._pair_terms(positions, cell)
        zero = torch.zeros_like(s6)
        pair = torch.where(inside, 4 * self.epsilon * (s6.square() - s6) - self.shift, zero)
        scale = torch.where(inside, 24 * self.epsilon * (2 * s6.square() - s6) / r2, zero)
        forces = (scale[..., None] * d).sum(-2)
        return 0.5 * pair.sum((-2, -1)), forces
