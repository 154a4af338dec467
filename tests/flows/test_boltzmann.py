"""Boltzmann generator: exact reweighting (Jacobians included), NaN safety, chirality, training."""

import math

import pytest
import torch

from molsamp.flows.boltzmann import BoltzmannGenerator, soften_energy
from molsamp.flows.coordinates import bond_angle, dihedral
from molsamp.flows.reweighting import ess_fraction, log_importance_weights, weighted_mean

from .toy_molecule import (
    TEMPERATURE,
    ChainPotential,
    chain_system,
    exact_angle_mean,
    exact_bond_mean,
    exact_cos_torsion_mean,
    rough_frames,
)


def chain_generator(potential=None, dtype=torch.float64, seed=0):
    frames = rough_frames(2000, seed)
    return BoltzmannGenerator.build(
        chain_system(),
        potential or ChainPotential(),
        frames,
        TEMPERATURE,
        torch.Generator().manual_seed(seed),
        dtype=dtype,
        n_couplings=2,
        hidden=16,
    ), frames


def test_reweighted_internal_marginals_are_exact_including_jacobians():
    """An untrained flow proposes broad Gaussians; reweighting must recover ⟨d⟩ (∝ d² e^{-u}),
    ⟨a⟩ (∝ sin a e^{-u}) and ⟨cos τ⟩ exactly. A missing Jacobian term shifts ⟨d⟩ by ~13 σ."""
    bg, _ = chain_generator()
    samples = bg.draw(20_000, torch.Generator().manual_seed(1))
    assert samples.n_invalid_geometry + samples.n_nonfinite_energy < 20
    x, log_w = samples.positions, samples.log_weights
    generator = torch.Generator().manual_seed(2)
    checks = {
        "bond": (torch.linalg.vector_norm(x[:, 1] - x[:, 0], dim=-1), exact_bond_mean()),
        "angle": (bond_angle(x[:, 0], x[:, 1], x[:, 2]), exact_angle_mean()),
        "cos torsion": (torch.cos(dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3])), exact_cos_torsion_mean()),
    }
    for name, (values, exact) in checks.items():
        estimate = weighted_mean(values, log_w, generator)
        assert abs(estimate.value - exact) < 4 * estimate.error, (name, estimate, exact)
    assert 0.05 < ess_fraction(log_w) < 0.9


