"""Effective samples per target-energy evaluation and per CPU-second on alanine dipeptide
(OBC implicit solvent, 300 K): flow reweighting and flow-MCMC against molsamp Langevin MD and
OpenMM's own Langevin, measured in one process.

ESS: Kish for importance weights; T·B/τ_int of the slowest of (αR indicator, cos φ, cos ψ)
for chains. CPU-seconds are this process's (``time.process_time``), so load from other jobs
on a shared machine does not count. Training time is reported separately (from the
example's ``results.json``).

Run after ``examples/boltzmann_alanine.py --output RUN``:
``OMP_NUM_THREADS=1 python benchmarks/flow_sampling.py --run RUN --training-frames FRAMES.npy``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from molsamp.flows.boltzmann import BoltzmannGenerator, load_boltzmann_generator
from molsamp.flows.mcmc import IndependenceMetropolis, flow_mcmc
from molsamp.flows.ramachandran import chain_ess, collective_variables, phi_psi
from molsamp.flows.reweighting import kish_ess
from molsamp.integrators import LangevinBAOAB, simulate
from molsamp.system import State
from molsamp.systems import alanine_dipeptide

TEMPERATURE = 300.0


def row(name: str, ess: float, evaluations: int, cpu_s: float, **extra) -> dict:
    return {
        "method": name,
        "ess": ess,
        "energy_evaluations": evaluations,
        "cpu_s": cpu_s,
        "ess_per_evaluation": ess / evaluations,
        "ess_per_cpu_s": ess / cpu_s,
        **extra,
    }


def md_chain(engine: str, n_frames: int, interval: int, seed: int) -> dict:
    system, state, potential = alanine_dipeptide("implicit", temperature=TEMPERATURE, seed=seed)
    langevin = LangevinBAOAB(potential, system.masses, 0.001, TEMPERATURE, 1.0, seed)
    state = simulate(langevin, state, 5000, progress=False, engine=engine)
    frames = []
    start = time.process_time()
    for _ in range(n_frames):
        state = simulate(langevin, state, interval, progress=False, guard=None, engine=engine)
        frames.append(state.positions[0].clone())
    cpu_s = time.process_time() - start
    angles = phi_psi(torch.stack(frames), system.topology)
    ess, taus = chain_ess(collective_variables(angles)[:, None, :])
    return row(
        f"Langevin MD ({engine})",
        ess,
        n_frames * interval,
        cpu_s,
        tau_ps=[t * interval * 0.001 for t in taus],
        steps=n_frames * interval,
    )


def load_generator(run: Path) -> BoltzmannGenerator:
    """The run's trained flow (its ``boltzmann_generator.pt``) with the implicit-solvent target."""
    system, _, potential = alanine_dipeptide("implicit", temperature=TEMPERATURE)
    return load_boltzmann_generator(run / "boltzmann_generator.pt", system, potential, TEMPERATURE)


