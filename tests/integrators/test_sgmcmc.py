"""SG-MCMC samplers against the analytic posterior of Bayesian linear regression."""

import numpy as np
import pytest
import torch

from molsamp.integrators import SGHMC, SGLD, ConstantSchedule, CyclicalSchedule, PreconditionedSGLD
from molsamp.testing import effective_sample_size

N_DATA, NOISE, PRIOR = 400, 0.5, 1.0
TRUE_WEIGHTS = torch.tensor([0.7, -1.3], dtype=torch.float64)


def _data(seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(N_DATA, 2, generator=generator, dtype=torch.float64)
    y = x @ TRUE_WEIGHTS + NOISE * torch.randn(N_DATA, generator=generator, dtype=torch.float64)
    return x, y


def _posterior(x, y, temperature):
    precision = x.T @ x / NOISE**2 + torch.eye(2, dtype=torch.float64) / PRIOR**2
    covariance = torch.linalg.inv(precision)
    return (covariance @ x.T @ y / NOISE**2).numpy(), temperature * covariance.numpy()


class Linear(torch.nn.Module):
    """y = x·w for C independent chains at once: weights (C, 2). The likelihood sums over
    chains, so each chain's gradient is its own and one sampler runs all C chains."""

    def __init__(self, chains: int = 1):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.zeros(chains, 2, dtype=torch.float64))


def _nll(model, batch):
    x, y = batch
    return 0.5 * ((x @ model.weights.T - y[:, None]) ** 2).sum() / NOISE**2, len(y)


def _batches(x, y, batch_size):
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, N_DATA, batch_size)]


