"""Importance reweighting: log-weights, Kish ESS, self-normalised estimators with bootstrap
errors, reweighted histograms, free-energy profiles, basin free energies and divergences.

Samples x ~ q reweighted to p ∝ exp(−u) get log w = −u(x) − log q(x). Self-normalised
estimates ⟨f⟩_p ≈ Σ w f / Σ w are consistent; their error bars come from the bootstrap
(Efron, Ann. Stat. 1979; for correlated chains the moving-block bootstrap, Künsch, Ann. Stat.
1989). The Kish effective sample size (Kish, Survey Sampling 1965) is (Σw)² / Σw²; the Pareto
k̂ of the largest weights (Vehtari et al., JMLR 2024) says whether it can be trusted.

Arrays may be numpy arrays or tensors; results are numpy float64. Random resampling draws
from a seeded ``torch.Generator`` the caller passes (no global RNG).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from molsamp.units import kT


def _as_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        raise ValueError(f"{name} must be an array of samples, got a scalar")
    return array


def _check_log_weights(log_weights: Any, n: int | None = None) -> np.ndarray:
    lw = _as_numpy(log_weights, "log_weights")
    if lw.ndim != 1:
        raise ValueError(f"log_weights must have shape (S,), got {lw.shape}")
    if n is not None and lw.shape[0] != n:
        raise ValueError(f"log_weights has {lw.shape[0]} entries but there are {n} samples")
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError(
            "log_weights contain NaN or +inf; give non-finite proposals log weight -inf "
            "(use molsamp.flows.reweighting.log_importance_weights)"
        )
    if not np.isfinite(lw).any():
        raise ValueError("every log weight is -inf (no sample has positive weight); draw more samples")
    return lw


def log_importance_weights(log_target: Any, log_proposal: Any) -> torch.Tensor:
    """log w = log p̃(x) − log q(x) with every non-finite entry mapped to −inf (weight 0).

    Parameters
    ----------
    log_target : (S,) unnormalised log target density, e.g. −u(x) = −E(x)/kT (dimensionless)
    log_proposal : (S,) log density of the proposal at the same samples

    Returns
    -------
    (S,) float64 tensor; NaN, ±inf energies or densities give −inf, never NaN.
    """
    target = torch.as_tensor(log_target, dtype=torch.float64)
    proposal = torch.as_tensor(log_proposal, dtype=torch.float64).to(target.device)
    if target.shape != proposal.shape or target.ndim != 1:
        raise ValueError(
            f"log_target {tuple(target.shape)} and log_proposal {tuple(proposal.shape)} must both be (S,)"
        )
    log_w = target - proposal
    bad = ~torch.isfinite(target) | ~torch.isfinite(proposal) | ~torch.isfinite(log_w)
    return torch.where(bad, torch.full_like(log_w, -math.inf), log_w)


def normalized_weights(log_weights: Any) -> np.ndarray:
    """Self-normalised weights w_i / Σ w (S,), computed stably in log space."""
    lw = _check_log_weights(log_weights)
    shifted = np.exp(lw - lw.max())
    return shifted / shifted.sum()


def kish_ess(log_weights: Any) -> float:
    """Kish effective sample size (Σw)² / Σw² ∈ [1, S] of (S,) log-weights."""
    w = normalized_weights(log_weights)
    return float(1.0 / np.sum(w * w))


def ess_fraction(log_weights: Any) -> float:
    """Kish ESS divided by the number of samples drawn (non-finite ones included)."""
    return kish_ess(log_weights) / len(_as_numpy(log_weights, "log_weights"))


def batch_ess_fractions(log_weights: Any, n_batches: int) -> np.ndarray:
    """(n_batches,) Kish ESS fractions of consecutive equal batches of independent samples.

    Their spread shows how much one draw's ESS depends on a few rare, heavy weights."""
    lw = _as_numpy(log_weights, "log_weights")
    if not 1 <= n_batches <= len(lw):
        raise ValueError(f"n_batches must be in [1, {len(lw)}] (the number of samples), got {n_batches}")
    return np.array([ess_fraction(batch) for batch in np.array_split(lw, n_batches)])


def pareto_k(log_weights: Any) -> float:
    """Shape k̂ of a generalised Pareto fit (scipy, maximum likelihood) to the largest weights.

    The tail of the M = min(S/5, 3√S) largest weights above the next one, as in Pareto-smoothed
    importance sampling (Vehtari et al., JMLR 2024). The weights' variance is finite for
    k < 1/2: below 0.5 the Kish ESS is a fair measure; between 0.5 and 0.7 the estimates still
    converge but the ESS of one draw is erratic and falls slowly with more samples; above 0.7
    importance sampling is not reliable with any practical number of samples.
    """
    from scipy.stats import genpareto

    lw = _check_log_weights(log_weights)
    lw = np.sort(lw[np.isfinite(lw)])
    m = int(min(len(lw) / 5, 3 * math.sqrt(len(lw))))
    if m < 5:
        raise ValueError(f"pareto_k needs at least 25 samples with positive weight, got {len(lw)}")
    weights = np.exp(lw - lw[-1])
    exceedances = weights[-m:] - weights[-m - 1]
    shape, _, _ = genpareto.fit(exceedances, floc=0.0)
    return float(shape)