def test_draw_log_prob_matches_log_prob_of_the_positions():
    bg, _ = chain_generator()
    samples = bg.draw(200, torch.Generator().manual_seed(3))
    torch.testing.assert_close(bg.log_prob(samples.positions), samples.log_prob, atol=1e-8, rtol=1e-10)
    # rigid motions do not change the density
    rotation, _ = torch.linalg.qr(
        torch.randn(3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    )
    moved = samples.positions @ rotation.T * torch.sign(torch.det(rotation)) + 0.7
    torch.testing.assert_close(bg.log_prob(moved), samples.log_prob, atol=1e-8, rtol=1e-10)


def test_non_finite_energies_get_zero_weight_and_finite_gradients():
    bg, frames = chain_generator(ChainPotential(nan_window=(0.0, 1.0)))
    samples = bg.draw(2000, torch.Generator().manual_seed(5))
    assert samples.n_nonfinite_energy > 100  # ~1/6 of uniform torsions hit the NaN window
    assert not torch.isnan(samples.log_weights).any()
    assert torch.isneginf(samples.log_weights).sum() >= samples.n_nonfinite_energy
    loss, stats = bg.kl_loss(256, torch.Generator().manual_seed(6), energy_high=100.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in bg.flow.parameters())


def test_soften_energy_is_continuous_monotone_and_finite():
    u = torch.tensor([-5.0, 99.0, 100.0, 101.0, 1e12, math.inf, math.nan], requires_grad=True)
    soft = soften_energy(u, 100.0)
    assert torch.isfinite(soft).all()
    assert soft[:4].tolist() == pytest.approx([-5.0, 99.0, 100.0, 100 + math.log(2)])
    assert soft[4] < 130
    soft.sum().backward()
    assert torch.isfinite(u.grad).all() and u.grad[-2:].tolist() == [0.0, 0.0]


def test_mirror_images_are_reported_and_excluded(alanine_frames, alanine):
    system, frames = alanine_frames
    _, _, potential = alanine
    bg = BoltzmannGenerator.build(
        system, potential, frames, 300.0, torch.Generator().manual_seed(0), n_couplings=2, hidden=8
    )
    assert bg.chiral_centres and not bg.wrong_chirality(frames).any()
    mirrored = frames * torch.tensor([-1.0, 1.0, 1.0], dtype=frames.dtype)
    assert bg.wrong_chirality(mirrored).all()
    u = bg.reduced_energy(torch.cat([frames[:3], mirrored[:3]]))
    assert torch.isfinite(u[:3]).all() and torch.isinf(u[3:]).all()
    # the force field itself cannot tell: the mirror image has the same energy
    torch.testing.assert_close(potential.energy(mirrored[:3]), potential.energy(frames[:3]))


def test_training_improves_likelihood_then_energy():
    bg, frames = chain_generator(dtype=torch.float32)
    generator = torch.Generator().manual_seed(7)
    before = ess_fraction(bg.draw(2000, torch.Generator().manual_seed(8)).log_weights)
    history = bg.train(
        frames,
        generator,
        n_steps=150,
        batch_size=128,
        kl_batch_size=128,
        kl_weight=lambda step: 0.0 if step < 50 else 0.5,
        validation=rough_frames(200, seed=11),
        learning_rate=5e-3,
        log_every=25,
    )
    assert history[-1]["step"] == 149 and "kl" in history[-1]
    assert all(math.isfinite(row["nll"]) and math.isfinite(row["validation_nll"]) for row in history)
    after = ess_fraction(bg.draw(2000, torch.Generator().manual_seed(8)).log_weights)
    assert after > before + 0.1, (before, after)


def test_clashing_alanine_geometries_get_weight_zero_never_nan(alanine_frames, alanine):
    system, frames = alanine_frames
    _, _, potential = alanine
    bg = BoltzmannGenerator.build(
        system, potential, frames, 300.0, torch.Generator().manual_seed(0), n_couplings=2, hidden=8
    )
    clashing = frames[:4].clone()
    clashing[0, 0] = clashing[0, 21]  # two non-bonded atoms (the caps' H) on top of each other
    clashing[1, 0] = clashing[1, 21] + 1e-4
    clashing[2, 5] = float("nan")
    u = bg.reduced_energy(clashing)
    log_w = log_importance_weights(-u, bg.log_prob(clashing).double())
    assert not torch.isnan(log_w).any()
    assert torch.isneginf(log_w[2]) and (torch.isneginf(log_w[0]) or u[0] > 1e6)
    assert torch.isfinite(log_w[3])
    # a tiny but non-zero distance gives a huge finite energy: weight underflows to 0 relative to normal frames
    normal_w = log_importance_weights(-bg.reduced_energy(frames[:4]), bg.log_prob(frames[:4]).double())
    assert (log_w[1] < normal_w.max() - 1e3) or torch.isneginf(log_w[1])


def test_keep_best_ends_with_the_selected_weights_and_the_learning_rate_decays():
    bg, frames = chain_generator(dtype=torch.float32)
    validation = rough_frames(200, seed=12)
    history = bg.train(
        frames,
        torch.Generator().manual_seed(3),
        n_steps=60,
        batch_size=64,
        learning_rate=2e-2,  # large enough that the last step is rarely the best
        validation=validation,
        keep_best=True,
        log_every=5,
    )
    kept = [row for row in history if row.get("kept")]
    best = min(row["validation_nll"] for row in history)
    assert kept[-1]["validation_nll"] == best and kept[-1] is not history[-1]  # restored, not last
    with torch.no_grad():
        assert float(bg.ml_loss(validation.float())) == pytest.approx(best, abs=1e-4)
    rates = [row["learning_rate"] for row in history]
    assert rates[0] == pytest.approx(2e-2) and rates[-1] < 0.1 * rates[0]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    with pytest.raises(ValueError, match="pass validation frames"):
        bg.train(frames, torch.Generator().manual_seed(3), n_steps=1, keep_best=True)


def test_mixed_phase_keep_best_reselects_the_top_windows_on_fresh_samples(monkeypatch):
    monkeypatch.setattr("molsamp.flows.boltzmann.RESELECTION_SAMPLES", 2000)
    bg, frames = chain_generator(dtype=torch.float32)
    weights_at_step = {}

    def remember(row):
        weights_at_step[row["step"]] = {k: v.clone() for k, v in bg.flow.state_dict().items()}

    history = bg.train(
        frames,
        torch.Generator().manual_seed(5),
        n_steps=60,
        batch_size=128,
        kl_batch_size=256,
        kl_weight=0.5,
        learning_rate=2e-2,
        keep_best=True,
        log_every=5,  # 5 steps × 256 samples pool ≥ MIN_SELECTION_SAMPLES
        callback=remember,
    )
    windows = sorted((row["window_ess"] for row in history[1:]), reverse=True)[:3]  # row 0 pools one batch
    measured = history[-1]["reselection"]
    assert sorted(c["window_ess"] for c in measured) == sorted(windows)
    assert all(0.0 < c["fresh_ess"] <= 1.0 for c in measured)
    kept = max(measured, key=lambda c: c["fresh_ess"])["step"]
    assert history[-1]["kept_step"] == kept
    for name, value in bg.flow.state_dict().items():
        torch.testing.assert_close(value, weights_at_step[kept][name])


def test_reweighted_likelihood_of_flow_samples_alone_learns_the_boltzmann_distribution():
    """No data: −Σ w̄ log q(x) on the flow's own samples is the forward KL(p ‖ q), so the
    unweighted samples approach p (⟨cos τ⟩ starts 0.63 off, from uniform torsions)."""
    from .toy_molecule import exact_cos_torsion_mean

    bg, _ = chain_generator(dtype=torch.float32)

    def ess_and_torsion_error():
        samples = bg.draw(4000, torch.Generator().manual_seed(8))
        x = samples.positions
        cos_torsion = torch.cos(dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3])).mean()
        return ess_fraction(samples.log_weights), abs(float(cos_torsion) - exact_cos_torsion_mean())

    ess_before, error_before = ess_and_torsion_error()
    optimizer = torch.optim.Adam(bg.flow.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(9)
    for _ in range(150):
        loss, log_weights = bg.reweighted_nll(512, generator)
        assert log_weights.shape == (512,) and not torch.isnan(log_weights).any()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ess_after, error_after = ess_and_torsion_error()
    assert error_before > 0.5 and error_after < 0.05, (error_before, error_after)
    assert ess_before < 0.5 and ess_after > 0.9, (ess_before, ess_after)


def test_train_adds_the_reweighted_term_and_selects_on_its_samples():
    bg, frames = chain_generator(dtype=torch.float32)
    history = bg.train(
        frames, torch.Generator().manual_seed(4), n_steps=6, reweighted_weight=1.0, log_every=2
    )
    assert all(math.isfinite(row["reweighted_nll"]) for row in history)
    assert all(0.0 < row["window_ess"] <= 1.0 for row in history)  # from the reweighted samples
    with pytest.raises(ValueError, match="reweighted_weight must be >= 0"):
        bg.train(frames, torch.Generator().manual_seed(4), n_steps=1, reweighted_weight=-1.0)
