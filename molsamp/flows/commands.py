"""``molsamp sample`` and the flow part of ``molsamp demo``: train a Boltzmann generator on a
trajectory, draw and reweight samples, write results, weights and plots."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from molsamp.progress import BudgetProgress
from molsamp.units import kT

DEMO_BASIN_PAIRS = (("C7eq", "C7ax"), ("C7eq", "alphaR"))


def add_flow_arguments(
    parser: argparse.ArgumentParser, train_minutes: float | None, samples: int | None, auto: str = ""
) -> None:
    """Options shared by ``sample`` and ``demo`` (``None`` defaults are resolved by the command)."""
    parser.add_argument(
        "--flow-minutes",
        type=float,
        default=train_minutes,
        help=f"flow training wall time, minutes; 0 skips the flow (default {train_minutes or auto})",
    )
    parser.add_argument(
        "--flow-samples",
        type=int,
        default=samples,
        help=f"flow samples to draw and reweight (default {samples or auto})",
    )
    parser.add_argument(
        "--kl-weight",
        type=float,
        default=0.0,
        help="weight λ of the reverse-KL energy term after the ML phase (mode-seeking: it thins "
        "the flow's tails, which makes the importance weights heavy-tailed)",
    )
    parser.add_argument(
        "--reweighted-weight",
        type=float,
        default=1.0,
        help="weight μ of the importance-weighted likelihood of the flow's own samples after the "
        "ML phase (forward KL: raises the flow where the weights are largest)",
    )
    parser.add_argument(
        "--ml-fraction",
        type=float,
        default=0.35,
        help="share of the training time on pure maximum likelihood",
    )


def add_sample_parser(commands: argparse._SubParsersAction) -> None:
    sample = commands.add_parser(
        "sample",
        help="train a Boltzmann generator (or Timewarp proposals) on a trajectory and write φ/ψ results",
    )
    sample.add_argument(
        "--method",
        choices=["boltzmann", "timewarp"],
        default="boltzmann",
        help="boltzmann: reweighted flow samples; timewarp: learned large time steps in an MH chain "
        "(the trajectory's frames must be evenly spaced in time)",
    )
    sample.add_argument(
        "--trajectory", type=Path, required=True, help="MD trajectory (dcd, xtc, h5) or .npy (S, N, 3) nm"
    )
    sample.add_argument("--pdb", type=Path, help="topology PDB (default: the shipped alanine dipeptide)")
    sample.add_argument(
        "--forcefield", nargs="+", help="OpenMM force-field XML files (default: by --solvent)"
    )
    sample.add_argument(
        "--solvent", choices=["vacuum", "implicit"], default="vacuum", help="for alanine dipeptide"
    )
    sample.add_argument(
        "--reference", type=Path, help="reference trajectory for φ/ψ comparisons (default: --trajectory)"
    )
    sample.add_argument(
        "--temperature", type=float, default=300.0, help="temperature in K (default %(default)s)"
    )
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--quiet", action="store_true", help="no progress bars")
    sample.add_argument("--output", type=Path, default=Path("molsamp-sample"), help="output folder")
    sample.add_argument(
        "--flow-from",
        type=Path,
        help="a Boltzmann generator an earlier run saved (its boltzmann_generator.pt): skip training "
        "and draw --flow-samples from it, reweighted at --temperature",
    )
    add_flow_arguments(sample, train_minutes=5.0, samples=20_000)
    from molsamp.flows.timewarp_commands import add_timewarp_arguments

    add_timewarp_arguments(sample)


def _load_frames(path: Path, topology_pdb: Path) -> torch.Tensor:
    if not path.is_file():
        raise FileNotFoundError(f"trajectory not found: {path}; check the path")
    if path.suffix == ".npy":
        frames = np.load(path)
    else:
        import mdtraj

        frames = mdtraj.load(str(path), top=str(topology_pdb)).xyz
    if frames.ndim != 3 or frames.shape[2] != 3:
        raise ValueError(f"{path} must hold (S, N, 3) positions in nm, got shape {frames.shape}")
    return torch.as_tensor(frames, dtype=torch.float64)


def train_generator(system, potential, frames: torch.Tensor, args: argparse.Namespace) -> tuple:
    """A Boltzmann generator trained on ``frames`` for ``args.flow_minutes`` (ML, then ML + λ
    reverse KL + μ reweighted ML). Returns (generator, history, steps, seconds)."""
    from molsamp.flows.boltzmann import BoltzmannGenerator

    if args.flow_minutes <= 0:
        raise ValueError(f"--flow-minutes must be > 0, got {args.flow_minutes}")
    if not 0 <= args.kl_weight <= 1 or not 0 <= args.ml_fraction <= 1:
        raise ValueError(
            f"--kl-weight and --ml-fraction must be in [0, 1], got {args.kl_weight}, {args.ml_fraction}"
        )
    if args.reweighted_weight < 0:
        raise ValueError(f"--reweighted-weight must be >= 0, got {args.reweighted_weight}")
    generator = torch.Generator().manual_seed(args.seed)
    bg = BoltzmannGenerator.build(system, potential, frames, args.temperature, generator)
    budget = 60.0 * args.flow_minutes
    start = time.perf_counter()
    # a later stretch of the trajectory is held out: the ML phase keeps its best held-out
    # likelihood, the mixed phase the weights whose samples had the best ESS
    held_out = max(2, frames.shape[0] // 10)
    fit_frames, validation = frames[:-held_out], frames[-held_out:]
    with BudgetProgress(budget, "flow training", enabled=not args.quiet) as progress:
        history = bg.train(
            fit_frames,
            generator,
            n_steps=10**9,
            time_limit_s=args.ml_fraction * budget,
            log_every=100,
            validation=validation,
            keep_best=True,
            callback=progress,
        )
        steps = history[-1]["step"] + 1
        remaining = budget - (time.perf_counter() - start)
        if (args.kl_weight > 0 or args.reweighted_weight > 0) and remaining > 0:
            mixed = bg.train(
                fit_frames,
                generator,
                n_steps=10**9,
                kl_weight=args.kl_weight,
                reweighted_weight=args.reweighted_weight,
                learning_rate=3e-4,
                time_limit_s=remaining,
                log_every=25,
                keep_best=True,
                callback=progress,
            )
            history += mixed
            steps += mixed[-1]["step"] + 1
    return bg, history, steps, time.perf_counter() - start


def train_and_report(
    system,
    potential,
    frames: torch.Tensor,
    reference: torch.Tensor,
    args: argparse.Namespace,
    basin_pairs: tuple[tuple[str, str], ...],
) -> dict:
    """Train a Boltzmann generator (ML, then ML + λ reverse KL + μ reweighted ML), or load one
    (``args.flow_from``); draw, reweight, compare, save."""
    from molsamp.flows.boltzmann import load_boltzmann_generator, save_boltzmann_generator
    from molsamp.flows.ramachandran import compare_to_reference, phi_psi

    if args.flow_samples < 2:
        raise ValueError(f"--flow-samples must be >= 2, got {args.flow_samples}")
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    if getattr(args, "flow_from", None) is None:
        bg, history, steps, training_s = train_generator(system, potential, frames, args)
        save_boltzmann_generator(bg, out / "boltzmann_generator.pt")
    else:
        bg = load_boltzmann_generator(args.flow_from, system, potential, args.temperature)
        history, steps, training_s = None, 0, 0.0
    samples = bg.draw(args.flow_samples, torch.Generator().manual_seed(args.seed + 1))
    results = compare_to_reference(
        samples,
        reference,
        system.topology,
        args.temperature,
        torch.Generator().manual_seed(args.seed + 2),
        out,
        basin_pairs=basin_pairs,
    )
    results["training_s"] = training_s
    results["training_steps"] = steps
    results["kT_kJ_per_mol"] = kT(args.temperature)
    np.savez(
        out / "flow_samples.npz",
        phi_psi=phi_psi(samples.positions, system.topology),
        log_weights=samples.log_weights.numpy(),
    )
    if history is None:
        results["loaded_from"] = str(args.flow_from)
    else:
        (out / "flow_training.json").write_text(json.dumps(history, indent=2))
    (out / "flow_results.json").write_text(json.dumps(results, indent=2))
    return results


def print_report(results: dict) -> None:
    """Human-readable summary of :func:`train_and_report`."""
    floor = results["reference_half_vs_half"]
    if "loaded_from" in results:
        print(f"flow loaded from {results['loaded_from']}")
    else:
        print(f"flow training: {results['training_s']:.0f} s")
    print(
        f"flow samples: {results['n_samples']}, Kish ESS {results['kish_ess']:.1f} ({results['ess_percent']:.3g} %)"
    )
    print(f"excluded flow samples: {results['excluded']}")
    print(
        f"JS(flow reweighted, MD) = {results['js_reweighted_vs_reference']:.4f}, "
        f"KL(MD || flow) = {results['kl_reference_vs_reweighted']:.4f} "
        f"(MD half vs half: JS {floor['js']:.4f}, KL {floor['kl']:.4f})"
    )
    for name, values in results["delta_f_kJ_per_mol"].items():
        parts = []
        for source in ("reference", "flow"):
            value = values[source]
            parts.append(
                f"{source} " + ("not visited" if value is None else f"{value[0]:.2f} ± {value[1]:.2f}")
            )
        print(f"ΔF {name} (kJ/mol): " + ", ".join(parts))
    if "plot" in results:
        print(f"flow vs MD Ramachandran: {results['plot']}")


def run_sample(args: argparse.Namespace) -> None:
    from molsamp import systems

    if args.pdb is None:
        built = systems.alanine_dipeptide(args.solvent, temperature=args.temperature)
        pdb = systems.shipped_pdb("alanine_dipeptide")
    else:
        forcefield = args.forcefield or list(systems.openmm_builder.SOLVENT_FORCEFIELDS[args.solvent])
        built = systems.from_pdb(args.pdb, forcefield, temperature=args.temperature)
        pdb = args.pdb
    system, _, potential = built
    frames = _load_frames(args.trajectory, pdb)
    reference = frames if args.reference is None else _load_frames(args.reference, pdb)
    if frames.shape[1] != system.n_atoms:
        raise ValueError(
            f"--trajectory has {frames.shape[1]} atoms but the system has {system.n_atoms}; check --pdb"
        )
    if args.method == "timewarp":
        from molsamp.flows.timewarp_commands import run_timewarp_sample

        if args.flow_from is not None:
            raise ValueError("--flow-from loads a Boltzmann generator; drop it with --method timewarp")
        run_timewarp_sample(args, system, potential, frames, reference)
        return
    results = train_and_report(
        system, potential, frames, reference, args, (("beta", "alphaR"), *DEMO_BASIN_PAIRS)
    )
    print_report(results)
    print(f"results: {args.output / 'flow_results.json'}")
