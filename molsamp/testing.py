"""Physics assertions shared by molsamp's tests and offered to users.

Statistical checks use the effective sample size (ESS = n / τ_int) so they neither flake on
correlated samples nor pass vacuously.
"""

from __future__ import annotations

import numpy as np
import torch

from molsamp.potentials.base import Potential


def integrated_autocorrelation_time(series: np.ndarray, window_factor: float = 5.0) -> float:
    """τ_int = 1 + 2 Σ ρ(t) with Sokal's self-consistent window (t ≤ c·τ).

    ``series`` is (T,) or (T, W) for W independent chains (their autocorrelations averaged).
    Returns τ in units of the sampling interval (inf for a constant series, so its ESS is 0).
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"need at least 4 samples per chain for an autocorrelation time, got {n}")
    x = x - x.mean(axis=0)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(x, n=size, axis=0)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), axis=0)[:n].mean(axis=1)
    if acf[0] == 0:  # a chain that never moved holds no information: not N samples
        return float("inf")
    rho = acf / acf[0]
    tau = 1.0
    for t in range(1, n):
        tau += 2.0 * rho[t]
        if t >= window_factor * tau:
            break
    return float(max(tau, 1e-3))


def effective_sample_size(series: np.ndarray) -> float:
    """Number of independent samples in (T,) or (T, W) correlated chains: T·W / τ_int."""
    x = np.asarray(series)
    total = x.size
    return total / integrated_autocorrelation_time(x)


def mean_and_standard_error(series: np.ndarray) -> tuple[float, float]:
    """Mean of (T,) or (T, W) chains and its standard error from the ESS."""
    x = np.asarray(series, dtype=np.float64)
    return float(x.mean()), float(x.std() / np.sqrt(effective_sample_size(x)))


def assert_mean_close(series: np.ndarray, expected: float, n_sigma: float = 4.0, label: str = "mean") -> None:
    """Assert the chain mean equals ``expected`` within ``n_sigma`` ESS-based standard errors."""
    mean, error = mean_and_standard_error(series)
    if not abs(mean - expected) <= n_sigma * error:
        raise AssertionError(
            f"{label}: {mean:.6g} ± {error:.2g} differs from {expected:.6g} by "
            f"{abs(mean - expected) / error:.1f} σ (allowed {n_sigma} σ)"
        )


def finite_difference_forces(
    potential: Potential, positions: torch.Tensor, cell: torch.Tensor | None = None, delta: float = 1e-5
) -> torch.Tensor:
    """Forces (B, N, 3) by central differences of the energy, −[E(x+h) − E(x−h)] / 2h."""
    forces = torch.empty_like(positions)
    with torch.no_grad():
        for atom in range(positions.shape[1]):
            for axis in range(3):
                shifted = positions.clone()
                shifted[:, atom, axis] += delta
                plus = potential.energy(shifted, cell)
                shifted[:, atom, axis] -= 2 * delta
                minus = potential.energy(shifted, cell)
                forces[:, atom, axis] = -(plus - minus) / (2 * delta)
    return forces


def assert_forces_match_finite_differences(
    potential: Potential,
    positions: torch.Tensor,
    cell: torch.Tensor | None = None,
    delta: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> None:
    """Assert ``energy_and_forces`` forces equal −∇E by central finite differences (float64)."""
    if positions.dtype != torch.float64:
        raise ValueError("finite-difference checks need float64 positions")
    _, forces = potential.energy_and_forces(positions, cell)
    reference = finite_difference_forces(potential, positions, cell, delta)
    torch.testing.assert_close(forces, reference, rtol=rtol, atol=atol)
