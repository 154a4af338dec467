"""MD speed: molsamp against OpenMM on alanine dipeptide, and walker throughput on toy systems.

Run: ``OMP_NUM_THREADS=1 python benchmarks/md_speed.py [--quick]``. Prints medians of repeated
runs, measured side by side in this process, and the ratios molsamp / OpenMM.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import openmm
import torch

from molsamp.integrators import LangevinBAOAB, simulate
from molsamp.io import CSVReporter, TrajectoryReporter
from molsamp.systems import alanine_dipeptide, harmonic_oscillator, lennard_jones_fluid

TIMESTEP, FRICTION, TEMPERATURE = 0.001, 1.0, 300.0


def median_rate(run, n_steps: int, repeats: int) -> float:
    """Median steps per second of ``run(n_steps)`` over ``repeats`` timings (after a warm-up)."""
    return median_rates({"run": (run, n_steps)}, repeats)["run"]


def median_rates(runs: dict, repeats: int) -> dict[str, float]:
    """Median steps/s of each ``name: (run, n_steps)``, timed round-robin so that load on a
    shared machine hits every candidate alike."""
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for run, n_steps in runs.values():
        run(min(n_steps, 1000))  # warm-up
    for _ in range(repeats):
        for name, (run, n_steps) in runs.items():
            start = time.perf_counter()
            run(n_steps)
            timings[name].append(n_steps / (time.perf_counter() - start))
    return {name: statistics.median(rates) for name, rates in timings.items()}


def molsamp_md(engine: str, with_reports: bool):
    system, state, potential = alanine_dipeptide(seed=1)
    langevin = LangevinBAOAB(potential, system.masses, TIMESTEP, TEMPERATURE, FRICTION, 1)
    folder = Path(tempfile.mkdtemp())

    def run(n_steps: int) -> None:
        reporters = []
        if with_reports:  # what `molsamp md` writes: a CSV row and a DCD frame every 500 steps
            reporters = [
                CSVReporter(folder / "energies.csv", 500),
                TrajectoryReporter(folder / "trajectory.dcd", 500, system.topology),
            ]
        simulate(langevin, state, n_steps, reporters=reporters, engine=engine, progress=False)

    return run


def openmm_md(platform: str):
    _, state, potential = alanine_dipeptide(seed=1)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, TIMESTEP)
    properties = {"Threads": "1"} if platform == "CPU" else {}
    context = openmm.Context(
        potential.openmm_system, integrator, openmm.Platform.getPlatformByName(platform), properties
    )
    context.setPositions(state.positions[0].numpy())
    context.setVelocities(state.velocities[0].numpy())

    def run(n_steps: int) -> None:
        integrator.step(n_steps)
        context.getState(getEnergy=True)  # keep the context alive and read one result

    return run


def walker_throughput(builder, n_walkers: int, n_steps: int, timestep: float, repeats: int) -> float:
    """Walker-steps per second of the torch Langevin loop with B walkers."""
    system, state, potential = builder(n_walkers)
    langevin = LangevinBAOAB(potential, system.masses, timestep, TEMPERATURE, FRICTION, 1)
    holder = {"state": langevin.step(state, 2)}

    def run(steps: int) -> None:
        holder["state"] = langevin.step(holder["state"], steps)

    return n_walkers * median_rate(run, n_steps, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_steps, repeats = (20_000, 3) if args.quick else (100_000, 5)

    print("== Alanine dipeptide (22 atoms, Amber ff99SB-ILDN, vacuum, 1 fs, no constraints) ==")
    rows = median_rates(
        {
            "OpenMM LangevinMiddle, Reference": (openmm_md("Reference"), n_steps),
            "OpenMM LangevinMiddle, CPU (1 thread)": (openmm_md("CPU"), n_steps),
            "molsamp simulate (OpenMM engine), no reports": (molsamp_md("auto", False), n_steps),
            "molsamp simulate (OpenMM engine), `molsamp md` reports": (molsamp_md("auto", True), n_steps),
            "molsamp simulate (torch loop + OpenMM forces)": (molsamp_md("torch", False), n_steps // 20),
        },
        repeats,
    )
    best_openmm = max(rows["OpenMM LangevinMiddle, Reference"], rows["OpenMM LangevinMiddle, CPU (1 thread)"])
    for name, rate in rows.items():
        print(f"{name:58s} {rate:10.0f} steps/s   ratio to best OpenMM {rate / best_openmm:5.2f}")

    print("\n== Per-walker throughput of the torch Langevin loop (walker-steps/s) ==")
    systems = {
        "harmonic oscillator (1 atom)": (lambda b: harmonic_oscillator(n_walkers=b), 0.002, 2000),
        "LJ fluid (32 atoms, PBC)": (
            lambda b: lennard_jones_fluid(n_cells=2, cutoff_sigma=1.7, n_walkers=b),
            0.004,
            100,
        ),
    }
    for name, (builder, timestep, steps) in systems.items():
        single = None
        for walkers in (1, 64, 1024):
            rate = walker_throughput(builder, walkers, max(steps // walkers * 8, 10), timestep, repeats)
            single = single or rate
            print(f"{name:32s} B={walkers:5d} {rate:14.0f} walker-steps/s   ×{rate / single:7.1f} vs B=1")


if __name__ == "__main__":
    main()
