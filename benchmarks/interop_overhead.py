"""Per-step cost of Langevin MD through molsamp, ASE and OpenMM, for one potential and system.

Routes, all on the same potential and starting state (periodic LJ fluid by default):
molsamp's ``simulate`` + ``LangevinBAOAB`` (engine="torch"), ASE's ``Langevin`` +
``MolsampCalculator``, and OpenMM's ``Simulation`` + ``LangevinMiddleIntegrator`` +
``openmm_force``. Prints the median time per step over repeats and the ratio to molsamp's loop.

    OMP_NUM_THREADS=1 python benchmarks/interop_overhead.py [--n-cells 3] [--steps 200]
    python benchmarks/interop_overhead.py --potential mypackage.models:build_mace

``--potential mace`` uses an untrained MACE of the default size; ``MODULE:FUNCTION`` names a
function ``(System) -> Potential``; the default ``lj`` is the fluid's own LennardJones.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable

import numpy as np
import openmm
import torch
from ase import units as ase_units
from ase.md.langevin import Langevin
from openmm import app

from molsamp.integrators import LangevinBAOAB, simulate
from molsamp.interop.ase import MolsampCalculator
from molsamp.interop.openmm import openmm_system_from
from molsamp.potentials import Potential
from molsamp.system import State, System
from molsamp.systems import lennard_jones_fluid
from molsamp.units import angstrom_per_fs_from_nm_per_ps, fs_from_ps


def mace_for(system: System) -> Potential:
    """An untrained MACE of the issue's default size (64x0e+64x1o, ℓ ≤ 3, ν = 3, r_max 5 Å)."""
    from molsamp.potentials import MACE

    torch.manual_seed(0)
    model = MACE(sorted(set(system.atomic_numbers.tolist())), r_max=0.5, dtype=torch.float64)
    return model.bind(system.atomic_numbers)


def load_potential(spec: str, system: System, reference: Potential) -> Potential:
    if spec == "lj":
        return reference
    if spec == "mace":
        return mace_for(system)
    module_name, _, function_name = spec.partition(":")
    if not function_name:
        raise SystemExit(f"--potential must be 'lj' or MODULE:FUNCTION, got {spec!r}")
    return getattr(importlib.import_module(module_name), function_name)(system)


def median_seconds_per_step(
    runs: dict[str, Callable[[int], None]], steps: int, repeats: int
) -> dict[str, float]:
    """Median seconds per step of each route; repeats alternate between routes, so load
    from other processes on a shared machine falls on all of them alike."""
    for run in runs.values():
        run(max(steps // 10, 1))  # warm-up: first calls allocate and build contexts
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(steps)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def molsamp_route(potential, system: System, state: State, args) -> Callable[[int], None]:
    integrator = LangevinBAOAB(
        potential, system.masses, args.timestep_fs / 1000.0, args.temperature, args.friction, 1
    )
    current = [state]

    def run(n: int) -> None:
        current[0] = simulate(integrator, current[0], n, progress=False, engine="torch")

    return run


def ase_route(potential, system: System, state: State, args) -> Callable[[int], None]:
    atoms = system.to_ase(state.positions[0])
    velocities = angstrom_per_fs_from_nm_per_ps(state.velocities[0].numpy()) / ase_units.fs
    atoms.set_velocities(velocities)
    atoms.calc = MolsampCalculator(potential)
    dynamics = Langevin(
        atoms,
        timestep=args.timestep_fs * ase_units.fs,
        temperature_K=args.temperature,
        friction=args.friction / fs_from_ps(1.0) / ase_units.fs,
        fixcm=False,
        rng=np.random.default_rng(1),
    )
    return lambda n: dynamics.run(n)


def openmm_route(potential, system: System, state: State, args) -> Callable[[int], None]:
    integrator = openmm.LangevinMiddleIntegrator(args.temperature, args.friction, args.timestep_fs / 1000.0)
    integrator.setRandomNumberSeed(1)
    topology = None if system.topology is None else system.topology.to_openmm()
    simulation = app.Simulation(
        topology,
        openmm_system_from(system, potential),
        integrator,
        openmm.Platform.getPlatformByName(args.platform),
    )
    simulation.context.setPositions(state.positions[0].numpy())
    simulation.context.setVelocities(state.velocities[0].numpy())
    return simulation.step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--potential", default="lj", help="'lj', 'mace' or MODULE:FUNCTION")
    parser.add_argument("--n-cells", type=int, default=3, help="fcc cells per side (4n³ atoms)")
    parser.add_argument("--steps", type=int, default=200, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timestep-fs", type=float, default=5.0)
    parser.add_argument("--temperature", type=float, default=120.0, help="K")
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
    parser.add_argument("--platform", default="Reference", help="OpenMM platform")
    args = parser.parse_args()

    torch.set_num_threads(1)
    system, state, reference = lennard_jones_fluid(
        n_cells=args.n_cells, temperature=args.temperature, cutoff_sigma=1.7 if args.n_cells < 3 else 2.5
    )
    potential = load_potential(args.potential, system, reference)
    print(
        f"{system.n_atoms} atoms, potential {type(potential).__name__}, {args.steps} steps x "
        f"{args.repeats} repeats, torch threads {torch.get_num_threads()}"
    )
    routes = {
        "molsamp simulate (torch BAOAB)": molsamp_route,
        "ASE Langevin + MolsampCalculator": ase_route,
        f"OpenMM Simulation + openmm_force ({args.platform})": openmm_route,
    }
    runs = {name: build(potential, system, state, args) for name, build in routes.items()}
    medians = median_seconds_per_step(runs, args.steps, args.repeats)
    baseline = medians[next(iter(medians))]
    for name, seconds in medians.items():
        print(f"{name:<48} {1e3 * seconds:8.3f} ms/step   {seconds / baseline:5.2f}x molsamp")


if __name__ == "__main__":
    main()
