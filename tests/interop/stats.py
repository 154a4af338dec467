"""Statistics for sampling tests: means with errors from the effective sample size."""

from __future__ import annotations

import numpy as np


def integrated_autocorrelation_time(series: np.ndarray, window_factor: float = 5.0) -> float:
    """τ_int of a 1D series (in samples), with Sokal's automatic window (M ≥ c·τ(M))."""
    x = np.asarray(series, dtype=np.float64) - np.mean(series)
    n = x.size
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    acf /= acf[0]
    tau = 2.0 * np.cumsum(acf) - 1.0
    window = np.arange(n) >= window_factor * tau
    m = int(np.argmax(window)) if window.any() else n - 1
    return max(float(tau[m]), 1.0)


def mean_and_error(series: np.ndarray) -> tuple[float, float, float]:
    """Mean, its standard error from the ESS, and the ESS of a 1D (or (B, T) walkers) series."""
    series = np.atleast_2d(np.asarray(series, dtype=np.float64))
    ess = sum(row.size / integrated_autocorrelation_time(row) for row in series)
    return float(series.mean()), float(series.std() / np.sqrt(ess)), float(ess)
