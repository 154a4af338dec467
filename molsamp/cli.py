"""The ``molsamp`` command: ``molsamp demo``, ``md``, ``train``, ``sample`` and ``forecast``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from molsamp import systems
from molsamp.analysis import plot_energies, read_energies
from molsamp.flows.commands import (
    DEMO_BASIN_PAIRS,
    add_flow_arguments,
    add_sample_parser,
    print_report,
    run_sample,
    train_and_report,
)
from molsamp.integrators import LangevinBAOAB, SimulationExploded, simulate
from molsamp.io import CSVReporter, TrajectoryReporter
from molsamp.units import ps_from_fs


def _add_md_arguments(parser: argparse.ArgumentParser, steps: int, output: str) -> None:
    parser.add_argument("--steps", type=int, default=steps, help="number of MD steps (default %(default)s)")
    parser.add_argument(
        "--timestep-fs", type=float, default=1.0, help="time step in fs (default %(default)s)"
    )
    parser.add_argument(
        "--temperature", type=float, default=300.0, help="temperature in K (default %(default)s)"
    )
    parser.add_argument("--friction", type=float, default=1.0, help="friction in 1/ps (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument(
        "--output", type=Path, default=Path(output), help="output folder (default %(default)s)"
    )
    parser.add_argument("--report-interval", type=int, default=500, help="steps between frames/rows")
    parser.add_argument("--checkpoint-interval", type=int, default=100_000, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt if present")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="molsamp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="Langevin MD of alanine dipeptide with a Ramachandran report")
    _add_md_arguments(demo, steps=2_000_000, output="molsamp-demo")
    add_flow_arguments(
        demo, None, None, auto="3 minutes and 20000 samples, scaled down for --steps < 2000000"
    )
    demo.add_argument(
        "--timewarp-minutes",
        type=float,
        default=None,
        help="Timewarp section: flow training wall time in minutes, then a chain (16 walkers, 100 "
        "Langevin steps between flow moves) for half as long; 0 skips it (default 2, scaled down "
        "for --steps < 2000000)",
    )

    md = commands.add_parser("md", help="Langevin MD of a built-in system or a PDB with a force field")
    source = md.add_mutually_exclusive_group()
    source.add_argument("--system", choices=sorted(systems.BUILDERS), default="alanine_dipeptide")
    source.add_argument("--pdb", type=Path, help="PDB file (use with --forcefield)")
    md.add_argument(
        "--forcefield",
        nargs="+",
        default=["amber99sbildn.xml"],
        help="OpenMM force-field XML files for --pdb",
    )
    md.add_argument("--solvent", choices=sorted(systems.openmm_builder.SOLVENT_FORCEFIELDS), default="vacuum")
    md.add_argument("--walkers", type=int, default=1, help="number of walkers B (default %(default)s)")
    md.add_argument("--trajectory-format", choices=["dcd", "xtc", "h5"], default="dcd")
    _add_md_arguments(md, steps=100_000, output="molsamp-md")

    from molsamp.potentials import train_command

    training = commands.add_parser("train", help="train a MACE or TensorNet potential on energies and forces")
    train_command.add_arguments(training)
    add_sample_parser(commands)
    from molsamp.flows.trajcast.commands import add_forecast_parser

    add_forecast_parser(commands)
    return parser


def _build_system(args: argparse.Namespace):
    common = {"temperature": args.temperature, "seed": args.seed}
    if getattr(args, "pdb", None) is not None:
        return systems.from_pdb(args.pdb, args.forcefield, n_walkers=args.walkers, **common)
    name = getattr(args, "system", "alanine_dipeptide")
    if name == "alanine_dipeptide":
        return systems.alanine_dipeptide(
            getattr(args, "solvent", "vacuum"), n_walkers=getattr(args, "walkers", 1), **common
        )
    return systems.BUILDERS[name](n_walkers=args.walkers, **common)


def run_md(args: argparse.Namespace, trajectory_format: str = "dcd") -> tuple:
    """Run Langevin MD as the arguments say; returns (system, final state, output paths)."""
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if not args.timestep_fs > 0:
        raise ValueError(f"--timestep-fs must be > 0 fs, got {args.timestep_fs}")
    system, state, potential = _build_system(args)
    langevin = LangevinBAOAB(
        potential,
        system.masses,
        timestep=ps_from_fs(args.timestep_fs),
        temperature=args.temperature,
        friction=args.friction,
        generator=torch.Generator().manual_seed(args.seed),
    )
    out: Path = args.output
    paths = {"energies": out / "energies.csv", "checkpoint": out / "checkpoint.pt"}
    reporters = [CSVReporter(paths["energies"], args.report_interval)]
    if system.topology is not None:
        paths["trajectory"] = out / f"trajectory.{trajectory_format}"
        reporters.append(TrajectoryReporter(paths["trajectory"], args.report_interval, system.topology))
    state = simulate(
        langevin,
        state,
        args.steps,
        reporters=reporters,
        checkpoint=paths["checkpoint"],
        checkpoint_interval=args.checkpoint_interval,
        resume=args.resume,
        progress=not args.quiet,
    )
    paths["energy_plot"] = plot_energies(paths["energies"], out / "energies.png", args.temperature)
    return system, state, paths


def _print_md_summary(paths: dict[str, Path], temperature: float) -> None:
    """Mean potential energy and temperature of the run's energies.csv, then its files."""
    energies = read_energies(paths["energies"])
    if len(energies):
        print(f"mean potential energy: {energies[:, 2].mean():.2f} kJ/mol")
        print(f"mean temperature: {energies[:, 5].mean():.1f} K (target {temperature} K)")
    for name, path in paths.items():
        print(f"{name}: {path}")


