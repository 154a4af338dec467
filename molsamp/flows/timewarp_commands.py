"""``molsamp sample --method timewarp`` and the pieces the Timewarp example shares with it:
train on MD pairs within a time budget, run the MH chain from MD frames, and report
acceptance, effective samples per second of the slowest φ/ψ CV and φ/ψ against a reference."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from molsamp.flows.ramachandran import chain_ess, collective_variables, compare_chain_to_reference, phi_psi
from molsamp.flows.timewarp import (
    TimewarpConfig,
    TimewarpFlow,
    align,
    save_timewarp,
    train_timewarp,
    transition_pairs,
)
from molsamp.flows.timewarp_mcmc import TimewarpMove, TimewarpResult, fine_tune_acceptance, timewarp_mcmc
from molsamp.potentials.base import Potential
from molsamp.progress import BudgetProgress
from molsamp.system import State, System
from molsamp.thermo import maxwell_boltzmann_velocities


def add_timewarp_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``molsamp sample --method timewarp`` (training time is ``--flow-minutes``)."""
    group = parser.add_argument_group("timewarp (--method timewarp)")
    group.add_argument(
        "--lag", type=int, default=1, help="τ in trajectory frames between x(t) and x(t+τ) (default 1)"
    )
    group.add_argument("--walkers", type=int, default=16, help="chains run together (default 16)")
    group.add_argument("--proposals", type=int, default=8, help="parallel proposals per state (default 8)")
    group.add_argument("--chain-minutes", type=float, default=2.0, help="wall time of the chain, minutes")
    group.add_argument(
        "--langevin-steps",
        type=int,
        default=100,
        help="1 fs Langevin steps after every flow move (default 100; 0: flow moves only, which "
        "after minutes of CPU training move φ/ψ by ~1° and leave the walkers near their starts)",
    )
    group.add_argument(
        "--fine-tune-fraction",
        type=float,
        default=0.4,
        help="share of --flow-minutes spent on likelihood + acceptance loss at the end (default 0.4)",
    )
    group.add_argument(
        "--explore",
        action="store_true",
        help="BIASED exploration: accept proposals below an energy cut-off instead of MH",
    )


def train_on_frames(
    system: System,
    frames: torch.Tensor,
    lag: int,
    *,
    seconds: float,
    seed: int,
    config: TimewarpConfig | None = None,
    batch_size: int = 64,
    learning_rate: float = 5e-4,
    validation_fraction: float = 0.1,
    callback: Callable[[dict], None] | None = None,
) -> tuple[TimewarpFlow, list[dict]]:
    """A :class:`TimewarpFlow` trained by maximum likelihood for ``seconds`` on the pairs
    (frames[t], frames[t + lag]) of one trajectory (S, N, 3) nm, each x(t+τ) rigidly aligned
    onto x(t) (see :mod:`molsamp.flows.timewarp`); the last ``validation_fraction`` of the
    trajectory is held out (its NLL is in the history)."""
    if frames.shape[0] < 2 * lag + 4:
        raise ValueError(f"the trajectory has {frames.shape[0]} frames; need well over 2·lag = {2 * lag}")
    split = int(frames.shape[0] * (1 - validation_fraction))
    x0, x1 = transition_pairs(frames[:split], lag)
    x1 = align(x1, x0, system.masses)
    validation = None
    if frames.shape[0] - split > lag + 1:
        v0, v1 = transition_pairs(frames[split:], lag)
        validation = (v0[:512], align(v1[:512], v0[:512], system.masses))
    generator = torch.Generator().manual_seed(seed)
    flow = TimewarpFlow(config, generator=generator)
    flow.set_scales_from_data(x0, x1, system)
    history = train_timewarp(
        flow,
        system,
        x0,
        x1,
        generator,
        n_steps=10**9,
        batch_size=batch_size,
        learning_rate=learning_rate,
        time_limit_s=seconds,
        log_every=200,
        validation=validation,
        callback=callback,
    )
    return flow, history


def train_and_fine_tune(
    system: System,
    potential: Potential,
    frames: torch.Tensor,
    lag: int,
    temperature: float,
    *,
    seconds: float,
    fine_tune_seconds: float,
    seed: int,
    callback: Callable[[dict], None] | None = None,
) -> tuple[TimewarpFlow, list[dict]]:
    """:func:`train_on_frames` for ``seconds − fine_tune_seconds``, then likelihood + acceptance
    loss (:func:`~molsamp.flows.timewarp_mcmc.fine_tune_acceptance`) for ``fine_tune_seconds``
    on the same training pairs: likelihood alone leaves bond lengths too loose for any
    proposal to be accepted after minutes of CPU training. Fine-tuning rows carry
    "acceptance_loss"; each phase counts its steps from 0."""
    if not 0 <= fine_tune_seconds < seconds:
        raise ValueError(f"fine_tune_seconds must be in [0, seconds), got {fine_tune_seconds} and {seconds}")
    flow, history = train_on_frames(
        system, frames, lag, seconds=seconds - fine_tune_seconds, seed=seed, callback=callback
    )
    if fine_tune_seconds > 0:
        x0, x1 = transition_pairs(frames[: int(0.9 * frames.shape[0])], lag)
        move = TimewarpMove(flow, system, potential, temperature, reference_positions=frames[0])
        history += fine_tune_acceptance(
            move,
            x0,
            align(x1, x0, system.masses),
            torch.Generator().manual_seed(seed + 9),
            n_steps=10**9,
            time_limit_s=fine_tune_seconds,
            callback=callback,
        )
    return flow, history


