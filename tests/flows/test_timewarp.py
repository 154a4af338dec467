"""Timewarp: the flow is a bijection with the right log-det, translation-equivariant; the MH
chain targets Boltzmann whatever the proposal (deliberately wrong ones included), rejects
chirality flips, and training on MD pairs raises acceptance."""

import math

import numpy as np
import pytest
import torch

from molsamp.flows.coordinates import InternalCoordinates, ZMatrix, bond_angle, dihedral
from molsamp.flows.timewarp import (
    TimewarpConfig,
    TimewarpFlow,
    align,
    center_of_mass,
    load_timewarp,
    random_rotations,
    save_timewarp,
    train_timewarp,
    transition_pairs,
)
from molsamp.flows.timewarp_mcmc import TimewarpMove, log_mh_ratio, timewarp_mcmc
from molsamp.integrators import LangevinBAOAB
from molsamp.potentials import DoubleWell
from molsamp.system import State, System
from molsamp.testing import assert_mean_close, mean_and_standard_error
from molsamp.units import kT

from .toy_molecule import (
    ANGLE,
    ANGLE_SIGMA,
    BOND,
    BOND_SIGMA,
    TEMPERATURE,
    TORSION_BARRIER,
    ChainPotential,
    chain_system,
    exact_angle_mean,
    exact_bond_mean,
    exact_cos_torsion_mean,
)

SMALL = TimewarpConfig(n_couplings=2, hidden=16, heads=2, blocks=1, kernel_lengths=(0.1, 0.3))
BARRIER, MINIMUM, K_PERP = 5.0, 0.1, 1000.0


def random_flow(seed: int, scale: float, config=SMALL, position_scale=None, dtype=torch.float64):
    """An untrained flow whose output heads are random (a nonlinear, asymmetric proposal)."""
    if position_scale is not None:
        config = TimewarpConfig(**{**config.to_dict(), "position_scale": position_scale})
    generator = torch.Generator().manual_seed(seed)
    flow = TimewarpFlow(config, generator=generator, dtype=dtype)
    with torch.no_grad():
        for name, parameter in flow.named_parameters():
            if "head" in name:
                parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=dtype))
    return flow


def one_atom() -> System:
    return System(torch.tensor([6]), torch.tensor([12.0]))


def test_flow_is_invertible_with_brute_force_log_det():
    system = System(torch.tensor([6, 1, 8]), torch.tensor([12.0, 1.0, 16.0]))
    flow = random_flow(0, 0.3, position_scale=0.05)
    g = torch.Generator().manual_seed(1)
    x0 = 0.15 * torch.randn(1, 3, 3, generator=g, dtype=torch.float64)
    x1 = x0 + 0.05 * torch.randn(1, 3, 3, generator=g, dtype=torch.float64)
    v = torch.randn(1, 3, 3, generator=g, dtype=torch.float64)
    z_x, z_v, log_det = flow.to_latent(x1, v, x0, system)
    back_x, back_v, inverse_log_det = flow.from_latent(z_x, z_v, x0, system)
    torch.testing.assert_close(back_x, x1, rtol=0, atol=1e-12)
    torch.testing.assert_close(back_v, v, rtol=0, atol=1e-12)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=1e-10)

    def to_latent(flat):
        a, b = flat[:9].reshape(1, 3, 3), flat[9:].reshape(1, 3, 3)
        zx, zv, _ = flow.to_latent(a, b, x0, system)
        return torch.cat([zx.flatten(), zv.flatten()])

    jacobian = torch.autograd.functional.jacobian(to_latent, torch.cat([x1.flatten(), v.flatten()]))
    sign, brute = torch.linalg.slogdet(jacobian)
    assert sign > 0
    assert abs(float(brute) - float(log_det.detach())) < 1e-8
    assert abs(float(log_det.detach()) + 9 * math.log(0.05)) > 0.5  # the couplings are not the identity
    # the density integrates the latent Gaussian: log p = log N(z) + log|det|
    expected = -0.5 * (z_x.pow(2).sum() + z_v.pow(2).sum()) - 9 * math.log(2 * math.pi) + log_det
    torch.testing.assert_close(flow.log_prob(x1, v, x0, system), expected)