def log_normalizer(log_weights: Any) -> float:
    """log Ẑ = log mean w: the importance estimate of log ∫ p̃ / ∫ q (biased low by ~var/2)."""
    lw = _check_log_weights(log_weights)
    top = lw.max()
    return float(top + np.log(np.mean(np.exp(lw - top))))


def bootstrap_indices(
    n: int, n_bootstrap: int, generator: torch.Generator, block_size: int = 1
) -> np.ndarray:
    """(n_bootstrap, n) resampling indices; ``block_size`` > 1 gives the moving-block bootstrap
    for correlated chains (choose a few autocorrelation times)."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a seeded torch.Generator, got {type(generator).__name__}")
    if block_size < 1 or block_size > n:
        raise ValueError(f"block_size must be in [1, {n}] samples, got {block_size}")
    n_blocks = math.ceil(n / block_size)
    starts = torch.randint(0, n - block_size + 1, (n_bootstrap, n_blocks), generator=generator)
    indices = starts[:, :, None] + torch.arange(block_size)[None, None, :]
    return indices.reshape(n_bootstrap, -1)[:, :n].numpy()


@dataclass(frozen=True)
class Estimate:
    """A value with its bootstrap standard error (same units as the value)."""

    value: float
    error: float

    def __format__(self, spec: str) -> str:
        spec = spec or ".3g"
        return f"{self.value:{spec}} ± {self.error:{spec}}"


def bootstrap_estimate(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    values: Any,
    log_weights: Any | None,
    generator: torch.Generator,
    n_bootstrap: int = 200,
    block_size: int = 1,
) -> Estimate:
    """A statistic of weighted samples and its bootstrap standard error.

    Parameters
    ----------
    statistic : f(values (S, ...), log_weights (S,)) -> float
    values : (S, ...) samples
    log_weights : (S,) log-weights, or None for unweighted samples (all zero)
    generator : seeded torch.Generator for the resampling
    n_bootstrap : number of resamples
    block_size : > 1 for correlated chains (moving-block bootstrap)
    """
    x = _as_numpy(values, "values")
    lw = np.zeros(x.shape[0]) if log_weights is None else _check_log_weights(log_weights, x.shape[0])
    value = statistic(x, lw)
    replicas = []
    for idx in bootstrap_indices(x.shape[0], n_bootstrap, generator, block_size):
        if np.isfinite(lw[idx]).any():
            replicas.append(statistic(x[idx], lw[idx]))
    replicas = np.asarray(replicas)
    replicas = replicas[np.isfinite(replicas)]
    error = float(replicas.std(ddof=1)) if replicas.size > 1 else math.inf
    return Estimate(float(value), error)


def _weighted_mean(x: np.ndarray, lw: np.ndarray) -> float:
    w = normalized_weights(lw)
    return float(np.einsum("s,s->", w, x))  # einsum: no BLAS threads to contend for


def weighted_mean(
    values: Any,
    log_weights: Any | None,
    generator: torch.Generator,
    n_bootstrap: int = 200,
    block_size: int = 1,
) -> Estimate:
    """Self-normalised estimate Σ w f / Σ w of (S,) values with a bootstrap error."""
    x = _as_numpy(values, "values")
    if x.ndim != 1:
        raise ValueError(f"values must have shape (S,), got {x.shape}; reduce to one observable first")
    return bootstrap_estimate(_weighted_mean, x, log_weights, generator, n_bootstrap, block_size)


def weighted_histogram(
    values: Any,
    log_weights: Any | None = None,
    bins: int = 64,
    ranges: Any = ((-math.pi, math.pi), (-math.pi, math.pi)),
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reweighted probability per bin (sums to 1 over the bins).

    Parameters
    ----------
    values : (S,) or (S, D) samples (D = 1 or 2), e.g. φ/ψ in radians
    log_weights : (S,) or None (unweighted)
    bins : bins per dimension
    ranges : D (low, high) pairs; samples outside are dropped (their weight is lost)

    Returns
    -------
    probabilities (bins,) or (bins, bins), and the D bin-edge arrays
    """
    x = _as_numpy(values, "values")
    x = x[:, None] if x.ndim == 1 else x
    ranges = np.asarray(ranges, dtype=np.float64).reshape(-1, 2)[: x.shape[1]]
    if ranges.shape[0] != x.shape[1]:
        raise ValueError(
            f"ranges needs one (low, high) pair per dimension ({x.shape[1]}), got {ranges.shape[0]}"
        )
    w = None if log_weights is None else normalized_weights(_check_log_weights(log_weights, x.shape[0]))
    finite = np.isfinite(x).all(axis=1)
    histogram, edges = np.histogramdd(
        x[finite], bins=bins, range=[tuple(r) for r in ranges], weights=None if w is None else w[finite]
    )
    total = histogram.sum()
    if total <= 0:
        raise ValueError("no sample falls inside ranges; check the units (radians) and the ranges")
    return histogram / total, list(edges)