def phase_steps(history: list[dict]) -> dict[str, int]:
    """Optimiser steps of each training phase of a :func:`train_and_fine_tune` history."""
    steps = {"likelihood": 0, "fine_tune": 0}
    for row in history:  # each phase's step counter restarts at 0
        phase = "fine_tune" if "acceptance_loss" in row else "likelihood"
        steps[phase] = max(steps[phase], row["step"] + 1)
    return steps


def torsion_observer(topology) -> Callable[[torch.Tensor], torch.Tensor]:
    """positions (B, N, 3) → (B, 5): φ, ψ (radians), αR indicator, cos φ, cos ψ."""

    def observe(positions: torch.Tensor) -> torch.Tensor:
        angles = phi_psi(positions.detach().cpu(), topology)
        return torch.from_numpy(np.concatenate([angles, collective_variables(angles)], 1))

    return observe


def spread_starts(
    start_frames: torch.Tensor, walkers: int, system: System, temperature: float, generator: torch.Generator
) -> State:
    """B = ``walkers`` states at frames evenly spread over ``start_frames`` (S, N, 3) nm, with
    Maxwell–Boltzmann velocities (nm/ps) drawn from ``generator``; float64."""
    index = torch.linspace(0, start_frames.shape[0] - 1, walkers).round().long()
    velocities = maxwell_boltzmann_velocities(
        system.masses, temperature, walkers, generator, dtype=torch.float64
    )
    return State(start_frames[index].to(torch.float64), velocities)


def run_chain(
    flow: TimewarpFlow,
    system: System,
    potential: Potential,
    start_frames: torch.Tensor,
    temperature: float,
    *,
    walkers: int,
    proposals: int,
    seconds: float,
    seed: int,
    langevin_steps: int = 0,
    explore: bool = False,
    max_iterations: int = 10**9,
    callback: Callable[[dict], None] | None = None,
) -> TimewarpResult:
    """B = ``walkers`` chains from frames spread over ``start_frames`` (S, N, 3) nm, for
    ``seconds`` of wall time; observables as :func:`torsion_observer`."""
    from molsamp.integrators import LangevinBAOAB

    generator = torch.Generator().manual_seed(seed)
    state = spread_starts(start_frames, walkers, system, temperature, generator)
    move = TimewarpMove(
        flow,
        system,
        potential,
        temperature,
        n_proposals=proposals,
        reference_positions=state.positions[0],
        explore=explore,
    )
    langevin = None
    if langevin_steps:
        langevin = LangevinBAOAB(potential, system.masses, 0.001, temperature, 1.0, seed + 1)
    return timewarp_mcmc(
        state,
        move,
        max_iterations,
        generator,
        torsion_observer(system.topology),
        langevin=langevin,
        langevin_steps=langevin_steps,
        time_limit_s=seconds,
        callback=callback,
    )


def chain_report(
    result: TimewarpResult,
    reference_frames: torch.Tensor,
    system: System,
    temperature: float,
    seed: int,
    output: Path | None,
    basin_pairs: tuple[tuple[str, str], ...] = (("beta", "alphaR"), ("C7eq", "C7ax")),
    md_wall_s: float | None = None,
    reference_interval_ps: float | None = None,
) -> dict:
    """Acceptance, ESS per second of the slowest CV (αR indicator, cos φ, cos ψ) and φ/ψ against
    the reference; with ``md_wall_s`` (the wall time that produced the reference frames) the
    MD's ESS per second and the ratio."""
    reference_angles = phi_psi(reference_frames, system.topology)
    chain_angles = result.observables[:, :, :2]
    results = {"chain": result.summary()}
    slowest = float(result.ess[2:].min())
    results["chain"]["slowest_cv_ess"] = slowest
    results["chain"]["slowest_cv_ess_per_s"] = slowest / result.wall_s
    results["comparison"] = compare_chain_to_reference(
        chain_angles,
        reference_angles,
        temperature,
        torch.Generator().manual_seed(seed),
        output,
        basin_pairs=basin_pairs,
        title="Timewarp chain" + (" (BIASED exploration)" if result.biased else ""),
    )
    md_ess, md_taus = chain_ess(collective_variables(reference_angles)[:, None, :])
    results["reference"] = {
        "frames": int(reference_angles.shape[0]),
        "slowest_cv_ess": md_ess,
        "tau_frames": md_taus,
    }
    if reference_interval_ps is not None:
        results["reference"]["tau_ps"] = [t * reference_interval_ps for t in md_taus]
    if md_wall_s is not None:
        results["reference"]["wall_s"] = md_wall_s
        results["reference"]["slowest_cv_ess_per_s"] = md_ess / md_wall_s
        results["speedup_ess_per_s_vs_md"] = (
            (slowest / result.wall_s) / (md_ess / md_wall_s) if md_ess > 0 else None
        )
    return results