def test_translation_equivariance_and_rotation_augmentation():
    system = System(torch.tensor([6, 1, 8, 7]), torch.tensor([12.0, 1.0, 16.0, 14.0]))
    flow = random_flow(2, 0.3, position_scale=0.05)
    g = torch.Generator().manual_seed(3)
    x0 = 0.2 * torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    shift = torch.tensor([1.3, -2.0, 0.7], dtype=torch.float64)
    x1, v1, log_q = flow.sample(x0, system, torch.Generator().manual_seed(4))
    x1_shifted, v1_shifted, log_q_shifted = flow.sample(x0 + shift, system, torch.Generator().manual_seed(4))
    torch.testing.assert_close(x1_shifted, x1 + shift)
    torch.testing.assert_close(v1_shifted, v1)
    torch.testing.assert_close(log_q_shifted, log_q)
    torch.testing.assert_close(
        flow.log_prob(x1 + shift, v1, x0 + shift, system), flow.log_prob(x1, v1, x0, system)
    )
    torch.testing.assert_close(flow.log_prob(x1, v1, x0, system), log_q)
    assert torch.allclose(
        center_of_mass(x0 + shift, system.masses), center_of_mass(x0, system.masses) + shift
    )
    # rotations are by augmentation: proper rotations, and the conditioner is not equivariant
    rotations = random_rotations(100, torch.Generator().manual_seed(5))
    torch.testing.assert_close(
        rotations @ rotations.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    )
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(100, dtype=torch.float64))
    # training targets are aligned onto x(t): a rigidly moved copy aligns back exactly
    moved = x0 @ rotations[:5] + shift
    torch.testing.assert_close(align(moved, x0, system.masses), x0)


def double_well_chain(flow, n_proposals, seed, iterations, hastings=True, walkers=48, langevin_steps=0):
    potential = DoubleWell(BARRIER, MINIMUM, K_PERP)
    move = TimewarpMove(flow, one_atom(), potential, TEMPERATURE, n_proposals=n_proposals)
    if not hastings:  # a broken ratio, for the negative control: drop p(x, v | x̃)
        propose = move._propose

        def without_reverse(x, generator):
            v, x1, v1, log_q, _, u1 = propose(x, generator)
            return v, x1, v1, log_q, log_q.clone(), u1

        move._propose = without_reverse
    g = torch.Generator().manual_seed(seed)
    positions = torch.zeros(walkers, 1, 3, dtype=torch.float64)
    positions[:, 0, 0] = torch.where(torch.rand(walkers, generator=g) < 0.5, -MINIMUM, MINIMUM).double()
    return timewarp_mcmc(
        State(positions, torch.zeros_like(positions)),
        move,
        iterations,
        g,
        observe=lambda x: torch.stack(
            [(x[:, 0, 0] > 0).double(), x[:, 0, 0] ** 2, x[:, 0, 1] ** 2]
            + [
                ((x[:, 0, 0] >= lo) & (x[:, 0, 0] < lo + 0.05)).double()
                for lo in (-0.15, -0.1, -0.05, 0.0, 0.05, 0.1)
            ],
            1,
        ),
        langevin=LangevinBAOAB(potential, one_atom().masses, 0.002, TEMPERATURE, 10.0, seed + 1)
        if langevin_steps
        else None,
        langevin_steps=langevin_steps,
    )


def double_well_exact():
    x = torch.linspace(-4 * MINIMUM, 4 * MINIMUM, 40001, dtype=torch.float64)
    p = torch.softmax(-BARRIER * ((x / MINIMUM) ** 2 - 1) ** 2 / kT(TEMPERATURE), 0)
    bins = [float(p[(x >= lo) & (x < lo + 0.05)].sum()) for lo in (-0.15, -0.1, -0.05, 0.0, 0.05, 0.1)]
    return float((p * x**2).sum()), bins


def drifting_flow(seed):
    """A deliberately wrong proposal: random nonlinear couplings plus a drift of +0.4σ in x
    (every step pushes the walker to the right well) and a too-wide step."""
    flow = random_flow(seed, 0.05, position_scale=0.05)
    with torch.no_grad():
        flow.couplings[-1].positions.head.bias[3] += 0.4
    return flow


