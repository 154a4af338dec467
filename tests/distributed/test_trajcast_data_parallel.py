"""Two gloo ranks on the CPU: data-parallel TrajCast training equals single-process training on
the global batch.

Each rank draws the same global batch of windows and takes its half; the averaged gradient is
the global batch's (every rank's loss is a mean over the same number of windows). Rank 1 starts
from other weights, so the test also fails if rank 0's weights are not broadcast first.
Ranks whose time budgets differ (each computed from its own clock) still stop at one step.
"""

import math

import torch
import torch.multiprocessing as mp

from molsamp.flows.trajcast import ForecastTrainingConfig, TrajCast, train_forecaster

from ..flows.test_trajcast import _triangle_data
from .gloo import gloo_group


def _train(batch_size: int, distributed: bool, seed: int = 0, max_time_s: float = math.inf):
    data, _, _ = _triangle_data(walkers=6, n_frames=30)
    train, val = data.split(0.3)
    torch.manual_seed(seed)
    model = TrajCast([1, 8], 0.005, r_max=0.3, channels=4, max_ell=2, dtype=torch.float64)
    # constant learning rate, no EMA, a step budget: every step is a plain Adam step
    config = ForecastTrainingConfig(
        lag=5, batch_size=batch_size, lr=1e-2, final_lr_factor=1.0, max_steps=5,
        val_every=2, ema_decay=0.0, progress=False, dtype=torch.float64, max_time_s=max_time_s,
    )  # fmt: skip
    result = train_forecaster(model, train, val, config, distributed=distributed)
    return model.state_dict(), [h["val_loss"] for h in result.history], result.steps


def _worker(rank: int, world: int, init_file: str, results, budgets=(math.inf, math.inf)) -> None:
    with gloo_group(rank, world, init_file):
        results[rank] = _train(batch_size=2, distributed=True, seed=rank, max_time_s=budgets[rank])


def test_two_ranks_match_one_process_on_the_global_batch(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    (weights0, val0, steps0), (weights1, val1, steps1) = results[0], results[1]
    single, single_val, single_steps = _train(batch_size=4, distributed=False)

    assert steps0 == steps1 == single_steps == 5
    torch.manual_seed(0)
    initial = TrajCast([1, 8], 0.005, r_max=0.3, channels=4, max_ell=2, dtype=torch.float64)
    assert any(not torch.equal(p, single[name]) for name, p in initial.named_parameters())  # it trained
    assert len(val0) == 3  # validated at steps 2, 4 and the end
    for name, value in single.items():
        assert torch.equal(weights0[name], weights1[name]), name  # the ranks agree exactly
        torch.testing.assert_close(weights0[name], value, rtol=1e-9, atol=1e-12, msg=name)
    # validation is sharded over the ranks and summed
    assert val0 == val1
    torch.testing.assert_close(torch.tensor(val0), torch.tensor(single_val), rtol=1e-9, atol=0)


def test_ranks_with_different_budgets_stop_at_one_step(tmp_path):
    """Rank 0's budget holds on every rank: a mismatch used to leave one rank in the gradient
    all-reduce while the other validated (a gloo size mismatch that killed the run)."""
    results = mp.Manager().dict()
    # rank 1's budget runs out after its first step; rank 0's never does
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), results, (1e6, 1e-9)), nprocs=2, join=True)
    (weights0, _, steps0), (weights1, _, steps1) = results[0], results[1]
    assert steps0 == steps1 == 5  # max_steps, under rank 0's budget
    for name, value in weights0.items():
        assert torch.equal(value, weights1[name]), name