def free_energy_profile(
    values: Any,
    temperature: float,
    log_weights: Any | None = None,
    bins: int = 64,
    ranges: Any = ((-math.pi, math.pi), (-math.pi, math.pi)),
) -> tuple[np.ndarray, list[np.ndarray]]:
    """F = −kT ln p per bin in kJ/mol (minimum 0, empty bins +inf); 1D or 2D as ``values``.

    temperature in K. Returns the profile and the bin edges.
    """
    probabilities, edges = weighted_histogram(values, log_weights, bins, ranges)
    with np.errstate(divide="ignore"):
        free_energy = -kT(temperature) * np.log(probabilities)
    return free_energy - free_energy[np.isfinite(free_energy)].min(), edges


@dataclass(frozen=True)
class Basin:
    """A rectangle on the (φ, ψ) torus in degrees; ranges may wrap (low > high means through 180°)."""

    name: str
    phi_deg: tuple[float, float]
    psi_deg: tuple[float, float]

    def contains(self, phi: Any, psi: Any) -> np.ndarray:
        """Boolean mask (S,) of samples whose φ, ψ (radians) lie in the basin."""
        return _in_range(np.degrees(_as_numpy(phi, "phi")), self.phi_deg) & _in_range(
            np.degrees(_as_numpy(psi, "psi")), self.psi_deg
        )