def test_detailed_balance_on_a_double_well_with_a_wrong_proposal():
    mean_x2, bins = double_well_exact()
    result = double_well_chain(drifting_flow(6), n_proposals=3, seed=7, iterations=250)
    chains = result.observables[100:]
    assert chains.shape[0] > 400
    assert 0.05 < result.acceptance_rate < 0.9
    assert_mean_close(chains[:, :, 0], 0.5, n_sigma=4.5, label="P(x > 0)")
    assert_mean_close(chains[:, :, 1], mean_x2, n_sigma=4.5, label="<x^2>")
    assert_mean_close(chains[:, :, 2], kT(TEMPERATURE) / K_PERP, n_sigma=4.5, label="<y^2>")
    for k, expected in enumerate(bins):
        assert_mean_close(chains[:, :, 3 + k], expected, n_sigma=4.5, label=f"histogram bin {k}")
    assert result.proposals_evaluated == 48 * 3 * 250
    assert not result.biased


def test_langevin_steps_between_flow_moves_keep_the_double_well_exact():
    """The default chain of the examples: MH flow moves (a wrong proposal) alternating with
    Langevin segments; both kernels keep π(x)·N(v), so their composition does too."""
    mean_x2, bins = double_well_exact()
    result = double_well_chain(drifting_flow(6), n_proposals=3, seed=11, iterations=250, langevin_steps=20)
    chains = result.observables[100:]
    assert 0.05 < result.acceptance_rate < 0.9
    assert result.n_energy_evaluations == 48 * 250 * (3 + 21)
    assert_mean_close(chains[:, :, 0], 0.5, n_sigma=4.5, label="P(x > 0)")
    assert_mean_close(chains[:, :, 1], mean_x2, n_sigma=4.5, label="<x^2>")
    assert_mean_close(chains[:, :, 2], kT(TEMPERATURE) / K_PERP, n_sigma=4.5, label="<y^2>")
    for k, expected in enumerate(bins):
        assert_mean_close(chains[:, :, 3 + k], expected, n_sigma=4.5, label=f"histogram bin {k}")


def test_the_hastings_term_matters():
    """Negative control: the same drifting proposal without p(x, v | x̃) is visibly biased, so
    the detailed-balance test above has power."""
    result = double_well_chain(drifting_flow(6), n_proposals=3, seed=7, iterations=250, hastings=False)
    chains = result.observables[100:]
    mean, error = mean_and_standard_error(chains[:, :, 0])
    assert abs(mean - 0.5) > 6 * error, (mean, error)


def exact_chain_frames(n: int, seed: int) -> torch.Tensor:
    """(n, 4, 3) exact Boltzmann samples of the toy chain (inverse CDF on fine grids)."""
    g = torch.Generator().manual_seed(seed)

    def draw(grid, log_density, size):
        cdf = torch.cumsum(torch.softmax(log_density, 0), 0)
        return grid[
            torch.searchsorted(cdf, torch.rand(size, generator=g, dtype=torch.float64)).clamp(
                max=len(grid) - 1
            )
        ]

    d = torch.linspace(BOND - 8 * BOND_SIGMA, BOND + 8 * BOND_SIGMA, 20001, dtype=torch.float64)
    a = torch.linspace(ANGLE - 8 * ANGLE_SIGMA, ANGLE + 8 * ANGLE_SIGMA, 20001, dtype=torch.float64)
    t = torch.linspace(-math.pi, math.pi, 20001, dtype=torch.float64)
    internal = torch.cat(
        [
            draw(d, 2 * torch.log(d) - (d - BOND) ** 2 / (2 * BOND_SIGMA**2), (n, 3)),
            draw(a, torch.log(torch.sin(a)) - (a - ANGLE) ** 2 / (2 * ANGLE_SIGMA**2), (n, 2)),
            draw(t, -TORSION_BARRIER * torch.cos(t), (n, 1)),
        ],
        1,
    )
    transform = InternalCoordinates(ZMatrix.from_topology(chain_system().topology))
    return transform.inverse(internal)[0]


def chain_observables(x):
    bonds = torch.linalg.vector_norm(x[:, 1:] - x[:, :-1], dim=-1).mean(1)
    angle = bond_angle(x[:, 0], x[:, 1], x[:, 2])
    torsion = dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3])
    return torch.stack([bonds, angle, torch.cos(torsion)], 1)


