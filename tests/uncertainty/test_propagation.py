"""End to end: posterior over a spring constant from noisy forces → MD per sample → ⟨x²⟩."""

import numpy as np
import pytest
import torch

from molsamp import State
from molsamp.integrators import SGLD, LangevinBAOAB, maxwell_boltzmann_velocities, simulate
from molsamp.io import UncertaintyExceeded, UncertaintyReporter
from molsamp.potentials import EnsemblePotential, Potential
from molsamp.uncertainty import (
    credible_interval,
    member_weights,
    observable_per_member,
    reweighted_observable,
    simultaneous_band,
)
from molsamp.units import kT

TRUE_K, FORCE_NOISE, TEMPERATURE, MASS = 1000.0, 40.0, 300.0, 12.0


class Spring(Potential):
    """E = ½ k |x|² with a learnable spring constant k (kJ/mol/nm²)."""

    def __init__(self, k: float = 500.0):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k, dtype=torch.float64))

    def _energy(self, positions, cell):
        return 0.5 * self.k * positions.square().sum((-2, -1))


def _force_data(n=60, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.randn(n, 1, 3, generator=generator, dtype=torch.float64)
    forces = -TRUE_K * x + FORCE_NOISE * torch.randn(n, 1, 3, generator=generator, dtype=torch.float64)
    return x, forces


def _force_nll(model, batch):
    x, forces = batch
    _, predicted = model.energy_and_forces(x, create_graph=True)
    return 0.5 * (predicted - forces).square().sum() / FORCE_NOISE**2, len(x)


def _analytic_posterior(x, forces, prior_std):
    """k | data ~ N(μ, s²): forces are linear in k with design −x."""
    design = -x.reshape(-1)
    precision = (design @ design).item() / FORCE_NOISE**2 + 1 / prior_std**2
    mean = (design @ forces.reshape(-1)).item() / FORCE_NOISE**2 / precision
    return mean, precision**-0.5


def _posterior_samples(n_samples=120):
    x, forces = _force_data()
    prior_std = 1e4
    sampler = SGLD(Spring(), _force_nll, len(x), prior_std, step_size=200.0, generator=3)  # ε·∂²U ≈ 0.06
    samples = sampler.sample([(x, forces)], 500 + 25 * n_samples, burn_in=500, thin=25, progress=False)
    return samples, _analytic_posterior(x, forces, prior_std)


def _mean_square_displacement(potential: Potential, seed: int = 0) -> float:
    """⟨x²⟩ per component (nm²) from Langevin MD of 512 walkers (≈ 2 % statistical error)."""
    masses = torch.tensor([MASS], dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    start = torch.sqrt(kT(TEMPERATURE) / potential.k.detach()) * torch.randn(
        512, 1, 3, generator=generator, dtype=torch.float64
    )
    state = State(start, maxwell_boltzmann_velocities(masses, TEMPERATURE, 512, generator))
    langevin = LangevinBAOAB(potential, masses, 0.004, TEMPERATURE, 10.0, generator)
    values = []
    for _ in range(40):
        state = langevin.step(state, 5)
        values.append(state.positions.square().mean().item())
    return float(np.mean(values))


@pytest.mark.slow
def test_sgld_posterior_propagates_to_the_analytic_credible_interval_of_x_squared():
    samples, (k_mean, k_std) = _posterior_samples()
    ks = np.array([s["k"].item() for s in samples])
    assert abs(ks.mean() - k_mean) < 4 * k_std / np.sqrt(len(ks) / 3)  # SGLD draws the posterior of k
    assert 0.75 < ks.std() / k_std < 1.3
    ensemble = EnsemblePotential.from_state_dicts(Spring(), samples)
    interval = observable_per_member(list(ensemble.members), _mean_square_displacement, level=0.9)
    # analytic posterior predictive of ⟨x²⟩ = kT/k: its quantiles are kT over k's quantiles
    analytic = np.sort(kT(TEMPERATURE) / (k_mean + k_std * np.array([1.6449, 0.0, -1.6449])))
    assert interval.contains(analytic[1])  # the posterior-predictive median
    spread = analytic[2] - analytic[0]
    assert (
        abs(interval.lower - analytic[0]) < 0.25 * spread
        and abs(interval.upper - analytic[2]) < 0.25 * spread
    )
    # one MD run with the ensemble mean, reweighted to each member, gives the same interval
    frames = 0.05 * torch.randn(20000, 1, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    frames *= np.sqrt(kT(TEMPERATURE) / ks.mean()) / 0.05  # exact samples of the mean potential
    member_energies, _ = ensemble.member_energies_and_forces(frames)
    weights = member_weights(member_energies[:, :], member_energies.mean(0), TEMPERATURE)
    reweighted = reweighted_observable(frames.square().sum((-2, -1)).numpy() / 3, weights, level=0.9)
    assert (
        abs(reweighted.lower - analytic[0]) < 0.25 * spread
        and abs(reweighted.upper - analytic[2]) < 0.25 * spread
    )


def test_ensemble_force_uncertainty_of_springs_is_the_spread_of_k_times_displacement():
    ks = [800.0, 1000.0, 1300.0]
    ensemble = EnsemblePotential([Spring(k) for k in ks])
    looped = EnsemblePotential([Spring(k) for k in ks], batched=False)
    assert ensemble.batched and not looped.batched
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for a, b in zip(
        ensemble.member_energies_and_forces(x), looped.member_energies_and_forces(x), strict=True
    ):
        torch.testing.assert_close(a, b)
    energy, forces = ensemble.energy_and_forces(x)
    torch.testing.assert_close(forces, -np.mean(ks) * x)
    torch.testing.assert_close(energy, 0.5 * np.mean(ks) * x.square().sum((-2, -1)))
    torch.testing.assert_close(ensemble.force_uncertainty(x), np.std(ks) * x.norm(dim=-1))


def test_uncertainty_reporter_records_and_stops_when_extrapolating(tmp_path):
    ensemble = EnsemblePotential([Spring(k) for k in (900.0, 1000.0, 1100.0)])
    masses = torch.tensor([MASS], dtype=torch.float64)
    state = State(torch.full((1, 1, 3), 0.01, dtype=torch.float64), torch.zeros(1, 1, 3, dtype=torch.float64))
    langevin = LangevinBAOAB(ensemble, masses, 0.004, TEMPERATURE, 5.0, 2)
    log = tmp_path / "uncertainty.csv"
    simulate(langevin, state, 100, reporters=[UncertaintyReporter(log, 10)], progress=False)
    rows = np.loadtxt(log, delimiter=",", skiprows=1)
    assert rows.shape == (10, 5) and np.all(rows[:, 2] >= rows[:, 3]) and rows[:, 4].sum() == 0
    # σ = 81.6 kJ/mol/nm² · |x|; a 0.03 nm excursion gives σ ≈ 2.4: stop at 2
    far = state.replace(positions=torch.full((1, 1, 3), 0.03, dtype=torch.float64))
    with pytest.raises(UncertaintyExceeded, match="exceeds the threshold 2 at step 10"):
        simulate(
            langevin,
            far,
            100,
            reporters=[UncertaintyReporter(log, 10, threshold=2.0, stop=True)],
            progress=False,
        )
    with pytest.raises(TypeError, match="needs a potential with force_uncertainty"):
        simulate(
            LangevinBAOAB(Spring(), masses, 0.004, TEMPERATURE, 5.0, 2),
            state,
            10,
            reporters=[UncertaintyReporter(log, 10)],
            progress=False,
        )


def test_credible_interval_rejects_bad_level():
    with pytest.raises(ValueError, match="level must be in"):
        credible_interval([1.0, 2.0], level=1.5)


def _random_profiles(n: int, seed: int, bins: int = 13) -> np.ndarray:
    """Correlated Gaussian curves (n, bins): AR(1) across bins, ρ = 0.5, unequal scales."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, bins))
    curves = np.empty_like(noise)
    curves[:, 0] = noise[:, 0]
    for j in range(1, bins):
        curves[:, j] = 0.5 * curves[:, j - 1] + np.sqrt(0.75) * noise[:, j]
    return curves * np.linspace(0.5, 3.0, bins)


def test_simultaneous_band_holds_whole_profiles_at_the_nominal_rate():
    """Fresh posterior draws lie wholly inside the 95 % simultaneous band 95 % of the time; the
    pointwise band holds each bin at 95 % but whole 13-bin curves far less often."""
    band = simultaneous_band(_random_profiles(4000, seed=0), level=0.95)
    pointwise = credible_interval(_random_profiles(4000, seed=0), level=0.95)
    fresh = _random_profiles(4000, seed=1)
    inside = np.all(band.contains(fresh), axis=1).mean()
    assert abs(inside - 0.95) < 4 * np.sqrt(0.95 * 0.05 / 4000) + 0.01  # + the band's own noise
    assert np.all(pointwise.contains(fresh), axis=1).mean() < 0.8
    assert abs(pointwise.contains(fresh).mean() - 0.95) < 0.01
    assert np.all(band.lower < pointwise.lower) and np.all(band.upper > pointwise.upper)
