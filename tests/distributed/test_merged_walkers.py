"""Two gloo ranks on the CPU: independent Langevin walkers per rank, merged on rank 0."""

import torch
import torch.multiprocessing as mp

from molsamp.distributed import gather_walkers, merge_states, rank_seed
from molsamp.integrators import LangevinBAOAB, simulate
from molsamp.systems import double_well

from .gloo import gloo_group

N_STEPS = 60


def _walkers(rank: int):
    """Rank r runs 2 + r walkers of a double well with its own random stream; returns the
    final state and the x coordinate of every walker after every 10 steps, (B_r, 6)."""
    system, state, potential = double_well(n_atoms=2, n_walkers=2 + rank, seed=rank_seed(5, rank) % 2**31)
    langevin = LangevinBAOAB(potential, system.masses, 0.002, 300.0, 5.0, rank_seed(11, rank))
    samples = []
    for _ in range(N_STEPS // 10):
        state = simulate(langevin, state, 10, progress=False, guard=None)
        samples.append(state.positions[:, 0, 0])
    return state, torch.stack(samples, dim=1)


def _worker(rank: int, world: int, init_file: str, results) -> None:
    with gloo_group(rank, world, init_file):
        state, samples = _walkers(rank)
        merged, merged_samples = merge_states(state), gather_walkers(samples)
        results[rank] = None if merged is None else (merged, merged_samples)


def test_merged_walkers_equal_the_union_of_per_rank_walkers(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    assert results[1] is None  # only rank 0 holds the merged walkers
    merged, merged_samples = results[0]
    (state0, samples0), (state1, samples1) = _walkers(0), _walkers(1)  # the same work, in turn
    assert merged.n_walkers == 5 and merged.step == N_STEPS
    assert torch.equal(merged.positions, torch.cat([state0.positions, state1.positions]))
    assert torch.equal(merged.velocities, torch.cat([state0.velocities, state1.velocities]))
    assert torch.equal(merged.potential_energy, torch.cat([state0.potential_energy, state1.potential_energy]))
    assert torch.equal(merged_samples, torch.cat([samples0, samples1]))
    assert not torch.equal(samples0[0], samples1[0])  # the ranks drew different noise


def test_rank_seeds_differ_across_ranks_and_base_seeds():
    seeds = {rank_seed(base, rank) for base in range(3) for rank in range(4)}
    assert len(seeds) == 12
    assert rank_seed(0, 1) != rank_seed(1, 0)


def test_merge_without_a_process_group_returns_the_state():
    _, state, _ = double_well(n_walkers=3)
    merged = merge_states(state)
    assert torch.equal(merged.positions, state.positions) and merged.n_walkers == 3
