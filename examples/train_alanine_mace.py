"""Acceptance run: train MACE on Amber-labelled alanine dipeptide, then run MD with it.

1. 300 K Langevin MD of alanine dipeptide (vacuum, ff99SB-ILDN) gives training frames every
   50 fs and an independent trajectory (another seed) of held-out test frames; the force
   field labels energies and forces.
2. MACE trains for at most ``--minutes`` on the CPU (AMSGrad, EMA, stage two).
3. Force MAE on the held-out frames is compared with 5 % of the mean force magnitude.
4. The model is saved, reloaded with ``load_potential`` and runs 20 ps of Langevin MD; the
   run must stay stable with every covalent bond intact (within 25 % of its reference length).

    python examples/train_alanine_mace.py --output runs/alanine-mace
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from molsamp.integrators import LangevinBAOAB, SimulationExploded, simulate
from molsamp.io import CSVReporter, TrajectoryReporter
from molsamp.potentials import MACE, load_potential, save_potential
from molsamp.potentials.datasets import alanine_dipeptide_md_dataset
from molsamp.potentials.training import TrainingConfig, collate, evaluate, train
from molsamp.systems import alanine_dipeptide
from molsamp.testing import mean_and_standard_error
from molsamp.units import ps_from_fs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000, help="training + validation frames")
    parser.add_argument("--test-frames", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget")
    parser.add_argument("--md-ps", type=float, default=20.0, help="MD length with the model")
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared box")
    parser.add_argument("--output", type=Path, default=Path("alanine-mace"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    report: dict = {"threads": args.threads}

    t0 = time.perf_counter()
    data = alanine_dipeptide_md_dataset(args.frames, interval_steps=50, seed=1)
    test = alanine_dipeptide_md_dataset(args.test_frames, interval_steps=50, seed=2)
    train_set, val_set = data.split(0.05, seed=0)
    report["data_seconds"] = time.perf_counter() - t0
    print(
        f"data: {len(train_set)} train, {len(val_set)} val, {len(test)} test frames "
        f"({report['data_seconds']:.0f} s)"
    )

    torch.manual_seed(0)
    model = MACE(
        [1, 6, 7, 8],
        r_max=0.4,
        max_ell=2,
        correlation=3,
        hidden_irreps="16x0e+16x1o",
        radial_mlp=(32, 32),
        dtype=torch.float32,
    )
    config = TrainingConfig(
        max_epochs=200,
        batch_size=8,
        lr=5e-3,
        ema_decay=0.995,
        scheduler="plateau",
        scheduler_patience=3,
        patience=50,
        stage_two_fraction=0.85,
        stage_two_energy_weight=100.0,
        stage_two_lr_factor=0.3,
        max_time_s=60 * args.minutes,
        dtype=torch.float32,
        progress=not args.quiet,
        checkpoint=args.output / "mace-alanine.pt",
    )
    result = train(model, train_set, val_set, config)
    report["train_seconds"] = result.seconds
    report["epochs"] = result.epochs
    report["validation"] = result.best_metrics

    path = save_potential(model, args.output / "mace-alanine.pt")
    model = load_potential(path)
    test_batches = [
        collate(test.structures[k : k + 32], model.r_max, torch.float32, "cpu")
        for k in range(0, len(test), 32)
    ]
    metrics = evaluate(model, test_batches)
    report["test"] = metrics
    print(
        f"held-out test: force MAE {metrics['forces_mae']:.2f} kJ/mol/nm "
        f"({100 * metrics['forces_mae_relative']:.2f} % of mean |F| "
        f"{metrics['mean_force_magnitude']:.1f}), force RMSE {metrics['forces_rmse']:.2f}, "
        f"energy MAE {metrics['energy_mae_per_atom']:.4f} kJ/mol/atom; "
        f"trained {result.seconds / 60:.1f} min, {result.epochs} epochs"
    )

    system, state, _ = alanine_dipeptide(seed=3, dtype=torch.float32)
    model.bind(system.atomic_numbers)
    steps = round(args.md_ps / ps_from_fs(1.0))
    langevin = LangevinBAOAB(model, system.masses, ps_from_fs(1.0), 300.0, 1.0, 3)
    t0 = time.perf_counter()
    exploded = None
    try:  # an undertrained model may blow up: that is a result to report, not a crash
        simulate(
            langevin,
            state,
            steps,
            reporters=[
                CSVReporter(args.output / "md.csv", 100),
                TrajectoryReporter(args.output / "md.dcd", 100, system.topology),
            ],
            progress=not args.quiet,
        )
    except SimulationExploded as error:
        exploded = str(error)
        print(f"MD with the model: {exploded}")
    report["md_seconds"] = time.perf_counter() - t0
    if exploded is None:
        report["md"] = _md_analysis(args.output, system, state.positions[0])
        print(
            f"MD {args.md_ps} ps with the model: max bond deviation "
            f"{100 * report['md']['max_relative_bond_deviation']:.1f} %, mean T "
            f"{report['md']['mean_temperature_K']:.0f} ± {report['md']['temperature_standard_error_K']:.0f} K, "
            f"{report['md_seconds']:.0f} s"
        )
    else:
        report["md"] = {"exploded": exploded, "bonds_intact": False}
    report["md"]["ps"] = args.md_ps
    report["passed"] = bool(metrics["forces_mae_relative"] < 0.05 and report["md"]["bonds_intact"])
    (args.output / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"passed: {report['passed']}  (report: {args.output / 'report.json'})")
    return report


def _md_analysis(folder: Path, system, start: torch.Tensor) -> dict:
    """Bond lengths of md.dcd against the (N, 3) nm ``start`` and the mean temperature of md.csv."""
    import mdtraj

    trajectory = mdtraj.load(str(folder / "md.dcd"), top=system.topology)
    bonds = np.array([[a.index, b.index] for a, b in system.topology.bonds])
    reference = mdtraj.compute_distances(mdtraj.Trajectory(start.double().numpy(), system.topology), bonds)[0]
    stretch = float(np.abs(mdtraj.compute_distances(trajectory, bonds) / reference - 1.0).max())
    energies = np.loadtxt(folder / "md.csv", delimiter=",", skiprows=1, ndmin=2)
    # on-step BAOAB velocities at 1 fs; the error bar counts correlated samples (ESS)
    mean_t, error_t = mean_and_standard_error(energies[:, 5])
    return {
        "frames": trajectory.n_frames,
        "max_relative_bond_deviation": stretch,
        "bonds_intact": stretch < 0.25,
        "mean_temperature_K": mean_t,
        "temperature_standard_error_K": error_t,
    }


if __name__ == "__main__":
    main()
