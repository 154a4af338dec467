"""Reweighting on a 2D Gaussian mixture whose normaliser, mean and basin weights are exact."""

import math

import numpy as np
import pytest
import torch

from molsamp.flows.reweighting import (
    ALANINE_BASINS,
    basin_free_energy_difference,
    batch_ess_fractions,
    bootstrap_indices,
    effective_counts,
    ess_fraction,
    free_energy_profile,
    half_vs_half_divergences,
    js_divergence,
    kish_ess,
    kl_divergence,
    log_importance_weights,
    log_normalizer,
    matched_ess_js_floor,
    pareto_k,
    weighted_mean,
)
from molsamp.units import kT

TEMPERATURE = 300.0
AMPLITUDES = torch.tensor([1.0, 3.0], dtype=torch.float64)  # unnormalised: Z = 4
CENTRES = torch.tensor([[-1.5, 0.0], [1.0, 0.5]], dtype=torch.float64)
SIGMA = 0.5
PROPOSAL_SIGMA = 2.0


def log_target(x: torch.Tensor) -> torch.Tensor:
    """log p̃ of the mixture Σ a_k N(μ_k, σ²I) in 2D (∫ p̃ = Σ a_k = 4)."""
    squared = ((x[:, None, :] - CENTRES) ** 2).sum(-1)
    log_normal = -squared / (2 * SIGMA**2) - math.log(2 * math.pi * SIGMA**2)
    return torch.logsumexp(log_normal + AMPLITUDES.log(), dim=1)


def proposal_samples(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = PROPOSAL_SIGMA * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    log_q = -(x**2).sum(-1) / (2 * PROPOSAL_SIGMA**2) - math.log(2 * math.pi * PROPOSAL_SIGMA**2)
    return x, log_q


def exact_probability_right() -> float:
    """P(x₀ > 0) under the normalised mixture."""
    phi = 0.5 * (1 + torch.erf(CENTRES[:, 0] / (SIGMA * math.sqrt(2))))
    return float((AMPLITUDES * phi).sum() / AMPLITUDES.sum())


@pytest.fixture(scope="module")
def weighted():
    x, log_q = proposal_samples(20_000, seed=1)
    return x, log_importance_weights(log_target(x), log_q)


def test_non_finite_energies_and_densities_get_zero_weight_never_nan():
    log_p = torch.tensor([0.0, math.nan, -math.inf, math.inf, 1.0], dtype=torch.float64)
    log_q = torch.tensor([0.0, 0.0, 0.0, 0.0, math.nan], dtype=torch.float64)
    log_w = log_importance_weights(log_p, log_q)
    assert not torch.isnan(log_w).any()
    assert log_w.tolist() == [0.0, -math.inf, -math.inf, -math.inf, -math.inf]
    assert kish_ess(log_w) == pytest.approx(1.0)
    assert ess_fraction(log_w) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="log_weights contain NaN"):
        kish_ess(torch.tensor([0.0, math.nan]))


def test_kish_ess_limits():
    assert kish_ess(np.zeros(500)) == pytest.approx(500.0)
    assert kish_ess(np.array([0.0, -1000.0, -1000.0])) == pytest.approx(1.0)
    # two equal halves: weights 1 and e^-inf give half the samples
    assert kish_ess(np.r_[np.zeros(10), np.full(10, -np.inf)]) == pytest.approx(10.0)


@pytest.mark.parametrize("target_variance, tail_shape", [(10 / 9, 0.1), (4 / 3, 0.25), (2.0, 0.5)])
def test_pareto_k_recovers_the_tail_of_gaussian_weights(target_variance, tail_shape):
    # x ~ N(0, 1) reweighted to N(0, s²), s² > 1: w ∝ exp(x²(1 − 1/s²)/2) has a Pareto tail of
    # shape k = 1 − 1/s²; Kish ESS is meaningful only for k < 1/2
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    log_w = 0.5 * x**2 * (1 - 1 / target_variance)
    assert pareto_k(log_w) == pytest.approx(tail_shape, abs=0.1)


