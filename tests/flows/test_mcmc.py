"""Flow-MCMC on a double well with a deliberately wrong proposal: the chain must be exact."""

import math

import numpy as np
import pytest
import torch

from molsamp.flows.mcmc import IndependenceMetropolis, flow_mcmc
from molsamp.integrators import LangevinBAOAB
from molsamp.potentials import DoubleWell
from molsamp.system import State
from molsamp.testing import assert_mean_close
from molsamp.units import kT

TEMPERATURE = 300.0
BARRIER, MINIMUM, K_PERP = 5.0, 0.1, 1000.0
WRONG_WEIGHT = 0.85  # the proposal puts 85 % of its mass in the right-hand well


class BiasedMixture:
    """Proposal: Gaussians at x = ±a (weights 0.85 / 0.15), broadened across."""

    @staticmethod
    def _sigmas():
        return torch.tensor([0.05, *(2 * [1.3 * math.sqrt(kT(TEMPERATURE) / K_PERP)])], dtype=torch.float64)

    def sample(self, n, generator):
        sigma = self._sigmas()
        right = torch.rand(n, generator=generator, dtype=torch.float64) < WRONG_WEIGHT
        centre = torch.zeros(n, 3, dtype=torch.float64)
        centre[:, 0] = torch.where(right, MINIMUM, -MINIMUM)
        x = centre + sigma * torch.randn(n, 3, generator=generator, dtype=torch.float64)
        return x[:, None, :], self.log_prob(x[:, None, :])

    def log_prob(self, positions):
        sigma = self._sigmas()
        x = positions[:, 0, :]
        out = []
        for centre_x, weight in ((MINIMUM, WRONG_WEIGHT), (-MINIMUM, 1 - WRONG_WEIGHT)):
            centre = torch.tensor([centre_x, 0.0, 0.0], dtype=torch.float64)
            log_normal = (
                -0.5 * ((x - centre) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
            ).sum(1)
            out.append(log_normal + math.log(weight))
        return torch.logsumexp(torch.stack(out), 0)


def exact_x_squared() -> float:
    x = torch.linspace(-3 * MINIMUM, 3 * MINIMUM, 20001, dtype=torch.float64)
    weights = torch.softmax(-BARRIER * ((x / MINIMUM) ** 2 - 1) ** 2 / kT(TEMPERATURE), 0)
    return float((weights * x**2).sum())


def make_move(potential, nan_region=False):
    proposal = BiasedMixture()

    def reduced_energy(positions):
        u = potential.energy(positions) / kT(TEMPERATURE)
        if nan_region:  # a "clash" region where the target is undefined
            u = torch.where(positions[:, 0, 1] > 0.05, torch.full_like(u, math.nan), u)
        return u

    return IndependenceMetropolis(proposal.sample, proposal.log_prob, reduced_energy)


def start_state(n_walkers=16):
    positions = torch.zeros(n_walkers, 1, 3, dtype=torch.float64)
    positions[:, 0, 0] = MINIMUM
    return State(positions, torch.zeros_like(positions))


def test_flow_mcmc_corrects_a_biased_proposal():
    potential = DoubleWell(BARRIER, MINIMUM, K_PERP)
    result = flow_mcmc(
        start_state(),
        make_move(potential),
        600,
        torch.Generator().manual_seed(0),
        observe=lambda x: torch.stack([(x[:, 0, 0] > 0).double(), x[:, 0, 0] ** 2], 1),
    )
    chains = result.observables[50:]
    assert_mean_close(chains[:, :, 0], 0.5, label="P(x > 0)")
    assert_mean_close(chains[:, :, 1], exact_x_squared(), label="<x^2>")
    # not vacuous: the proposal alone says 0.85, many standard errors away
    mean, ess = chains[:, :, 0].mean(), result.ess[0]
    assert abs(WRONG_WEIGHT - 0.5) > 10 * 0.5 / math.sqrt(ess)
    assert 0.3 < result.acceptance_rate < 0.95
    assert result.n_energy_evaluations == 16 * 601
    assert np.all(result.tau >= 1.0) and mean == pytest.approx(0.5, abs=0.1)


def test_flow_mcmc_with_langevin_steps_stays_exact():
    potential = DoubleWell(BARRIER, MINIMUM, K_PERP)
    langevin = LangevinBAOAB(potential, torch.tensor([12.0]), 0.002, TEMPERATURE, 5.0, 1)
    state = start_state()
    state = state.replace(
        velocities=0.1
        * torch.randn(state.positions.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    )
    result = flow_mcmc(
        state,
        make_move(potential),
        300,
        torch.Generator().manual_seed(2),
        observe=lambda x: torch.stack([(x[:, 0, 0] > 0).double(), x[:, 0, 0] ** 2], 1),
        langevin=langevin,
        langevin_steps=5,
    )
    chains = result.observables[30:]
    assert_mean_close(chains[:, :, 0], 0.5, label="P(x > 0)")
    assert_mean_close(chains[:, :, 1], exact_x_squared(), label="<x^2>")
    assert result.n_energy_evaluations == 16 * (1 + 300 * 7)


def test_undefined_target_is_never_accepted_and_never_nan():
    potential = DoubleWell(BARRIER, MINIMUM, K_PERP)
    move = make_move(potential, nan_region=True)
    result = flow_mcmc(
        start_state(), move, 100, torch.Generator().manual_seed(3), observe=lambda x: x[:, 0, 1:2]
    )
    assert np.all(result.observables <= 0.05)  # no walker ever enters the NaN region
    log_w = move.log_weight(result.state.positions)
    assert torch.isfinite(log_w).all()
    with pytest.raises(ValueError, match="langevin_steps > 0 needs"):
        flow_mcmc(start_state(), move, 10, torch.Generator(), observe=lambda x: x[:, 0], langevin_steps=2)
