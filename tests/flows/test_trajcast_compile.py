"""``TrajCast.use_compile``: the compiled network forecasts and trains as the eager one.

The forecast test compiles with the default (inductor) backend, which is what training and
rollouts run, and checks forecasts and gradients with changing walker and edge counts to
float64 rounding. The training test uses the ``aot_eager`` backend: it checks the captured
network and its compiled backward in a multi-step loss without generating C++ kernels.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from molsamp.flows.trajcast import ForecastTrainingConfig, TrajCast, TrajectoryData, train_forecaster
from molsamp.system import System

from ..potentials.conftest import random_structure
from .conftest import make_ballistic

Z = torch.tensor([8, 1, 1, 6, 1, 7, 6, 8])
MASSES = torch.tensor([16.0, 1.0, 1.0, 12.0, 1.0, 14.0, 12.0, 16.0], dtype=torch.float64)


def _model(seed: int = 0) -> TrajCast:
    torch.manual_seed(seed)
    model = TrajCast([1, 6, 7, 8], 0.01, r_max=0.4, channels=4, max_ell=2, dtype=torch.float64)
    with torch.no_grad():
        model.avg_num_neighbors.fill_(6.0)
    return model


def _walkers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([random_structure(len(Z), 0.6, seed=seed + k) for k in range(n)])
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, v


def _forecast_and_gradients(model: TrajCast, x: torch.Tensor, v: torch.Tensor):
    model.zero_grad(set_to_none=True)
    dx, v_new = model.forecast(Z, MASSES, x, v)
    (dx.square().sum() + (v_new * v).sum()).backward()
    return dx.detach(), v_new.detach(), [p.grad.clone() for p in model.parameters()]


def _assert_same_forecast(eager: TrajCast, compiled: TrajCast, rtol: float, atol: float) -> None:
    for n_walkers, seed in ((2, 10), (3, 20)):  # other walker and edge counts: dynamic shapes
        x, v = _walkers(n_walkers, seed)
        expected = _forecast_and_gradients(eager, x, v)
        got = _forecast_and_gradients(compiled, x, v)
        torch.testing.assert_close(got[:2], expected[:2], rtol=rtol, atol=atol)
        for g, e in zip(got[2], expected[2], strict=True):
            torch.testing.assert_close(g, e, rtol=rtol, atol=atol)


def test_compiled_forecast_and_gradients_equal_the_eager_ones():
    eager = _model(seed=3)
    compiled = copy.deepcopy(eager).use_compile()
    _assert_same_forecast(eager, compiled, rtol=1e-9, atol=1e-10)
    assert compiled._compiled is not None
    twin = copy.deepcopy(compiled)  # compiled code is not copied; the copy compiles its own
    assert twin._compiled is None and twin._compile_options == {"dynamic": True}
    assert compiled.use_compile(False)._compiled_or_eager(compiled._residuals) == compiled._residuals


def _spring_free_data(seed: int) -> TrajectoryData:
    """Ballistic segments (x + v t) of 8 atoms: any data serve to compare two trainings."""
    x, v = _walkers(6, seed)
    t = 0.005 * torch.arange(20, dtype=torch.float64)
    positions = x[:, None] + v[:, None] * t[None, :, None, None]
    velocities = v[:, None].expand_as(positions).clone()
    return TrajectoryData(System(Z, MASSES), positions, velocities, 0.005)


@pytest.mark.slow
def test_compiled_training_takes_the_eager_training_steps():
    """Same seed and data, a 3-step rollout loss (later steps take inputs that carry
    gradients): the compiled training (``config.compile``) ends with the eager training's
    weights and validation losses, and leaves the model compiled for rollouts. (No weight
    average: its copy would compile once more, and ``test_compiled_forecast_...`` covers copies.)"""
    data = _spring_free_data(seed=40)
    train, val = data.split(0.4)
    results = {}
    for compile_network in (False, True):
        model = _model(seed=5)
        if compile_network:
            model.use_compile(backend="aot_eager")  # config.compile keeps given options
        config = ForecastTrainingConfig(
            lag=2, rollout_steps=3, batch_size=3, max_steps=6, val_every=3, ema_decay=0.0,
            progress=False, dtype=torch.float64, compile=compile_network,
        )  # fmt: skip
        results[compile_network] = (train_forecaster(model, train, val, config), model)
    (eager, eager_model), (compiled, compiled_model) = results[False], results[True]
    assert compiled_model.compiled and not eager_model.compiled
    assert [h["val_loss"] for h in compiled.history] == pytest.approx(
        [h["val_loss"] for h in eager.history], rel=1e-10
    )
    for a, b in zip(compiled_model.state_dict().values(), eager_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_cli_compile_flags_reach_the_network(tmp_path, monkeypatch):
    """``molsamp forecast train|rollout --compile`` run the forecaster's network through
    ``torch.compile`` (recorded by a stand-in that returns the network uncompiled, so the test
    costs no compilation); without the flag nothing is compiled."""
    from molsamp.cli import main
    from molsamp.flows.trajcast import load_forecaster, save_forecaster

    compiled = []

    def record(network, **options):
        compiled.append(options)
        return network

    monkeypatch.setattr(torch, "compile", record)
    model_dir = tmp_path / "model"
    args = ["forecast", "train", "--system", "alanine_dipeptide", "--output", str(model_dir)]
    args += [
        "--minutes",
        "0.02",
        "--md-ps",
        "0.5",
        "--walkers",
        "1",
        "--channels",
        "4",
        "--quiet",
        "--compile",
    ]
    assert main(args) == 0
    assert compiled and all(options == {"dynamic": True} for options in compiled)
    assert json.loads((model_dir / "training.json").read_text())["config"]["compile"] is True
    model, metadata = load_forecaster(model_dir / "model.pt")
    # a seconds-old model is not stable: roll out the ballistic forecast
    save_forecaster(make_ballistic(model), model_dir / "model.pt", metadata)
    rollout = ["forecast", "rollout", "--model", str(model_dir / "model.pt"), "--steps", "2", "--quiet"]
    compiled.clear()
    assert main([*rollout, "--output", str(tmp_path / "eager")]) == 0
    assert compiled == []
    assert main([*rollout, "--output", str(tmp_path / "compiled"), "--compile"]) == 0
    assert compiled == [{"dynamic": True}]