def test_pareto_k_of_bounded_weights_is_not_positive():
    u = torch.rand(50_000, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert pareto_k(torch.log(u)) < 0.05  # weights uniform on (0, 1): k = −1
    with pytest.raises(ValueError, match="at least 25 samples"):
        pareto_k(torch.zeros(10))


def test_batch_ess_fractions_of_equal_weights_are_one_and_spot_a_heavy_batch():
    log_w = torch.zeros(1000, dtype=torch.float64)
    assert batch_ess_fractions(log_w, 4) == pytest.approx(np.ones(4))
    log_w[10] = 20.0  # one dominant weight in the first of four batches
    fractions = batch_ess_fractions(log_w, 4)
    assert fractions[0] == pytest.approx(1 / 250, rel=1e-3) and fractions[1:] == pytest.approx(np.ones(3))
    with pytest.raises(ValueError, match="n_batches"):
        batch_ess_fractions(log_w, 0)


def test_reweighted_mean_and_normaliser_match_the_exact_mixture(weighted):
    x, log_w = weighted
    generator = torch.Generator().manual_seed(2)
    exact_mean = (AMPLITUDES[:, None] * CENTRES).sum(0) / AMPLITUDES.sum()
    for dim in range(2):
        estimate = weighted_mean(x[:, dim], log_w, generator)
        assert 0 < estimate.error < 0.05
        assert abs(estimate.value - float(exact_mean[dim])) < 4 * estimate.error, (dim, estimate)
    assert log_normalizer(log_w) == pytest.approx(math.log(4.0), abs=0.03)
    assert 0.1 < ess_fraction(log_w) < 0.5  # a broad proposal: a fraction, not all


def test_basin_free_energy_difference_matches_exact_within_error(weighted):
    x, log_w = weighted
    p_right = exact_probability_right()
    exact = -kT(TEMPERATURE) * math.log(p_right / (1 - p_right))
    estimate = basin_free_energy_difference(
        x[:, 0] < 0, x[:, 0] > 0, TEMPERATURE, torch.Generator().manual_seed(3), log_weights=log_w
    )
    assert 0 < estimate.error < 0.2
    assert abs(estimate.value - exact) < 4 * estimate.error, (estimate, exact)
    # the estimate differs clearly from the unweighted (proposal) answer: reweighting does work
    unweighted = basin_free_energy_difference(
        x[:, 0] < 0, x[:, 0] > 0, TEMPERATURE, torch.Generator().manual_seed(3)
    )
    assert abs(unweighted.value - exact) > 10 * estimate.error


def test_reweighted_free_energy_profile_matches_the_exact_marginal(weighted):
    x, log_w = weighted
    profile, (edges,) = free_energy_profile(x[:, 0], TEMPERATURE, log_w, bins=20, ranges=[(-3.0, 3.0)])
    centres = torch.as_tensor(0.5 * (edges[1:] + edges[:-1]))
    marginal = (
        AMPLITUDES[:, None]
        * torch.exp(-((centres[None] - CENTRES[:, :1]) ** 2) / (2 * SIGMA**2))
        / math.sqrt(2 * math.pi * SIGMA**2)
    ).sum(0)
    exact = -kT(TEMPERATURE) * torch.log(marginal).numpy()
    exact -= exact.min()
    populated = exact < 2.5 * kT(TEMPERATURE)
    assert populated.sum() >= 6
    # bin averaging and the bins' noise: within 0.35 kT where the density is high
    assert np.abs(profile[populated] - exact[populated]).max() < 0.35 * kT(TEMPERATURE)


def test_divergences_identity_bounds_and_noise_floor():
    generator = torch.Generator().manual_seed(4)
    angles = (torch.rand(20_000, 2, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    counts = effective_counts(angles, bins=16)
    assert js_divergence(counts, counts) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(counts, counts) == pytest.approx(0.0, abs=1e-12)
    disjoint_a, disjoint_b = np.zeros((4, 4)), np.zeros((4, 4))
    disjoint_a[0, 0], disjoint_b[3, 3] = 100, 100
    assert js_divergence(disjoint_a, disjoint_b) == pytest.approx(math.log(2))
    assert math.isfinite(kl_divergence(disjoint_a, disjoint_b, pseudocount=1.0))
    small = half_vs_half_divergences(angles[:2_000], bins=16)
    large = half_vs_half_divergences(angles, bins=16)
    assert large["js"] < small["js"] and large["kl"] < small["kl"]  # noise shrinks with samples
    assert large["js"] < 0.01


def wrapped_ar1_angles(steps: int, chains: int, rho: float, shift: float, seed: int) -> np.ndarray:
    """(steps, chains, 2) angles of AR(1) chains (τ_int = (1 + ρ)/(1 − ρ)) around ``shift``,
    wrapped to (−π, π]: correlated samples of a wrapped Gaussian of width 0.8 rad."""
    noise = torch.randn(steps, chains, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    noise = noise.numpy() * 0.8
    x = np.empty_like(noise)
    x[0] = noise[0]
    for t in range(1, steps):
        x[t] = rho * x[t - 1] + math.sqrt(1 - rho**2) * noise[t]
    return np.angle(np.exp(1j * (x + shift)))


def test_matched_ess_floor_holds_exact_chains_and_rejects_a_shifted_one():
    rho = 0.9
    tau = (1 + rho) / (1 - rho)
    reference = wrapped_ar1_angles(40_000, 1, rho, 0.0, seed=21)[:, 0]
    exact = wrapped_ar1_angles(4_000, 10, rho, 0.0, seed=22)
    shifted = wrapped_ar1_angles(4_000, 1, rho, 0.5, seed=23)[:, 0]
    ess = 4_000 / tau
    floor = matched_ess_js_floor(reference, ess, tau, bins=16)
    assert not floor["capped"] and floor["window_frames"] == math.ceil(ess * tau)
    reference_counts = effective_counts(reference, bins=16)

    def chain_js(chain):
        return js_divergence(effective_counts(chain, bins=16) / len(chain) * ess, reference_counts, 1.0)

    scores = [chain_js(exact[:, k]) for k in range(exact.shape[1])]
    assert sum(score <= floor["js_95"] for score in scores) >= 8  # 95 % of exact chains, 10 tries
    assert chain_js(shifted) > 1.2 * floor["js_95"]
    # the all-frames half-vs-half floor is far below what a 210-ESS exact chain can reach
    assert half_vs_half_divergences(reference, bins=16)["js"] < 0.5 * floor["js_median"]
    assert matched_ess_js_floor(reference, 4 * ess, tau, bins=16)["js_median"] < floor["js_median"]
    assert matched_ess_js_floor(reference, 10 * ess, tau, bins=16)["capped"]


def test_block_bootstrap_widens_errors_of_a_correlated_chain():
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(20_000, generator=generator, dtype=torch.float64).numpy()
    chain = np.empty_like(noise)
    chain[0] = noise[0]
    rho = 0.95  # τ_int = (1 + ρ)/(1 − ρ) = 39
    for t in range(1, chain.size):
        chain[t] = rho * chain[t - 1] + math.sqrt(1 - rho**2) * noise[t]
    naive = weighted_mean(chain, None, torch.Generator().manual_seed(6))
    blocked = weighted_mean(chain, None, torch.Generator().manual_seed(6), block_size=400)
    assert 3.5 < blocked.error / naive.error < 9  # ≈ √39 = 6.2
    indices = bootstrap_indices(10, 3, torch.Generator().manual_seed(0), block_size=5)
    assert indices.shape == (3, 10) and np.all(np.diff(indices[:, :5], axis=1) == 1)


def test_alanine_basins_partition_the_torus():
    generator = torch.Generator().manual_seed(7)
    phi, psi = ((torch.rand(2, 10_000, generator=generator) * 2 - 1) * math.pi).numpy()
    names = ("beta", "alphaR", "C7ax", "alphaL")
    memberships = sum(ALANINE_BASINS[name].contains(phi, psi).astype(int) for name in names)
    assert np.all(memberships == 1)
    assert ALANINE_BASINS["alphaR"].contains(np.radians([-70.0]), np.radians([-40.0]))[0]
    assert ALANINE_BASINS["beta"].contains(np.radians([-80.0]), np.radians([170.0]))[0]
    assert ALANINE_BASINS["beta"].contains(np.radians([-150.0]), np.radians([-170.0]))[0]
