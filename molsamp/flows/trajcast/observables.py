"""What a forecast rollout is judged by: radial distribution, velocity autocorrelation and
diffusion, and the kinetic-energy distribution against the canonical gamma law.

Arrays are numpy, float64; positions nm, velocities nm/ps, time ps, energies kJ/mol.
"""

from __future__ import annotations

import math

import numpy as np

from molsamp.testing import effective_sample_size
from molsamp.units import BOLTZMANN_KJ_PER_MOL_K


def radial_distribution(
    positions: np.ndarray, cell: np.ndarray, r_max: float, bins: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """g(r) of (F, N, 3) frames in a periodic (3, 3) cell (minimum image, r_max ≤ half the
    smallest cell width); returns (bin centres (bins,) nm, g (bins,))."""
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    inverse = np.linalg.inv(cell)
    n_frames, n_atoms, _ = positions.shape
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.zeros(bins)
    upper = np.triu_indices(n_atoms, 1)
    for x in positions:
        d = x[:, None, :] - x[None, :, :]
        f = d @ inverse
        d = (f - np.round(f)) @ cell
        r = np.sqrt((d[upper] ** 2).sum(-1))
        counts += np.histogram(r, edges)[0]
    volume = abs(np.linalg.det(cell))
    shell = 4.0 / 3.0 * math.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    ideal = shell * (n_atoms - 1) / volume * n_atoms / 2.0
    return 0.5 * (edges[1:] + edges[:-1]), counts / (n_frames * ideal)


def rdf_distance(g: np.ndarray, reference: np.ndarray, r: np.ndarray) -> float:
    """∫|g − g_ref| dr / ∫ g_ref dr over the common grid: 0 for identical structure."""
    dr = np.gradient(r)
    return float((np.abs(g - reference) * dr).sum() / (reference * dr).sum())


def unwrap(positions: np.ndarray, cell: np.ndarray | None) -> np.ndarray:
    """Continuous trajectory from (F, N, 3) wrapped frames: each frame-to-frame displacement is
    taken by minimum image (frames must be closer than half a cell width apart)."""
    positions = np.asarray(positions, dtype=np.float64)
    if cell is None:
        return positions.copy()
    cell = np.asarray(cell, dtype=np.float64)
    inverse = np.linalg.inv(cell)
    steps = np.diff(positions, axis=0)
    f = steps @ inverse
    steps = (f - np.round(f)) @ cell
    return np.concatenate([positions[:1], positions[:1] + np.cumsum(steps, axis=0)])


def mean_squared_displacement(unwrapped: np.ndarray, max_lag: int) -> np.ndarray:
    """MSD (max_lag + 1,) nm² of (F, N, 3) unwrapped frames, averaged over origins and atoms,
    after removing the centre-of-geometry drift of every frame."""
    x = unwrapped - unwrapped.mean(axis=1, keepdims=True)
    msd = np.zeros(max_lag + 1)
    for lag in range(1, max_lag + 1):
        msd[lag] = ((x[lag:] - x[:-lag]) ** 2).sum(-1).mean()
    return msd


def diffusion_from_msd(msd: np.ndarray, frame_time: float, fit_from: float = 0.5) -> float:
    """D (nm²/ps) from the slope of MSD = 6 D t over the lags past ``fit_from`` of the range."""
    t = np.arange(len(msd)) * frame_time
    keep = t >= fit_from * t[-1]
    slope = np.polyfit(t[keep], msd[keep], 1)[0]
    return float(slope / 6.0)


def velocity_autocorrelation(velocities: np.ndarray, max_lag: int) -> np.ndarray:
    """⟨v(0)·v(t)⟩ (max_lag + 1,) nm²/ps² of (F, N, 3) frames, over origins and atoms."""
    v = np.asarray(velocities, dtype=np.float64)
    return np.array([(v[: len(v) - lag] * v[lag:]).sum(-1).mean() for lag in range(max_lag + 1)])


def diffusion_from_vacf(vacf: np.ndarray, frame_time: float) -> float:
    """Green–Kubo D = (1/3) ∫ ⟨v(0)·v(t)⟩ dt (trapezoid), nm²/ps."""
    return float(np.trapezoid(vacf, dx=frame_time) / 3.0)


def canonical_kinetic_energy_check(kinetic: np.ndarray, degrees_of_freedom: int, temperature: float) -> dict:
    """Compare a (T,) or (T, W) kinetic-energy series with the canonical gamma law (shape
    N_f/2, scale k_B T): mean and variance with ESS-based standard errors (n σ away), and the
    Kolmogorov–Smirnov distance of the histogram to the gamma CDF."""
    from scipy import stats

    k = np.asarray(kinetic, dtype=np.float64)
    kt = BOLTZMANN_KJ_PER_MOL_K * temperature
    mean_expected = 0.5 * degrees_of_freedom * kt
    var_expected = 0.5 * degrees_of_freedom * kt**2
    ess = effective_sample_size(k)
    mean = float(k.mean())
    deviation2 = (k - mean_expected) ** 2
    var = float(deviation2.mean())
    ess_var = effective_sample_size(deviation2)
    mean_error = float(k.std() / math.sqrt(ess))
    var_error = float(deviation2.std() / math.sqrt(ess_var))
    ks = stats.kstest(k.ravel(), stats.gamma(a=0.5 * degrees_of_freedom, scale=kt).cdf).statistic
    temperature_series = 2.0 * k / (degrees_of_freedom * BOLTZMANN_KJ_PER_MOL_K)
    return {
        "degrees_of_freedom": int(degrees_of_freedom),
        "mean_kJ_per_mol": mean,
        "mean_expected": mean_expected,
        "mean_sigma_away": abs(mean - mean_expected) / mean_error,
        "variance": var,
        "variance_expected": var_expected,
        "variance_relative_error": var / var_expected - 1.0,
        "variance_sigma_away": abs(var - var_expected) / var_error,
        "ess": ess,
        "ks_distance": float(ks),
        "temperature_mean_K": float(temperature_series.mean()),
        "temperature_std_K": float(temperature_series.std()),
        "temperature_std_expected_K": temperature * math.sqrt(2.0 / degrees_of_freedom),
    }