def test_detailed_balance_on_a_harmonic_molecule_with_an_untrained_flow():
    """Four atoms (bonds, angles, a torsion): COM centring and attention in play; started in
    equilibrium, a correct kernel keeps every marginal exact."""
    system = chain_system()
    flow = random_flow(8, 0.05, position_scale=0.005)
    move = TimewarpMove(flow, system, ChainPotential(), TEMPERATURE, n_proposals=4)
    start = exact_chain_frames(64, 9)
    result = timewarp_mcmc(
        State(start, torch.zeros_like(start)), move, 120, torch.Generator().manual_seed(10), chain_observables
    )
    chains = result.observables
    assert result.acceptance_rate > 0.05
    assert_mean_close(chains[:, :, 0], exact_bond_mean(), label="<bond>")
    assert_mean_close(chains[:, :, 1], exact_angle_mean(), label="<angle>")
    assert_mean_close(chains[:, :, 2], exact_cos_torsion_mean(), label="<cos torsion>")
    moved = (result.state.positions - start).abs().amax(dim=(1, 2))
    assert (moved > 1e-3).float().mean() > 0.9  # the walkers did move


class MirrorProposal(torch.nn.Module):
    """Proposes the mirror image of x (same force-field energy: Amber is achiral)."""

    dtype = torch.float64
    device = torch.device("cpu")

    def sample(self, x0, system, generator):
        v = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        return x0 * x0.new_tensor([-1.0, 1.0, 1.0]), v, torch.zeros(x0.shape[0], dtype=torch.float64)

    def log_prob(self, x1, v, x0, system):
        return torch.zeros(x0.shape[0], dtype=torch.float64)


def test_chirality_flips_are_rejected(alanine):
    system, state, potential = alanine
    x = state.positions.expand(4, -1, -1).clone()
    mirror = x * x.new_tensor([-1.0, 1.0, 1.0])
    torch.testing.assert_close(potential.energy(mirror), potential.energy(x))  # same energy
    move = TimewarpMove(MirrorProposal(), system, potential, 300.0, n_proposals=4, reference_positions=x[0])
    assert move.chiral_centres and torch.isinf(move.reduced_energy(mirror)).all()
    u = move.reduced_energy(x)
    assert torch.isfinite(u).all()
    step = move.apply(x, u, torch.Generator().manual_seed(0))
    assert not step.accepted.any() and (step.repeats == 4).all()
    torch.testing.assert_close(step.positions, x)
    # a chain that never moves has no effective samples (not one per walker)
    chain = timewarp_mcmc(
        State(x, torch.zeros_like(x)), move, 4, torch.Generator().manual_seed(1), lambda p: p[:, :2, 0]
    )
    assert chain.acceptance_rate == 0.0 and (chain.ess == 0).all() and chain.observables.shape[0] == 16
    # without the chirality check the same mirror moves would be accepted half the time
    unchecked = TimewarpMove(MirrorProposal(), system, potential, 300.0, n_proposals=4, chiral_centres=[])
    step = unchecked.apply(x, unchecked.reduced_energy(x), torch.Generator().manual_seed(0))
    assert step.accepted.any()


def test_log_mh_ratio_and_exploration_mode():
    u = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    v = torch.zeros(3, 1, 3, dtype=torch.float64)
    u_new = torch.tensor([0.0, math.inf, math.nan], dtype=torch.float64)
    ratio = log_mh_ratio(u, v, u_new, v, torch.zeros(3), torch.zeros(3))
    assert ratio[0] == pytest.approx(1.0) and torch.isneginf(ratio[1:]).all()
    # exploration mode: energy cut-off instead of MH, flagged as biased
    flow = random_flow(11, 0.1, position_scale=0.05)
    move = TimewarpMove(
        flow, one_atom(), DoubleWell(BARRIER, MINIMUM, K_PERP), TEMPERATURE, explore=True, energy_cutoff=5.0
    )
    positions = torch.full((8, 1, 3), 0.0, dtype=torch.float64)
    result = timewarp_mcmc(
        State(positions, torch.zeros_like(positions)),
        move,
        10,
        torch.Generator().manual_seed(12),
        lambda x: x[:, 0, :1],
    )
    assert result.biased and result.summary()["biased"]