def print_timewarp_report(results: dict) -> None:
    chain, comparison = results["chain"], results["comparison"]
    tag = "  [BIASED exploration mode: not Boltzmann samples]" if chain["biased"] else ""
    print(f"timewarp acceptance: {chain['acceptance_rate']:.4f}{tag}")
    print(
        f"chain: {chain['walkers']} walkers × {chain['chain_steps_per_walker']} steps in {chain['wall_s']:.0f} s; "
        f"ESS of the slowest CV {chain['slowest_cv_ess']:.1f} ({chain['slowest_cv_ess_per_s']:.3g}/s)"
    )
    floor, matched = comparison["reference_half_vs_half"], comparison["reference_matched_floor"]
    print(
        f"JS(chain, reference) = {comparison['js_chain_vs_reference']:.4f}; an exact sampler with the chain's "
        f"ESS scores {matched['js_median']:.4f} (95 %: {matched['js_95']:.4f}"
        + (", reference too short" if matched["capped"] else "")
        + f"); reference half vs half {floor['js']:.4f}"
    )
    for name, values in comparison["delta_f_kJ_per_mol"].items():
        parts = [
            f"{source} "
            + (
                "not visited"
                if values[source] is None
                else f"{values[source][0]:.2f} ± {values[source][1]:.2f}"
            )
            for source in ("reference", "chain")
        ]
        print(f"ΔF {name} (kJ/mol): " + ", ".join(parts))
    if "speedup_ess_per_s_vs_md" in results:
        print(f"ESS/s of the slowest CV vs MD: {results['speedup_ess_per_s_vs_md']}")


def run_timewarp_sample(
    args: argparse.Namespace, system: System, potential: Potential, frames, reference
) -> dict:
    """``molsamp sample --method timewarp``: train for --flow-minutes, chain for --chain-minutes."""
    if args.flow_minutes <= 0 or args.chain_minutes <= 0:
        raise ValueError(
            f"--flow-minutes and --chain-minutes must be > 0, got {args.flow_minutes}, {args.chain_minutes}"
        )
    if not 0 <= args.fine_tune_fraction < 1:
        raise ValueError(f"--fine-tune-fraction must be in [0, 1), got {args.fine_tune_fraction}")
    if args.walkers < 1 or args.proposals < 1 or args.langevin_steps < 0:
        raise ValueError("--walkers and --proposals must be >= 1 and --langevin-steps >= 0")
    start = time.perf_counter()
    with BudgetProgress(60 * args.flow_minutes, "timewarp training", enabled=not args.quiet) as progress:
        flow, history = train_and_fine_tune(
            system,
            potential,
            frames,
            args.lag,
            args.temperature,
            seconds=60 * args.flow_minutes,
            fine_tune_seconds=60 * args.flow_minutes * args.fine_tune_fraction,
            seed=args.seed,
            callback=progress,
        )
    training_s = time.perf_counter() - start
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    save_timewarp(flow, out / "timewarp.pt")
    with BudgetProgress(60 * args.chain_minutes, "timewarp chain", enabled=not args.quiet) as progress:
        result = run_chain(
            flow,
            system,
            potential,
            frames,
            args.temperature,
            walkers=args.walkers,
            proposals=args.proposals,
            seconds=60 * args.chain_minutes,
            seed=args.seed + 1,
            langevin_steps=args.langevin_steps,
            explore=args.explore,
            callback=progress,
        )
    results = chain_report(result, reference, system, args.temperature, args.seed + 2, out)
    results.update(training_s=training_s, training_steps=phase_steps(history), lag_frames=args.lag)
    np.save(out / "timewarp_chain_phi_psi.npy", result.observables[:, :, :2])
    (out / "timewarp_results.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "timewarp_training.json").write_text(json.dumps(history, indent=2))
    steps = results["training_steps"]
    print(
        f"timewarp training: {training_s:.0f} s, {steps['likelihood']} likelihood + "
        f"{steps['fine_tune']} acceptance fine-tuning steps"
    )
    print_timewarp_report(results)
    print(f"results: {out / 'timewarp_results.json'}")
    return results