def _run(sampler_class, temperature, batch_size, step_size, n_steps, chains=32, **options):
    """Samples (T, chains, 2) after a burn-in of a fifth, and the analytic posterior."""
    x, y = _data()
    sampler = sampler_class(
        Linear(chains), _nll, N_DATA, PRIOR, step_size, temperature, generator=100, **options
    )
    kept = sampler.sample(_batches(x, y, batch_size), n_steps, burn_in=n_steps // 5, thin=5, progress=False)
    return np.stack([s["weights"].numpy() for s in kept]), _posterior(x, y, temperature)


def _assert_matches_gaussian(samples, mean, covariance, n_sigma=4.5):
    flat = samples.reshape(-1, 2)
    ess = min(effective_sample_size(samples[..., i]) for i in range(2))
    assert ess > 300, ess
    mean_error = np.sqrt(np.diag(covariance) / ess)
    np.testing.assert_array_less(np.abs(flat.mean(0) - mean), n_sigma * mean_error)
    sample_covariance = np.cov(flat.T)
    # standard error of a covariance entry: √((Σᵢᵢ Σⱼⱼ + Σᵢⱼ²) / ESS)
    covariance_error = np.sqrt((np.outer(np.diag(covariance), np.diag(covariance)) + covariance**2) / ess)
    np.testing.assert_array_less(np.abs(sample_covariance - covariance), n_sigma * covariance_error)


@pytest.mark.parametrize("temperature", [1.0, 0.2])
def test_sgld_full_batch_matches_the_analytic_posterior_at_any_temperature(temperature):
    samples, (mean, covariance) = _run(SGLD, temperature, N_DATA, 2e-5, 6000)
    _assert_matches_gaussian(samples, mean, covariance)


def test_sgld_minibatch_matches_the_posterior():
    samples, (mean, covariance) = _run(SGLD, 1.0, 50, 1e-5, 12000)
    _assert_matches_gaussian(samples, mean, covariance)


@pytest.mark.parametrize("temperature", [1.0, 0.2])
def test_sghmc_matches_the_analytic_posterior(temperature):
    samples, (mean, covariance) = _run(SGHMC, temperature, 100, 2e-3, 6000, friction=100.0)
    _assert_matches_gaussian(samples, mean, covariance)


def test_preconditioned_sgld_matches_the_posterior():
    """Preconditioner adapted during burn-in, then frozen: exact up to the step-size bias."""
    samples, (mean, covariance) = _run(PreconditionedSGLD, 1.0, N_DATA, 1e-3, 8000, adaptation_steps=1200)
    _assert_matches_gaussian(samples, mean, covariance)


def _sparse_feature_data():
    """Feature 1 is absent from the first mini-batch of 20 (as an element missing from a batch of
    frames) and its weight is 0, so at the mode that batch's gradient on it is nearly 0."""
    x, _ = _data()
    x[:20, 1] = 0.0
    noise = torch.randn(N_DATA, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return x, 0.7 * x[:, 0] + NOISE * noise


@pytest.mark.parametrize("preconditioner_batches", [1, 20])
def test_preconditioner_warm_up_keeps_a_chain_started_at_the_mode_near_it(preconditioner_batches):
    """V from one such batch makes G on that weight far too large: 50 steps from the mode
    scatter the chains over > 5 posterior σ. V averaged over 20 batches keeps them at ≈ 1 σ."""
    x, y = _sparse_feature_data()
    mean, covariance = _posterior(x, y, 1.0)
    model = Linear(32)
    model.weights.data[:] = torch.from_numpy(mean)
    sampler = PreconditionedSGLD(
        model, _nll, N_DATA, PRIOR, 1e-3, generator=3, preconditioner_batches=preconditioner_batches
    )
    sampler.sample(_batches(x, y, 20), 50, progress=False)
    spread = ((model.weights.detach().numpy() - mean) / np.sqrt(np.diag(covariance))).std(0)
    if preconditioner_batches == 1:
        assert spread[1] > 5.0, spread
    else:
        assert np.all((0.5 < spread) & (spread < 1.5)), spread


def test_warm_up_preconditioner_averages_the_squared_per_datum_gradients():
    x, y = _sparse_feature_data()
    batches = _batches(x, y, 20)[:4]
    sampler = PreconditionedSGLD(Linear(2), _nll, N_DATA, PRIOR, 1e-3)
    expected = (
        torch.stack([g / N_DATA for b in batches for g in sampler.potential_gradients(b)]).square().mean(0)
    )
    sampler.warm_up_preconditioner(batches)
    torch.testing.assert_close(sampler._state[0]["square_average"], expected)
    with pytest.raises(ValueError, match="batches is empty"):
        sampler.warm_up_preconditioner([])


def test_cold_posterior_shrinks_the_spread_by_the_temperature():
    warm, _ = _run(SGLD, 1.0, N_DATA, 2e-5, 3000)
    cold, _ = _run(SGLD, 0.1, N_DATA, 2e-5, 3000)
    ratio = cold.reshape(-1, 2).var(0) / warm.reshape(-1, 2).var(0)
    assert np.all((0.08 < ratio) & (ratio < 0.125)), ratio


def test_cyclical_schedule_keeps_samples_only_in_sampling_phases():
    schedule = CyclicalSchedule(step_size=1e-4, n_steps=1000, n_cycles=4, exploration_fraction=0.5)
    assert schedule(0) == pytest.approx(1e-4) and schedule(249) < 1e-6
    assert not schedule.is_sampling(10) and schedule.is_sampling(200) and not schedule.is_sampling(260)
    x, y = _data()
    sampler = SGLD(Linear(8), _nll, N_DATA, PRIOR, schedule, generator=1)
    kept = sampler.sample(_batches(x, y, N_DATA), 1000, progress=False)
    assert len(kept) == 500
    mean, _ = _posterior(x, y, 1.0)
    assert np.allclose(np.mean([s["weights"].numpy() for s in kept], (0, 1)), mean, atol=0.02)


def test_samplers_reject_bad_settings():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SGLD(Linear(), _nll, N_DATA, PRIOR, 1e-4, temperature=0.0)
    with pytest.raises(ValueError, match="prior_std must be > 0"):
        SGLD(Linear(), _nll, N_DATA, -1.0, 1e-4)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        SGLD(Linear(), _nll, N_DATA, PRIOR, ConstantSchedule(0.0))
    with pytest.raises(ValueError, match="preconditioner_batches must be >= 1"):
        PreconditionedSGLD(Linear(), _nll, N_DATA, PRIOR, 1e-4, preconditioner_batches=0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        SGLD(torch.nn.Linear(2, 1).requires_grad_(False), _nll, N_DATA, PRIOR, 1e-4)