def test_maximum_likelihood_learns_a_known_transition_density(tmp_path):
    """Pairs from a known kernel: x(t+τ) = x(t) − c·(x(t) − x̄(t)) + σ_e·ε with σ_C = 0.01 nm,
    σ_O = 0.03 nm (rotation-covariant, so augmentation keeps it). From the untrained flow
    (σ = 0.02 nm for both, no pull) training must approach the exact NLL and never beat it
    by more than noise (a wrong log-det would)."""
    system = System(torch.tensor([6, 8, 6]), torch.tensor([12.0, 16.0, 12.0]))
    sigma = torch.tensor([0.01, 0.03, 0.01], dtype=torch.float64)[None, :, None]
    g = torch.Generator().manual_seed(13)
    n = 2400
    x0 = torch.tensor([[0.0, 0.0, 0.0], [0.12, 0.0, 0.0], [0.2, 0.1, 0.0]], dtype=torch.float64)
    x0 = x0 + 0.03 * torch.randn(n, 3, 3, generator=g, dtype=torch.float64)
    x1 = (
        x0
        - 0.3 * (x0 - center_of_mass(x0, system.masses))
        + sigma * torch.randn(n, 3, 3, generator=g, dtype=torch.float64)
    )
    exact = float((3 * torch.log(sigma).mean() + 1.5 * math.log(2 * math.pi * math.e) * 2).item())
    config = TimewarpConfig(**{**SMALL.to_dict(), "position_scale": 0.02})
    generator = torch.Generator().manual_seed(14)
    flow = TimewarpFlow(config, generator=generator)
    history = train_timewarp(
        flow, system, x0[:2000], x1[:2000], generator, n_steps=400, batch_size=64, learning_rate=3e-3,
        log_every=399, validation=(x0[2000:], x1[2000:]),
    )  # fmt: skip
    first, last = history[0]["validation_nll_per_atom"], history[-1]["validation_nll_per_atom"]
    assert first > exact + 0.5, (first, exact)
    assert exact - 0.1 < last < exact + 0.2, (last, exact)
    save_timewarp(flow, tmp_path / "timewarp.pt")
    loaded = load_timewarp(tmp_path / "timewarp.pt")
    v = torch.randn(x0[:8].shape, generator=g)
    torch.testing.assert_close(
        loaded.log_prob(x1[:8], v, x0[:8], system), flow.log_prob(x1[:8], v, x0[:8], system)
    )
    with pytest.raises(ValueError, match="lag must be >= 1"):
        transition_pairs(x0[None], 0)
    pairs = transition_pairs(torch.arange(5.0)[:, None, None].expand(5, 1, 3), 2)
    assert pairs[0][:, 0, 0].tolist() == [0, 1, 2] and pairs[1][:, 0, 0].tolist() == [2, 3, 4]


def test_acceptance_fine_tuning_raises_acceptance():
    """The acceptance loss (with entropy bonus) repairs a far too wide proposal in a few steps."""
    from molsamp.flows.timewarp_mcmc import fine_tune_acceptance

    potential = DoubleWell(BARRIER, MINIMUM, K_PERP)
    flow = random_flow(20, 0.0, position_scale=0.3)  # steps 3× the well width
    move = TimewarpMove(flow, one_atom(), potential, TEMPERATURE)
    g = torch.Generator().manual_seed(21)
    x0 = 0.05 * torch.randn(512, 1, 3, generator=g, dtype=torch.float64)
    x0[:, 0, 0] += torch.where(torch.rand(512, generator=g) < 0.5, -MINIMUM, MINIMUM).double()
    x1 = x0 + 0.05 * torch.randn(512, 1, 3, generator=g, dtype=torch.float64)

    def acceptance():
        step = move.apply(x0, move.reduced_energy(x0), torch.Generator().manual_seed(22))
        return float(step.accepted.float().mean())

    before = acceptance()
    history = fine_tune_acceptance(
        move, x0, x1, g, n_steps=60, batch_size=64, learning_rate=1e-2, log_every=59
    )
    after = acceptance()
    assert after > before + 0.15, (before, after)
    assert history[-1]["mean_acceptance"] > history[0]["mean_acceptance"]


def test_multichain_ess_counts_stuck_walkers_once():
    from molsamp.flows.timewarp_mcmc import multichain_ess

    g = np.random.default_rng(0)
    mixed = g.normal(size=(2000, 16))
    assert 0.8 * 32000 < multichain_ess(mixed) <= 32000 * 1.2
    # walkers jiggling around different starting values: ~one sample per walker, not T/τ each
    stuck = g.normal(size=(1, 16)) + 0.01 * g.normal(size=(2000, 16))
    assert multichain_ess(stuck) < 40
    assert multichain_ess(np.ones((100, 4))) == 0.0