def demo(args: argparse.Namespace) -> None:
    import mdtraj

    from molsamp.analysis import backbone_dihedrals, plot_ramachandran

    args.system, args.solvent, args.walkers = "alanine_dipeptide", "vacuum", 1
    _, _, paths = run_md(args)
    trajectory = mdtraj.load(str(paths["trajectory"]), top=str(systems.shipped_pdb("alanine_dipeptide")))
    phi, psi = backbone_dihedrals(trajectory)
    plot = plot_ramachandran(
        phi,
        psi,
        args.temperature,
        args.output / "ramachandran.png",
        title=f"Alanine dipeptide, Langevin MD, {args.steps * args.timestep_fs / 1e6:g} ns",
    )
    print(f"frames: {trajectory.n_frames}")
    print(f"fraction with phi > 0 (alpha_L / C7ax): {np.mean(phi > 0):.4f}")
    _print_md_summary({**paths, "ramachandran": plot}, args.temperature)
    scale = min(1.0, args.steps / 2_000_000)  # short (test) runs get a short flow section
    args.flow_minutes = 3.0 * scale if args.flow_minutes is None else args.flow_minutes
    args.flow_samples = max(500, int(20_000 * scale)) if args.flow_samples is None else args.flow_samples
    system, _, potential = systems.alanine_dipeptide("vacuum", temperature=args.temperature)
    frames = torch.as_tensor(trajectory.xyz, dtype=torch.float64)
    if args.flow_minutes > 0:
        print_report(train_and_report(system, potential, frames, frames, args, DEMO_BASIN_PAIRS))
    timewarp_minutes = 2.0 * scale if args.timewarp_minutes is None else args.timewarp_minutes
    if timewarp_minutes > 0:
        from molsamp.flows.timewarp_commands import run_timewarp_sample

        frame_ps = args.report_interval * args.timestep_fs / 1000
        settings = argparse.Namespace(
            flow_minutes=timewarp_minutes,
            chain_minutes=timewarp_minutes / 2,
            lag=max(1, round(1.0 / frame_ps)),  # pairs ≈ 1 ps apart
            walkers=16,
            proposals=8,
            langevin_steps=100,
            fine_tune_fraction=0.4,
            explore=False,
            output=args.output / "timewarp",
            temperature=args.temperature,
            seed=args.seed,
            quiet=args.quiet,
        )
        print("Timewarp (learned 1 ps steps, exact MH chain with Langevin steps between flow moves):")
        run_timewarp_sample(settings, system, potential, frames, frames)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            demo(args)
        elif args.command == "train":
            from molsamp.potentials import train_command

            train_command.run(args)
        elif args.command == "sample":
            run_sample(args)
        elif args.command == "forecast":
            from molsamp.flows.trajcast.commands import run_forecast

            run_forecast(args)
        else:
            _, _, paths = run_md(args, args.trajectory_format)
            _print_md_summary(paths, args.temperature)
    except (ValueError, FileNotFoundError, SimulationExploded) as error:
        print(f"molsamp {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
