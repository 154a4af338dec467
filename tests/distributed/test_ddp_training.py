"""Two gloo ranks on the CPU: DDP training equals single-process training on the combined batch.

What must match: a DDP step averages the ranks' gradients, so each rank's loss is its part of
the *global* batch's loss (sums divided by the global counts of structures and force
components). The structures here have different atom counts, so a per-rank mean over force
components would weight atoms differently from the combined batch and the test would fail.
Ranks whose time budgets differ still stop at the same batch: rank 0's budget holds.
"""

import math

import torch
import torch.multiprocessing as mp

from molsamp.potentials import load_potential
from molsamp.potentials.datasets import AtomsDataset, Structure
from molsamp.potentials.training import TrainingConfig, train

from ..potentials.models import small_mace
from .gloo import gloo_group

ELEMENTS = (1, 6, 8)


def _data() -> tuple[AtomsDataset, AtomsDataset]:
    generator = torch.Generator().manual_seed(3)
    structures = []
    for k in range(11):
        n = 3 + k % 4  # 3…6 atoms: ranks' slices hold different numbers of force components
        z = torch.tensor(ELEMENTS)[torch.randint(0, 3, (n,), generator=generator)]
        x = 0.35 * torch.rand(n, 3, generator=generator, dtype=torch.float64)
        energy = torch.randn((), generator=generator, dtype=torch.float64) * 10
        forces = torch.randn(n, 3, generator=generator, dtype=torch.float64) * 50
        structures.append(Structure(z, x, energy, forces))
    return AtomsDataset(structures[:8]), AtomsDataset(structures[8:])


def _config(batch_size: int, checkpoint=None, max_time_s: float = math.inf) -> TrainingConfig:
    # no EMA, one stage, constant lr: every step is a plain AdamW step on the batch gradient
    return TrainingConfig(
        max_epochs=2, batch_size=batch_size, lr=1e-2, ema_decay=0.0, stage_two_fraction=1.0,
        scheduler="constant", dtype=torch.float64, progress=False, seed=0, checkpoint=checkpoint,
        max_time_s=max_time_s,
    )  # fmt: skip


def _train(batch_size: int, distributed: bool, checkpoint=None, max_time_s: float = math.inf):
    train_set, val_set = _data()
    model = small_mace(ELEMENTS, r_max=0.3, seed=1)
    config = _config(batch_size, checkpoint, max_time_s)
    result = train(model, train_set, val_set, config, distributed=distributed)
    return model.state_dict(), [h["loss"] for h in result.history], [h["train_loss"] for h in result.history]


def _worker(
    rank: int, world: int, init_file: str, checkpoint: str | None, results, budgets=(math.inf, math.inf)
) -> None:
    with gloo_group(rank, world, init_file):
        results[rank] = _train(
            batch_size=2, distributed=True, checkpoint=checkpoint, max_time_s=budgets[rank]
        )


def test_ddp_on_two_ranks_matches_one_process_on_the_combined_batch(tmp_path):
    checkpoint = tmp_path / "ddp.pt"
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(checkpoint), results), nprocs=2, join=True)
    (weights0, val0, train0), (weights1, val1, train1) = results[0], results[1]
    assert train0 == train1
    single, single_val, single_train = _train(batch_size=4, distributed=False)

    initial = small_mace(ELEMENTS, r_max=0.3, seed=1).state_dict()
    assert any(not torch.allclose(initial[k], single[k]) for k in single)  # training moved the weights
    for name, value in single.items():
        assert torch.equal(weights0[name], weights1[name]), name  # the ranks agree exactly
        torch.testing.assert_close(weights0[name], value, rtol=1e-9, atol=1e-11, msg=name)
    # validation is sharded (2 + 1 structures) and summed over ranks; the training loss too
    torch.testing.assert_close(torch.tensor(val0), torch.tensor(single_val), rtol=1e-9, atol=0)
    torch.testing.assert_close(torch.tensor(train0), torch.tensor(single_train), rtol=1e-9, atol=0)
    assert val0 == val1
    # one checkpoint, written by rank 0, holding the selected weights
    saved = load_potential(checkpoint).state_dict()
    for name, value in weights0.items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=0, msg=name)
    assert not list(tmp_path.glob("*.partial"))


def test_distributed_flag_without_a_process_group_is_plain_training():
    plain, plain_val, _ = _train(batch_size=4, distributed=False)
    flagged, flagged_val, _ = _train(batch_size=4, distributed=True)
    assert plain_val == flagged_val
    for name, value in plain.items():
        assert torch.equal(flagged[name], value), name


def test_ranks_with_different_budgets_stop_at_the_same_batch(tmp_path):
    """Rank 1's budget runs out after its first batch, rank 0's never does: both must train
    both epochs, as rank 0's budget says (else one rank validates while the other is in the
    gradient all-reduce, and gloo fails)."""
    results = mp.Manager().dict()
    args = (2, str(tmp_path / "init"), None, results, (1e6, 1e-9))
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    (weights0, val0, _), (weights1, val1, _) = results[0], results[1]
    assert len(val0) == len(val1) == 2
    for name, value in weights0.items():
        assert torch.equal(value, weights1[name]), name
