"""log|det J| of a step: exact on maps whose determinant is known, and on TrajCast equal to the
determinant of its finite-difference Jacobian."""

from __future__ import annotations

import math

import pytest
import torch

from molsamp.flows.trajcast import TrajCast
from molsamp.flows.trajcast.liouville import forecast_log_volume_change, log_volume_change
from molsamp.system import System

from ..potentials.conftest import random_structure
from .conftest import make_ballistic

Z = torch.tensor([8, 1, 1, 6, 1])
MASSES = torch.tensor([16.0, 1.0, 1.0, 12.0, 1.0], dtype=torch.float64)


def _states(n_walkers: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([random_structure(len(Z), 0.4, seed=seed + k) for k in range(n_walkers)])
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, v


def test_friction_contracts_by_its_factor_per_walker():
    x, v = _states(3, seed=1)
    decay = torch.tensor([0.9, 0.5, 1.0], dtype=torch.float64)[:, None, None]

    def damped(x, v):
        return x + 0.01 * v, decay * v

    expected = 3 * len(Z) * torch.log(decay.flatten())
    torch.testing.assert_close(log_volume_change(damped, x, v), expected, rtol=0, atol=1e-10)


def test_symplectic_euler_of_coupled_springs_keeps_the_volume():
    x, v = _states(2, seed=2)
    generator = torch.Generator().manual_seed(3)
    coupling = torch.randn(15, 15, generator=generator, dtype=torch.float64)
    stiffness = coupling @ coupling.T  # couples every coordinate of a walker

    def symplectic_euler(x, v):
        v_next = v - 0.05 * (x.reshape(len(x), -1) @ stiffness).reshape(x.shape)
        return x + 0.05 * v_next, v_next

    result = log_volume_change(symplectic_euler, x, v)
    assert result.abs().max() < 1e-9, result


def test_trajcast_log_volume_change_matches_finite_differences():
    torch.manual_seed(0)
    model = TrajCast([1, 6, 8], 0.01, r_max=0.4, channels=4, max_ell=2, dtype=torch.float64)
    with torch.no_grad():
        model.avg_num_neighbors.fill_(4.0)
    system = System(Z, MASSES)
    x, v = _states(2, seed=4)
    result = forecast_log_volume_change(model, system, x, v)

    def flat_step(state: torch.Tensor) -> torch.Tensor:
        xs, vs = state.reshape(1, len(Z), 6).split(3, dim=-1)
        with torch.no_grad():
            dx, v_next = model.forecast(Z, MASSES, xs, vs, None, system.pbc)
        return torch.cat([xs + dx, v_next], dim=-1).flatten()

    step_size = 1e-6
    for walker in range(2):
        state = torch.cat([x[walker], v[walker]], dim=-1).flatten()
        columns = []
        for k in range(len(state)):
            shift = torch.zeros_like(state)
            shift[k] = step_size
            columns.append((flat_step(state + shift) - flat_step(state - shift)) / (2 * step_size))
        expected = torch.linalg.slogdet(torch.stack(columns, dim=1))[1]
        assert float(result[walker]) == pytest.approx(float(expected), abs=1e-5)
    assert result.abs().min() > 1e-3  # an untrained network does not keep the volume


def test_ballistic_trajcast_keeps_the_volume():
    model = make_ballistic(TrajCast([1, 6, 8], 0.01, r_max=0.4, channels=4, dtype=torch.float64))
    x, v = _states(2, seed=5)
    result = forecast_log_volume_change(model, System(Z, MASSES), x, v)
    assert result.abs().max() < 1e-9 and not math.isnan(float(result.sum()))


def test_log_volume_change_rejects_mismatched_shapes():
    x, v = _states(1, seed=6)
    with pytest.raises(ValueError, match="one shape"):
        log_volume_change(lambda a, b: (a, b), x, v[:, :2])
