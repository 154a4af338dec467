"""Cost of uncertainty-aware MD: an ensemble of K MACE members per Langevin step vs one model.

A deep ensemble or a set of SG-MCMC posterior samples evaluated member by member costs K×
a single model; :class:`~molsamp.potentials.EnsemblePotential` evaluates the members in one
vectorised pass (``torch.func.vmap`` over stacked weights), which should cost far less.

Run: ``OMP_NUM_THREADS=1 python benchmarks/ensemble_cost.py [--members 4 8] [--steps 50]
[--device cuda]``. Prints median ms per MD step (alanine dipeptide, small MACE, 1 CPU thread) for
one model, the batched ensemble and the member-by-member loop, timed round-robin in the same
run, and the ratios to one model.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from molsamp.integrators import LangevinBAOAB
from molsamp.potentials import MACE, EnsemblePotential
from molsamp.systems import alanine_dipeptide


def small_mace(seed: int) -> MACE:
    torch.manual_seed(seed)
    return MACE(
        [1, 6, 7, 8], r_max=0.4, max_ell=2, correlation=3, hidden_irreps="16x0e+16x1o",
        radial_mlp=(32, 32), dtype=torch.float32,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steps", type=int, default=50, help="Langevin steps per timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="torch device of models and state, e.g. cuda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    system, state, _ = alanine_dipeptide(seed=0, dtype=torch.float32)
    state = state.to(args.device)

    def integrator(potential):
        generator = torch.Generator(device=args.device).manual_seed(0)
        langevin = LangevinBAOAB(potential, system.masses, 0.001, 300.0, 1.0, generator)

        def run():
            langevin.step(state, args.steps)
            if state.positions.is_cuda:
                torch.cuda.synchronize()

        return run

    def model(seed: int) -> MACE:
        return small_mace(seed).bind(system.atomic_numbers).to(args.device)

    runs = {"single model": integrator(model(0))}
    for k in args.members:
        members = [model(seed) for seed in range(k)]
        runs[f"ensemble K={k} batched"] = integrator(EnsemblePotential(members, batched=True))
        runs[f"ensemble K={k} loop"] = integrator(EnsemblePotential(members, batched=False))
    for run in runs.values():
        run()  # warm-up
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            timings[name].append(1e3 * (time.perf_counter() - start) / args.steps)
    base = statistics.median(timings["single model"])
    where = torch.cuda.get_device_name() if state.positions.is_cuda else "1 CPU thread"
    print(f"alanine dipeptide (22 atoms), small MACE, {where}, median of {args.repeats}")
    print(f"{'':28s} {'ms/step':>9s} {'× single':>9s}")
    for name, values in timings.items():
        ms = statistics.median(values)
        print(f"{name:28s} {ms:9.2f} {ms / base:9.2f}")


if __name__ == "__main__":
    main()
