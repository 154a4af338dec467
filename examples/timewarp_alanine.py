"""Timewarp on alanine dipeptide (Amber ff99SB-ILDN, vacuum, 300 K, no constraints), and the
same model on glycine dipeptide without retraining.

1. MD data from molsamp/OpenMM: a training trajectory (frames every ``--frame-ps``, pairs
   τ = ``--tau-ps`` apart) and an independent long reference, whose wall time is measured.
2. Training of a :class:`TimewarpFlow` for ``--train-minutes`` (wall) in all: maximum
   likelihood, then ``--fine-tune-minutes`` of likelihood + acceptance loss (entropy bonus).
3. The exact MH chain (``--walkers`` × ``--proposals`` parallel proposals, ``--langevin-steps``
   of Langevin between flow moves) for ``--chain-minutes``: acceptance, ESS of the slowest
   φ/ψ CV per wall second against the reference MD's, JS divergence (beside the JS an exact
   sampler with the chain's ESS scores) and ΔF between basins with error bars, Ramachandran
   plots. ``--flow`` samples with a flow saved by an earlier run instead of training one.
4. Transferability: ACE-GLY-NME (built with OpenMM's Modeller) sampled by the same model,
   acceptance reported beside that of the untrained flow with the same step lengths.

Writes ``results.json``, ``timewarp.pt`` (+ ``.json`` config) and PNGs to ``--output``.
Run: ``OMP_NUM_THREADS=1 python examples/timewarp_alanine.py --output runs/timewarp``
(``--data-ns 0.2 --reference-ns 0.2 --train-minutes 0.5 --fine-tune-minutes 0.2
--chain-minutes 0.5 --transfer-minutes 0.2`` is a smoke run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from molsamp.flows.ramachandran import md_frames, phi_psi
from molsamp.flows.timewarp import TimewarpFlow, load_timewarp, save_timewarp
from molsamp.flows.timewarp_commands import (
    chain_report,
    phase_steps,
    print_timewarp_report,
    run_chain,
    train_and_fine_tune,
)
from molsamp.flows.timewarp_mcmc import TimewarpMove
from molsamp.integrators import LangevinBAOAB, simulate
from molsamp.systems import alanine_dipeptide, glycine_dipeptide

TEMPERATURE = 300.0


def show(row: dict) -> None:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)


def one_shot_acceptance(flow, system, potential, frames, proposals_per_frame: int, seed: int) -> float:
    """Mean MH acceptance of proposals from the given states (no chain)."""
    move = TimewarpMove(flow, system, potential, TEMPERATURE, n_proposals=1, reference_positions=frames[0])
    x = frames.repeat_interleave(proposals_per_frame, 0)
    step = move.apply(x, move.reduced_energy(x), torch.Generator().manual_seed(seed))
    return float(step.accepted.float().mean())


def untrained_like(flow: TimewarpFlow, seed: int) -> TimewarpFlow:
    """A fresh flow with the trained one's step lengths σ_e: a Gaussian random walk."""
    baseline = TimewarpFlow(flow.config, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        baseline.log_sigma.copy_(flow.log_sigma)
    return baseline


def glycine_frames(n_frames: int, interval_ps: float, seed: int):
    system, state, potential = glycine_dipeptide("vacuum", temperature=TEMPERATURE, seed=seed)
    langevin = LangevinBAOAB(potential, system.masses, 0.001, TEMPERATURE, 1.0, seed)
    state = simulate(langevin, state, 20_000, progress=False)
    frames = []
    for _ in range(n_frames):
        state = simulate(langevin, state, int(interval_ps * 1000), progress=False, guard=None)
        frames.append(state.positions[0].clone())
    return system, potential, torch.stack(frames)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("timewarp-alanine"))
    parser.add_argument("--data-ns", type=float, default=2.0, help="training MD, ns")
    parser.add_argument("--frame-ps", type=float, default=0.25, help="training frames every ... ps")
    parser.add_argument("--tau-ps", type=float, default=1.0, help="τ between x(t) and x(t+τ), ps")
    parser.add_argument(
        "--reference-ns",
        type=float,
        default=25.0,
        help="reference MD (timed), ns: long enough to score a chain against MD windows of its ESS",
    )
    parser.add_argument("--train-minutes", type=float, default=18.0, help="training wall time (≤ 20)")
    parser.add_argument(
        "--fine-tune-minutes",
        type=float,
        default=8.0,
        help="of the training budget, minutes spent on NLL + acceptance loss at the end",
    )
    parser.add_argument("--chain-minutes", type=float, default=6.0)
    parser.add_argument("--walkers", type=int, default=16)
    parser.add_argument("--proposals", type=int, default=8)
    parser.add_argument(
        "--langevin-steps",
        type=int,
        default=100,
        help="1 fs Langevin steps after every flow move (0: flow moves only; the chain then "
        "keeps the φ/ψ of its starting frames after CPU-scale training, whose moves are ~1°)",
    )
    parser.add_argument(
        "--flow", type=Path, help="a timewarp.pt of an earlier run: sample with it, skip training"
    )
    parser.add_argument("--transfer-minutes", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 <= args.fine_tune_minutes < args.train_minutes:
        raise ValueError(f"--fine-tune-minutes must be in [0, --train-minutes), got {args.fine_tune_minutes}")
    torch.set_num_threads(1)
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    system, _, potential = alanine_dipeptide("vacuum", temperature=TEMPERATURE)
    report: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}

    start = time.perf_counter()
    training = md_frames("vacuum", TEMPERATURE, args.data_ns, interval_ps=args.frame_ps, seed=args.seed + 1)
    report["training_md_wall_s"] = time.perf_counter() - start
    np.save(out / "training_frames.npy", training.numpy())
    start = time.perf_counter()
    reference = md_frames("vacuum", TEMPERATURE, args.reference_ns, interval_ps=1.0, seed=args.seed + 2)
    md_wall_s = time.perf_counter() - start
    print(
        f"MD: training {training.shape[0]} frames, reference {reference.shape[0]} frames in {md_wall_s:.0f} s",
        flush=True,
    )

    lag = max(1, int(round(args.tau_ps / args.frame_ps)))
    if args.flow is not None:
        flow = load_timewarp(args.flow)
        report["flow_file"] = str(args.flow)
    else:
        start = time.perf_counter()
        flow, history = train_and_fine_tune(
            system,
            potential,
            training,
            lag,
            TEMPERATURE,
            seconds=60 * args.train_minutes,
            fine_tune_seconds=60 * args.fine_tune_minutes,
            seed=args.seed,
            callback=show,
        )
        report.update(
            training_s=time.perf_counter() - start,
            training_steps=phase_steps(history),
            lag_frames=lag,
            history=history,
        )
    save_timewarp(flow, out / "timewarp.pt")

    result = run_chain(
        flow,
        system,
        potential,
        training,
        TEMPERATURE,
        walkers=args.walkers,
        proposals=args.proposals,
        seconds=60 * args.chain_minutes,
        seed=args.seed + 3,
        langevin_steps=args.langevin_steps,
        callback=show,
    )
    np.save(out / "chain_phi_psi.npy", result.observables[:, :, :2])
    np.save(out / "reference_phi_psi.npy", phi_psi(reference, system.topology))
    report["alanine"] = chain_report(
        result,
        reference,
        system,
        TEMPERATURE,
        args.seed + 4,
        out,
        md_wall_s=md_wall_s,
        reference_interval_ps=1.0,
    )
    starts = training[torch.linspace(0, training.shape[0] - 1, 64).round().long()]
    report["alanine"]["one_shot_acceptance"] = {
        "trained": one_shot_acceptance(flow, system, potential, starts, 8, args.seed + 5),
        "untrained_same_sigma": one_shot_acceptance(
            untrained_like(flow, 1), system, potential, starts, 8, args.seed + 5
        ),
    }
    print_timewarp_report(report["alanine"])
    print("one-shot acceptance:", report["alanine"]["one_shot_acceptance"], flush=True)

    if args.transfer_minutes > 0:
        gly_system, gly_potential, gly_frames = glycine_frames(64, 1.0, args.seed + 6)
        gly = run_chain(
            flow,
            gly_system,
            gly_potential,
            gly_frames,
            TEMPERATURE,
            walkers=args.walkers,
            proposals=args.proposals,
            seconds=60 * args.transfer_minutes,
            seed=args.seed + 7,
        )
        report["glycine_transfer"] = {
            "chain": gly.summary(),
            "one_shot_acceptance": {
                "trained_on_alanine": one_shot_acceptance(
                    flow, gly_system, gly_potential, gly_frames, 8, args.seed + 8
                ),
                "untrained_same_sigma": one_shot_acceptance(
                    untrained_like(flow, 1), gly_system, gly_potential, gly_frames, 8, args.seed + 8
                ),
            },
        }
        print(f"glycine dipeptide (unseen), chain acceptance {gly.acceptance_rate:.4f}", flush=True)
        print("glycine one-shot acceptance:", report["glycine_transfer"]["one_shot_acceptance"], flush=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2, default=float))
    return report


if __name__ == "__main__":
    main()
