"""Timewarp against Langevin MD on alanine dipeptide (vacuum, 300 K), measured in one process:
effective samples of the slowest φ/ψ CV (αR indicator, cos φ, cos ψ) per wall second and per
CPU second, for the Timewarp MH chain, OpenMM's Langevin, molsamp's torch Langevin (one walker)
and the chain's own Langevin on its walkers without flow moves; with the chain's acceptance and
the training cost (from the example's ``results.json``).

molsamp's torch Langevin is the same BAOAB chain as OpenMM's (1 fs, γ = 1/ps), so its rate is
measured on a short run and its τ taken from the OpenMM run.

Run after ``examples/timewarp_alanine.py --output RUN``:
``OMP_NUM_THREADS=1 python benchmarks/timewarp_sampling.py --run RUN``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from molsamp.flows.ramachandran import chain_ess, collective_variables, md_frames, phi_psi
from molsamp.flows.timewarp import load_timewarp
from molsamp.flows.timewarp_commands import run_chain
from molsamp.systems import alanine_dipeptide

TEMPERATURE = 300.0


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def md_row(engine: str, nanoseconds: float, seed: int, topology, measure_ess: bool = True) -> dict:
    frames, wall_s, cpu_s = timed(
        lambda: md_frames("vacuum", TEMPERATURE, nanoseconds, 1.0, seed, equilibration_ps=0.0, engine=engine)
    )
    row = {
        "method": f"Langevin MD ({engine})",
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "steps": int(frames.shape[0] * 1000),
    }
    if measure_ess:
        ess, taus = chain_ess(collective_variables(phi_psi(frames, topology))[:, None, :])
        row.update(ess=ess, tau_ps=taus)
    return row


def walkers_langevin_row(
    system, potential, frames, walkers: int, block_steps: int, seconds: float, seed: int
):
    """The chain's own Langevin (1 fs, γ = 1/ps) on the same walkers and starts, without flow
    moves, for ``seconds``: what the flow moves add to the chain (or cost it)."""
    from molsamp.flows.timewarp_commands import spread_starts
    from molsamp.flows.timewarp_mcmc import multichain_ess
    from molsamp.integrators import LangevinBAOAB, simulate

    state = spread_starts(frames, walkers, system, TEMPERATURE, torch.Generator().manual_seed(seed))
    langevin = LangevinBAOAB(potential, system.masses, 0.001, TEMPERATURE, 1.0, seed + 1)
    records = []
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds or len(records) < 4:
        state = simulate(langevin, state, block_steps, progress=False, guard=None)
        records.append(phi_psi(state.positions, system.topology))
    wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    cvs = collective_variables(np.stack(records))
    return {
        "method": f"molsamp Langevin, {walkers} walkers (no flow)",
        "ess": min(multichain_ess(cvs[:, :, k]) for k in range(cvs.shape[2])),
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "steps": len(records) * block_steps * walkers,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", type=Path, required=True, help="output folder of examples/timewarp_alanine.py"
    )
    parser.add_argument(
        "--md-ns", type=float, default=2.0, help="ns of OpenMM Langevin (default %(default)s)"
    )
    parser.add_argument("--torch-md-ps", type=float, default=10.0, help="ps of molsamp's torch Langevin")
    parser.add_argument("--chain-seconds", type=float, default=120.0)
    parser.add_argument("--walkers", type=int, default=16)
    parser.add_argument("--proposals", type=int, default=8)
    parser.add_argument(
        "--langevin-steps", type=int, default=100, help="1 fs Langevin steps between flow moves"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    system, _, potential = alanine_dipeptide("vacuum", temperature=TEMPERATURE)
    openmm = md_row("openmm", args.md_ns, args.seed, system.topology)
    torch_md = md_row("torch", args.torch_md_ps / 1000, args.seed, system.topology, measure_ess=False)
    steps_per_tau = max(openmm["tau_ps"]) * 1000  # the same BAOAB dynamics
    torch_md.update(ess=torch_md["steps"] / steps_per_tau, note="rate measured; τ from the OpenMM run")
    flow = load_timewarp(args.run / "timewarp.pt")
    frames = torch.from_numpy(np.load(args.run / "training_frames.npy")).double()
    (chain, wall_s, cpu_s) = timed(
        lambda: run_chain(
            flow,
            system,
            potential,
            frames,
            TEMPERATURE,
            walkers=args.walkers,
            proposals=args.proposals,
            seconds=args.chain_seconds,
            seed=args.seed + 1,
            langevin_steps=args.langevin_steps,
        )
    )
    timewarp = {
        "method": "Timewarp MH chain" + (f" + {args.langevin_steps} Langevin" if args.langevin_steps else ""),
        "ess": float(chain.ess[2:].min()),
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "acceptance_rate": chain.acceptance_rate,
        "proposals_evaluated": chain.proposals_evaluated,
        "tau_steps": chain.tau[2:].tolist(),
    }
    walkers_md = walkers_langevin_row(
        system,
        potential,
        frames,
        args.walkers,
        max(args.langevin_steps, 100),
        args.chain_seconds,
        args.seed + 2,
    )
    rows = [openmm, torch_md, walkers_md, timewarp]
    for r in rows:
        r["ess_per_wall_s"] = r["ess"] / r["wall_s"]
        r["ess_per_cpu_s"] = r["ess"] / r["cpu_s"]
    for name, peer in (
        ("openmm", openmm),
        ("torch_langevin", torch_md),
        ("same_walkers_langevin", walkers_md),
    ):
        if peer["ess"] > 0:
            timewarp[f"speedup_wall_vs_{name}"] = timewarp["ess_per_wall_s"] / peer["ess_per_wall_s"]
            timewarp[f"speedup_cpu_vs_{name}"] = timewarp["ess_per_cpu_s"] / peer["ess_per_cpu_s"]
    for r in rows:
        print(
            f"{r['method']:36s} ESS {r['ess']:9.2f}  wall {r['wall_s']:7.1f} s  CPU {r['cpu_s']:7.1f} s  "
            f"ESS/wall-s {r['ess_per_wall_s']:.3g}  ESS/CPU-s {r['ess_per_cpu_s']:.3g}"
        )
    print(
        f"Timewarp acceptance {timewarp['acceptance_rate']:.4f}; speed-up (ESS per wall s / per CPU s): "
        f"vs OpenMM {timewarp.get('speedup_wall_vs_openmm', float('nan')):.3g} / "
        f"{timewarp.get('speedup_cpu_vs_openmm', float('nan')):.3g}, "
        f"vs molsamp Langevin {timewarp.get('speedup_wall_vs_torch_langevin', float('nan')):.3g} / "
        f"{timewarp.get('speedup_cpu_vs_torch_langevin', float('nan')):.3g}, "
        f"vs the same walkers' Langevin without flow moves "
        f"{timewarp.get('speedup_wall_vs_same_walkers_langevin', float('nan')):.3g} / "
        f"{timewarp.get('speedup_cpu_vs_same_walkers_langevin', float('nan')):.3g}"
    )
    results_path = args.run / "results.json"
    training = json.loads(results_path.read_text()) if results_path.is_file() else {}
    summary = {
        "rows": rows,
        "training_s": training.get("training_s"),
        "training_steps": training.get("training_steps"),
    }
    print(f"training cost (separate): {summary['training_s']} s wall, {summary['training_steps']} steps")
    (args.run / "benchmark.json").write_text(json.dumps(summary, indent=2, default=float))
    return rows


if __name__ == "__main__":
    main()
