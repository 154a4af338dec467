"""Two gloo ranks on the CPU: one SG-MCMC chain per rank, merged on rank 0."""

import torch
import torch.multiprocessing as mp

from molsamp.distributed import gather_on_root, run_per_rank
from molsamp.integrators import SGLD

from .gloo import gloo_group

N_DATA = 200


def _chain(rank: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N_DATA, 2, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([0.5, -1.0], dtype=torch.float64) + 0.3 * torch.randn(
        N_DATA, generator=generator, dtype=torch.float64
    )
    model = torch.nn.Module()
    model.weights = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def nll(m, batch):
        return 0.5 * ((batch[0] @ m.weights - batch[1]) ** 2).sum() / 0.3**2, len(batch[1])

    sampler = SGLD(model, nll, N_DATA, 1.0, 1e-4, generator=1000 + rank)
    return sampler.sample([(x, y)], 300, burn_in=100, thin=20, progress=False)


def _worker(rank: int, world: int, init_file: str, results) -> None:
    with gloo_group(rank, world, init_file):
        results[rank] = run_per_rank(_chain)


def test_merged_chains_equal_the_union_of_per_rank_chains(tmp_path):
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    assert results[1] is None  # only rank 0 holds the merged samples
    merged = results[0]
    expected = _chain(0) + _chain(1)  # the same chains run one after another in this process
    assert len(merged) == len(expected) == 20
    for got, want in zip(merged, expected, strict=True):
        assert torch.equal(got["weights"], want["weights"])
    assert not torch.equal(merged[0]["weights"], merged[10]["weights"])  # ranks ran different chains


def test_gather_without_a_process_group_returns_the_local_items():
    items = [torch.ones(2, requires_grad=True)]
    gathered = gather_on_root(items)
    assert len(gathered) == 1 and not gathered[0].requires_grad