def md_rows(args: argparse.Namespace) -> list[dict]:
    """OpenMM's Langevin (ESS measured) and molsamp's torch Langevin (rate measured)."""
    rows = [md_chain("openmm", int(args.md_ns * 1000), 1000, args.seed)]
    torch_md = md_chain("torch", max(4, args.torch_md_steps // 1000), 1000, args.seed)
    openmm_tau = max(rows[0]["tau_ps"]) * 1000  # steps: the dynamics are the same BAOAB
    torch_md.update(
        ess=args.torch_md_steps / openmm_tau, note="rate measured; τ from the OpenMM run (same dynamics)"
    )
    torch_md.update(
        ess_per_evaluation=torch_md["ess"] / torch_md["energy_evaluations"],
        ess_per_cpu_s=torch_md["ess"] / torch_md["cpu_s"],
    )
    return [*rows, torch_md]


def flow_rows(args: argparse.Namespace) -> list[dict]:
    """Flow reweighting (Kish ESS) and flow-MCMC (chain ESS) with the run's trained flow."""
    bg = load_generator(args.run)
    start = time.process_time()
    samples = bg.draw(args.flow_samples, torch.Generator().manual_seed(args.seed + 1))
    rows = [
        row("flow reweighting", kish_ess(samples.log_weights), args.flow_samples, time.process_time() - start)
    ]
    system = alanine_dipeptide("implicit")[0]
    move = IndependenceMetropolis(bg.propose, bg.log_prob, bg.reduced_energy)
    start_positions = torch.from_numpy(np.load(args.training_frames)[: args.walkers]).double()
    state = State(start_positions, torch.zeros_like(start_positions))

    def observe(positions):
        return torch.as_tensor(collective_variables(phi_psi(positions, system.topology)))

    start = time.process_time()
    chain = flow_mcmc(
        state, move, args.mcmc_iterations, torch.Generator().manual_seed(args.seed + 2), observe
    )
    ess, taus = chain_ess(chain.observables)
    rows.append(
        row(
            "flow-MCMC (independence MH)",
            ess,
            chain.n_energy_evaluations,
            time.process_time() - start,
            acceptance_rate=chain.acceptance_rate,
            tau_iterations=taus,
        )
    )
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", type=Path, required=True, help="output folder of examples/boltzmann_alanine.py"
    )
    parser.add_argument(
        "--training-frames", type=Path, help="the frames that run trained on (.npy): MCMC start positions"
    )
    parser.add_argument(
        "--md-ns", type=float, default=1.0, help="ns of OpenMM Langevin (default %(default)s)"
    )
    parser.add_argument(
        "--torch-md-steps", type=int, default=20_000, help="steps of molsamp's torch Langevin"
    )
    parser.add_argument("--flow-samples", type=int, default=20_000)
    parser.add_argument("--walkers", type=int, default=32)
    parser.add_argument("--mcmc-iterations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parts", choices=["all", "md", "flow"], default="all", help="md and flow may run apart"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.run / "benchmark.json"
    previous = json.loads(out.read_text())["rows"] if out.is_file() else []
    rows = (
        md_rows(args)
        if args.parts in ("all", "md")
        else [r for r in previous if r["method"].startswith("Langevin")]
    )
    if args.parts in ("all", "flow"):
        if args.training_frames is None:
            raise ValueError("--training-frames is required for the flow part")
        rows += flow_rows(args)
    results_path = args.run / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if rows and rows[0]["method"] == "Langevin MD (openmm)" and rows[0]["ess"] == 0:
        print(
            "OpenMM's MD never crossed between the basins in this run (ESS 0): ratios left out; run longer MD"
        )
    elif rows and rows[0]["method"] == "Langevin MD (openmm)":
        openmm = rows[0]
        for r in rows:
            r["vs_openmm_per_evaluation"] = r["ess_per_evaluation"] / openmm["ess_per_evaluation"]
            r["vs_openmm_per_cpu_s"] = r["ess_per_cpu_s"] / openmm["ess_per_cpu_s"]
    for r in rows:
        print(
            f"{r['method']:30s} ESS {r['ess']:9.1f}  evals {r['energy_evaluations']:9d}  CPU {r['cpu_s']:7.1f} s  "
            f"ESS/eval {r['ess_per_evaluation']:.2e} ({r.get('vs_openmm_per_evaluation', float('nan')):.3g}× OpenMM)  "
            f"ESS/CPU-s {r['ess_per_cpu_s']:.3g} ({r.get('vs_openmm_per_cpu_s', float('nan')):.3g}× OpenMM)"
        )
    summary = {
        "rows": rows,
        "training_wall_s": results.get("training_s"),
        "training_cpu_s": results.get("training_cpu_s"),
    }
    print(f"flow training (separate): wall {summary['training_wall_s']} s, CPU {summary['training_cpu_s']} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    return rows


if __name__ == "__main__":
    main()
