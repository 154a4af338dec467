"""Calibrating the velocity noise of a forecaster on its own rollouts."""

from __future__ import annotations

import pytest
import torch

from molsamp.flows.trajcast import ForecastIntegrator, TrajCast, split_motion
from molsamp.flows.trajcast.calibration import calibrate_velocity_noise, canonical_mean_square
from molsamp.integrators import SimulationExploded
from molsamp.system import State, System
from molsamp.testing import assert_mean_close

from .test_trajcast import MASSES, Z, _state

TEMPERATURE = 300.0
KEPT_PER_STEP = {1: 0.85, 6: 0.97, 7: 0.95, 8: 0.9}  # velocity factor of one forecast per element


class _DampingForecaster(TrajCast):
    """A forecaster whose only error is friction: it keeps the atoms in place and multiplies
    each element's internal velocity by ``KEPT_PER_STEP`` (momenta conserved)."""

    def forecast(
        self, atomic_numbers, masses, positions, velocities, cell=None, pbc=(True,) * 3, *, angular=None
    ):
        factor = torch.tensor([KEPT_PER_STEP[int(z)] for z in atomic_numbers], dtype=velocities.dtype)
        kept, internal = split_motion(positions, velocities, masses, bool(angular))
        damped = split_motion(positions, factor[:, None] * internal, masses, bool(angular))[1]
        return torch.zeros_like(positions), kept + damped


def _per_element_ratio(model, system, state, thermostat_time, steps, seed):
    """(T, n_elements) per step: each element's mean-square velocity over its canonical one."""
    integrator = ForecastIntegrator(
        model, system, temperature=TEMPERATURE, thermostat_time=thermostat_time, thermostat="langevin",
        generator=seed,
    )  # fmt: skip
    target = canonical_mean_square(
        system, state.positions, TEMPERATURE, True, torch.Generator().manual_seed(1), 4000
    )
    x, v, ratios = state.positions, state.velocities, []
    with torch.no_grad():
        for _ in range(steps):
            x, v = integrator.advance(x, v, None)
            mean_square = v.square().mean((0, 2))
            ratios.append(
                torch.stack([mean_square[Z == z].sum() / target[Z == z].sum() for z in (1, 6, 7, 8)])
            )
    return torch.stack(ratios)[steps // 10 :].numpy()


def test_calibrated_noise_holds_every_element_canonical_under_a_weak_thermostat():
    """A forecaster that damps velocities by 3–15 % per step, rolled out under a per-atom
    Langevin thermostat of τ = 50 intervals, runs far too cold without noise; after calibration
    its noise balances the damping and every element's kinetic temperature is canonical."""
    model = _DampingForecaster([1, 6, 7, 8], 0.01, channels=4, dtype=torch.float64)
    system = System(Z, MASSES)
    x, v = _state(seed=3)
    walkers = 16
    x = x.expand(walkers, -1, -1).clone()
    v = split_motion(
        x, 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype), MASSES, True
    )[1]
    state = State(x, v)
    cold = _per_element_ratio(model, system, state, 0.5, 600, seed=4)
    assert (cold.mean(0) < 0.5).all(), cold.mean(0)  # not vacuous: damping wins over the thermostat

    result = calibrate_velocity_noise(
        model, system, state, TEMPERATURE, 0.5, rounds=3, steps=1000, warmup=100, generator=6
    )
    assert all(sigma > 0 for sigma in result.sigma)
    ratios = _per_element_ratio(model, system, state, 0.5, 3000, seed=8)
    for column, element in enumerate((1, 6, 7, 8)):
        assert_mean_close(ratios[:, column], 1.0, label=f"⟨v²⟩ / canonical of Z = {element}")
        assert abs(ratios[:, column].mean() - 1.0) < 0.05


def test_canonical_mean_square_puts_less_on_heavy_atoms():
    """Projected off the conserved momenta, heavy atoms keep a smaller share of k_B T / m than H."""
    x, _ = _state(seed=3)
    share = canonical_mean_square(
        System(Z, MASSES), x, TEMPERATURE, True, torch.Generator().manual_seed(0), 4000
    )
    share = share * MASSES / (0.0083144626 * TEMPERATURE)
    free = (3 * len(Z) - 6) / (3 * len(Z))
    torch.testing.assert_close(share.mean(), torch.tensor(free, dtype=share.dtype), rtol=0.02, atol=0)
    assert share[Z == 1].min() > share[Z == 8].max()


def test_calibration_names_its_settings():
    model = _DampingForecaster([1, 6, 7, 8], 0.01, channels=4, dtype=torch.float64)
    x, v = _state()
    with pytest.raises(ValueError, match="rounds and steps must be >= 1"):
        calibrate_velocity_noise(model, System(Z, MASSES), State(x, v), TEMPERATURE, 0.1, rounds=0)


def test_cli_train_calibrates_for_the_thermostat_it_is_given(tmp_path, monkeypatch):
    """``forecast train --calibrate-noise-ps τ`` calibrates the trained model for τ and says so in
    the model's metadata and training.json (the calibration itself is tested above; a model
    trained for seconds is not stable enough to calibrate, so it is recorded here)."""
    import json

    from molsamp.cli import main
    from molsamp.flows.trajcast import calibration, load_forecaster

    calls = []

    def record(model, system, state, temperature, thermostat_time, **options):
        calls.append((system.n_atoms, tuple(state.positions.shape), temperature, thermostat_time))
        model.velocity_noise.fill_(0.25)
        return calibration.NoiseCalibration([0.25] * 4, [1.0] * 4, [])

    monkeypatch.setattr(calibration, "calibrate_velocity_noise", record)
    out = tmp_path / "model"
    args = ["forecast", "train", "--system", "alanine_dipeptide", "--output", str(out), "--minutes", "0.02"]
    args += ["--md-ps", "1", "--walkers", "2", "--channels", "4", "--quiet", "--calibrate-noise-ps", "0.1"]
    assert main(args) == 0
    assert calls == [(22, (2, 22, 3), 300.0, 0.1)]
    model, metadata = load_forecaster(out / "model.pt")
    assert metadata["velocity_noise_calibrated_for"] == {"thermostat": "langevin", "thermostat_ps": 0.1}
    torch.testing.assert_close(model.velocity_noise, torch.full((4,), 0.25, dtype=model.dtype))
    assert json.loads((out / "training.json").read_text())["noise_calibration"]["sigma"] == [0.25] * 4


class _BlowingUpForecaster(_DampingForecaster):
    """Doubles the velocities every step: non-finite after ~1 000 steps."""

    def forecast(
        self, atomic_numbers, masses, positions, velocities, cell=None, pbc=(True,) * 3, *, angular=None
    ):
        return torch.zeros_like(positions), 2.0 * velocities


def test_a_rollout_that_explodes_stops_calibration_and_keeps_the_noise():
    model = _BlowingUpForecaster([1, 6, 7, 8], 0.01, channels=4, dtype=torch.float64)
    model.velocity_noise.fill_(0.1)
    x, v = _state()
    with pytest.raises(SimulationExploded, match="keeps its velocity noise"):
        calibrate_velocity_noise(
            model, System(Z, MASSES), State(x, v), TEMPERATURE, 0.1, steps=1500, warmup=0
        )
    torch.testing.assert_close(model.velocity_noise, torch.full((4,), 0.1, dtype=torch.float64))