def _in_range(angle_deg: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    if low <= high:
        return (angle_deg >= low) & (angle_deg < high)
    return (angle_deg >= low) | (angle_deg < high)


ALANINE_BASINS = {
    "C7eq": Basin("C7eq", (-180.0, 0.0), (50.0, -120.0)),  # C7eq/C5/PII, the β region; ψ wraps
    "beta": Basin("beta", (-180.0, 0.0), (50.0, -120.0)),
    "alphaR": Basin("alphaR", (-180.0, 0.0), (-120.0, 50.0)),
    "C7ax": Basin("C7ax", (0.0, 180.0), (-180.0, 0.0)),
    "alphaL": Basin("alphaL", (0.0, 180.0), (0.0, 180.0)),
    "phi_positive": Basin("phi_positive", (0.0, 180.0), (-180.0, 180.0)),
}
"""Alanine-dipeptide basins in degrees: φ < 0 is split at ψ = 50° and −120° into β (= C7eq,
C5, PII) and αR; φ > 0 at ψ = 0° into C7ax (ψ < 0) and αL."""


def basin_free_energy_difference(
    in_a: Any,
    in_b: Any,
    temperature: float,
    generator: torch.Generator,
    log_weights: Any | None = None,
    n_bootstrap: int = 200,
    block_size: int = 1,
) -> Estimate:
    """ΔF = F_b − F_a = −kT ln(P_b / P_a) in kJ/mol, with a bootstrap error.

    Parameters
    ----------
    in_a, in_b : (S,) boolean masks of the samples in basins a and b
    temperature : K
    generator : seeded torch.Generator for the bootstrap
    log_weights : (S,) log-weights or None (unweighted samples, e.g. MD)
    block_size : > 1 for correlated chains (MD): a few autocorrelation times in frames

    A resample with no weight in a basin gives ±inf and is dropped from the error estimate; an
    empty basin in the full sample raises, naming the basin.
    """
    masks = np.stack([_as_numpy(in_a, "in_a"), _as_numpy(in_b, "in_b")], axis=1)
    lw = np.zeros(masks.shape[0]) if log_weights is None else _check_log_weights(log_weights, masks.shape[0])
    for column, name in enumerate(("in_a", "in_b")):
        if not (masks[:, column].astype(bool) & np.isfinite(lw)).any():
            raise ValueError(f"basin {name} holds no sample with positive weight; ΔF is undefined")
    beta_inverse = kT(temperature)

    def delta_f(m: np.ndarray, w: np.ndarray) -> float:
        p = normalized_weights(w)
        with np.errstate(divide="ignore"):
            in_b, in_a = np.einsum("s,s->", p, m[:, 1]), np.einsum("s,s->", p, m[:, 0])
            return float(-beta_inverse * (np.log(in_b) - np.log(in_a)))

    return bootstrap_estimate(delta_f, masks, lw, generator, n_bootstrap, block_size)


def _smoothed(counts: np.ndarray, pseudocount: float) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if (counts < 0).any():
        raise ValueError("histogram counts must be >= 0")
    smoothed = counts + pseudocount
    total = smoothed.sum()
    if total <= 0:
        raise ValueError("histogram is empty and pseudocount is 0; give counts or a pseudocount > 0")
    return smoothed / total


def kl_divergence(p_counts: Any, q_counts: Any, pseudocount: float = 1.0) -> float:
    """KL(p ‖ q) in nats of two histograms of counts (same shape), each bin + ``pseudocount``.

    Weighted histograms should be given as effective counts (probabilities × Kish ESS) so a
    pseudocount means the same for both. A 64×64 KL needs ≳1e5 samples to mean anything;
    compare against :func:`half_vs_half_divergences` of the reference.
    """
    p, q = _smoothed(p_counts, pseudocount), _smoothed(q_counts, pseudocount)
    if p.shape != q.shape:
        raise ValueError(f"histograms must have the same shape, got {p.shape} and {q.shape}")
    return float(np.sum(p * (np.log(p) - np.log(q))))


def js_divergence(p_counts: Any, q_counts: Any, pseudocount: float = 0.0) -> float:
    """Jensen–Shannon divergence in nats (0 … ln 2) of two histograms (Lin, IEEE TIT 1991)."""
    p, q = _smoothed(p_counts, pseudocount), _smoothed(q_counts, pseudocount)
    if p.shape != q.shape:
        raise ValueError(f"histograms must have the same shape, got {p.shape} and {q.shape}")
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pm = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_qm = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(0.5 * (kl_pm + kl_qm))


def effective_counts(
    values: Any, log_weights: Any | None = None, bins: int = 64, ranges: Any = None
) -> np.ndarray:
    """Histogram as effective counts: probabilities × (Kish ESS, or S when unweighted)."""
    ranges = ((-math.pi, math.pi), (-math.pi, math.pi)) if ranges is None else ranges
    probabilities, _ = weighted_histogram(values, log_weights, bins, ranges)
    n = len(_as_numpy(values, "values")) if log_weights is None else kish_ess(log_weights)
    return probabilities * n


def half_vs_half_divergences(
    values: Any, bins: int = 64, pseudocount: float = 1.0, ranges: Any = None
) -> dict[str, float]:
    """JS and KL between the first and second half of a reference chain: the noise floor a
    model's divergence from that reference cannot be expected to beat."""
    x = _as_numpy(values, "values")
    half = x.shape[0] // 2
    first = effective_counts(x[:half], None, bins, ranges)
    second = effective_counts(x[half : 2 * half], None, bins, ranges)
    return {
        "js": js_divergence(first, second, pseudocount),
        "kl": kl_divergence(first, second, pseudocount),
    }


def matched_ess_js_floor(
    values: Any,
    ess: float,
    tau_frames: float,
    bins: int = 64,
    pseudocount: float = 1.0,
    ranges: Any = None,
    windows: int = 20,
) -> dict[str, float]:
    """JS an exact sampler with ``ess`` effective samples scores against this reference.

    A chain's histogram is given to :func:`js_divergence` as probabilities × its ESS, so with a
    pseudocount its JS grows as its ESS shrinks; the half-vs-half floor (every frame counted)
    is then no yardstick. Here windows of the reference holding ``ess`` effective samples
    (ess × ``tau_frames`` frames, τ of the reference's slowest CV) are scored the same way
    against the other half of the reference. values : (S, 2) angles of a correlated reference
    chain. Returns the windows' median and 95th-percentile JS, the window length and count;
    ``capped`` is True where the window had to be cut to half the reference: it then holds
    fewer effective samples than ``ess``, so the floor is too lenient and a longer reference
    is needed.
    """
    x = _as_numpy(values, "values")
    if not ess > 0 or not tau_frames > 0:
        raise ValueError(f"ess and tau_frames must be > 0, got {ess} and {tau_frames}")
    half = x.shape[0] // 2
    wanted = int(math.ceil(ess * tau_frames))
    length = min(wanted, half)
    halves = (x[:half], x[half : 2 * half])
    scores = []
    for own, other in (halves, halves[::-1]):
        # counted as the whole reference, so the pseudocount weighs as it does for the chain
        other_counts = effective_counts(other, None, bins, ranges) * (x.shape[0] / half)
        for start in np.linspace(0, half - length, max(1, windows // 2)).round().astype(int):
            window = own[start : start + length]
            counts = effective_counts(window, None, bins, ranges) / length * ess
            scores.append(js_divergence(counts, other_counts, pseudocount))
    return {
        "js_median": float(np.median(scores)),
        "js_95": float(np.quantile(scores, 0.95)),
        "window_frames": length,
        "windows": len(scores),
        "capped": wanted > half,
    }
