"""``molsamp forecast train`` and ``molsamp forecast rollout``."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

VALIDATION_FRACTION = 0.1  # the last tenth of every walker's MD frames validates


def add_forecast_parser(commands: argparse._SubParsersAction) -> None:
    from molsamp.flows.trajcast.physics import THERMOSTATS

    forecast = commands.add_parser("forecast", help="TrajCast force-free MD: train a forecaster, roll it out")
    actions = forecast.add_subparsers(dest="forecast_command", required=True)

    train = actions.add_parser("train", help="run reference MD and train a forecaster on it")
    train.add_argument(
        "--system", choices=["lennard_jones_fluid", "alanine_dipeptide"], default="lennard_jones_fluid"
    )
    train.add_argument("--output", type=Path, default=Path("molsamp-forecast"), help="output folder")
    train.add_argument("--minutes", type=float, default=10.0, help="training wall time, minutes")
    train.add_argument("--md-ps", type=float, default=50.0, help="training MD per walker, ps")
    train.add_argument("--walkers", type=int, default=4, help="independent MD walkers for data")
    train.add_argument(
        "--interval-steps", type=int, default=10, help="forecast interval k in MD steps (Δt = k δt)"
    )
    train.add_argument("--stride", type=int, default=2, help="MD steps between stored frames (divides k)")
    train.add_argument(
        "--rollout-steps", type=int, default=1, help="forecast steps in the loss (multi-step rollout loss)"
    )
    train.add_argument(
        "--restarts", type=int, default=0, help="MD segments restarted from strained training frames"
    )
    train.add_argument(
        "--restart-noise", type=float, default=0.005, help="largest position noise of --restarts, nm"
    )
    train.add_argument(
        "--restart-share",
        type=float,
        help="fraction of training windows drawn from the --restarts segments (default: by their number)",
    )
    train.add_argument(
        "--rollout-restarts",
        type=int,
        default=0,
        help="rollouts whose states restart MD after 60 %% of the budget (DAgger), then training goes on",
    )
    train.add_argument(
        "--calibrate-noise-ps",
        type=float,
        help="after training, calibrate the velocity noise on rollouts under a per-atom Langevin "
        "thermostat of this τ (ps), so that they hold every element at the temperature; roll out "
        "with --thermostat langevin --thermostat-ps of the same τ (dipeptide: 0.1)",
    )
    train.add_argument("--channels", type=int, default=16)
    train.add_argument(
        "--max-ell",
        type=int,
        help="l_max of the edge spherical harmonics (default: the system's: fluid 1, dipeptide 2)",
    )
    train.add_argument(
        "--batch-size", type=int, default=4, help="windows per step (per process under torchrun)"
    )
    train.add_argument(
        "--lr", type=float, help="Adam learning rate (default: the system's: fluid 3e-3, dipeptide 6e-3)"
    )
    train.add_argument(
        "--compile",
        action="store_true",
        help="run the network through torch.compile (needs a C++ compiler; about twice the steps per "
        "second on CPU, after a compilation of a minute or less)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quiet", action="store_true")

    roll = actions.add_parser("rollout", help="forecast a trajectory with a trained model")
    roll.add_argument("--model", type=Path, required=True, help="model.pt written by 'forecast train'")
    roll.add_argument("--steps", type=int, default=10_000, help="forecast steps")
    roll.add_argument("--output", type=Path, default=Path("molsamp-rollout"))
    roll.add_argument(
        "--temperature", type=float, help="thermostat temperature, K (default: the training one)"
    )
    roll.add_argument("--thermostat-ps", type=float, default=1.0, help="thermostat time constant, ps")
    roll.add_argument(
        "--thermostat",
        choices=sorted(THERMOSTATS),
        default="bussi",
        help="bussi: one velocity scale for all atoms; langevin: per atom (holds every atom at the "
        "temperature when the forecast heats some atoms and cools others, e.g. X–H bonds)",
    )
    roll.add_argument("--no-thermostat", action="store_true")
    roll.add_argument(
        "--no-velocity-noise", action="store_true", help="leave out the model's fitted velocity noise"
    )
    roll.add_argument("--report-interval", type=int, default=10, help="forecast steps between frames/rows")
    roll.add_argument("--checkpoint-interval", type=int, default=1000)
    roll.add_argument("--resume", action="store_true")
    roll.add_argument("--compile", action="store_true", help="run the network through torch.compile")
    roll.add_argument("--seed", type=int, default=0)
    roll.add_argument("--quiet", action="store_true")


def train_model(
    system_name: str, minutes: float, md_ps: float, walkers: int, interval_steps: int, stride: int,
    rollout_steps: int = 1, channels: int = 16, batch_size: int = 4, lr: float | None = None, seed: int = 0,
    progress: bool = True, restarts: int = 0, restart_frames: int = 100, restart_noise: float = 0.005,
    restart_share: float | None = None, rollout_restarts: int = 0, rollout_restart_steps: int = 200,
    first_phase: float = 0.6, distributed: bool = False, compile: bool = False, max_ell: int | None = None,
) -> tuple:  # fmt: skip
    """Equilibrate, record MD, train. Returns (model, result, data, final MD state, timings).
    ``lr`` and ``max_ell`` (of the edge spherical harmonics) None take the recipe's.

    With ``distributed=True`` under ``torchrun`` rank 0 runs the MD, every rank gets its data
    and training is data parallel (``training.train_forecaster``); every rank returns the
    same model. ``compile`` runs the network through ``torch.compile`` (about twice the
    training steps per second on CPU; the model keeps it for rollouts).

    With ``restarts`` > 0 the training part (not the validation part) also gets that many
    segments of ``restart_frames`` frames of reference MD restarted from training frames with
    positions displaced by up to ``restart_noise`` nm (``training.perturbed_restarts``), drawn
    by their number, or as ``restart_share`` of the training windows (``training.with_share``).
    With ``rollout_restarts`` > 0, training stops after ``first_phase`` of the budget, MD restarted
    from the states ``rollout_restarts`` rollouts of ``rollout_restart_steps`` steps reach is
    added (``training.rollout_restarts``), and training goes on for the rest of the budget."""
    from molsamp.distributed import broadcast_from_root, rank_and_world_size
    from molsamp.flows.trajcast import recipes, training
    from molsamp.flows.trajcast.model import TrajCast

    settings = recipes.recipe(system_name)
    _check_training_arguments(
        settings.timestep, minutes, md_ps, interval_steps, stride, rollout_steps, channels, batch_size,
        restarts, rollout_restarts,
    )  # fmt: skip
    system, state, potential = recipes.build(system_name, walkers, seed)
    rank, _ = rank_and_world_size() if distributed else (0, 1)
    timings = {}
    start = time.perf_counter()
    data = extra = None
    if rank == 0:
        state = recipes.equilibrate(system_name, system, state, potential, seed, progress=progress)
        data, state = recipes.training_data(
            system_name, system, state, potential, md_ps, stride, seed, progress=progress
        )
        if restarts > 0:
            integrator = recipes.data_integrator(system_name, system, potential, seed + 10)
            extra = training.perturbed_restarts(
                integrator,
                data.split(VALIDATION_FRACTION)[0],
                restarts,
                restart_frames,
                stride,
                restart_noise,
                seed,
            )
    if distributed:
        data, extra, state = broadcast_from_root((data, extra, state))
    train_set, val_set = data.split(VALIDATION_FRACTION)
    if extra is not None:
        main = train_set.chunks(restart_frames)
        if restart_share is None:  # every segment holds as many windows: the share is the count's
            train_set = training.join([main, extra])
            restart_share = extra.positions.shape[0] / train_set.positions.shape[0]
        else:
            train_set = training.with_share(main, extra, restart_share)
        timings["restart_window_share"] = restart_share
    timings["md_data_s"] = time.perf_counter() - start
    model = TrajCast(
        system.atomic_numbers.unique().tolist(), interval_steps * settings.timestep, r_max=settings.r_max,
        channels=channels, max_ell=settings.max_ell if max_ell is None else max_ell,
    )  # fmt: skip
    config = training.ForecastTrainingConfig(
        lag=interval_steps // stride, rollout_steps=rollout_steps, batch_size=batch_size,
        lr=settings.learning_rate if lr is None else lr, ema_decay=settings.ema_decay,
        max_time_s=60.0 * minutes, seed=seed, progress=progress, compile=compile,
    )  # fmt: skip
    if rollout_restarts <= 0:
        result = training.train_forecaster(model, train_set, val_set, config, distributed=distributed)
    else:
        first = training.train_forecaster(
            model, train_set, val_set, replace(config, max_time_s=first_phase * config.max_time_s),
            distributed=distributed,
        )  # fmt: skip
        t0 = time.perf_counter()
        extra = None
        if rank == 0:
            integrator = recipes.data_integrator(system_name, system, potential, seed + 20)
            extra = training.rollout_restarts(
                model, integrator, train_set, rollout_restarts, rollout_restart_steps, restart_frames,
                stride, settings.temperature, seed,
            )  # fmt: skip
        if distributed:
            extra = broadcast_from_root(extra)
        if extra is not None:
            if train_set.positions.shape[1] != restart_frames:
                train_set = train_set.chunks(restart_frames)
            train_set = training.join([train_set, extra])
        timings["rollout_restart_s"] = time.perf_counter() - t0
        timings["rollout_restart_segments"] = 0 if extra is None else int(extra.positions.shape[0])
        rest = max(0.0, config.max_time_s - first.seconds - timings["rollout_restart_s"])
        second = replace(config, max_time_s=rest, lr=0.3 * config.lr)  # fine-tuning, not a new warm start
        result = training.train_forecaster(
            model, train_set, val_set, second, fit=False, distributed=distributed
        )
        result.steps += first.steps
        result.seconds += first.seconds + timings["rollout_restart_s"]
        result.history[:0] = first.history
    timings["training_s"] = result.seconds
    return model, result, data, state, timings


def _check_training_arguments(
    timestep: float, minutes: float, md_ps: float, interval_steps: int, stride: int, rollout_steps: int,
    channels: int, batch_size: int, restarts: int, rollout_restarts: int,
) -> None:  # fmt: skip
    """Refuse settings that cannot train, before any MD runs; ``timestep`` is the MD step, ps.
    Errors name the option of ``molsamp forecast train``."""
    at_least_one = {
        "--interval-steps": interval_steps, "--stride": stride, "--rollout-steps": rollout_steps,
        "--channels": channels, "--batch-size": batch_size,
    }  # fmt: skip
    for option, value in at_least_one.items():
        if value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    for option, value in {"--restarts": restarts, "--rollout-restarts": rollout_restarts}.items():
        if value < 0:
            raise ValueError(f"{option} must be >= 0 (0: none), got {value}")
    if not minutes > 0:
        raise ValueError(f"--minutes (training wall time) must be > 0, got {minutes}")
    if interval_steps % stride:
        raise ValueError(f"--stride {stride} must divide --interval-steps {interval_steps}")
    # the last 10 % of every walker's frames validate: they must hold one window of the loss
    span = interval_steps // stride * rollout_steps
    frames = int(round(md_ps / (stride * timestep)))
    if not max(1, round(VALIDATION_FRACTION * frames)) > span:
        shortest = (span + 1) / VALIDATION_FRACTION * stride * timestep
        raise ValueError(
            f"--md-ps {md_ps} ps is too short: the last 10 % of each walker's MD validates and must "
            f"span --interval-steps × --rollout-steps = {interval_steps * rollout_steps} MD steps; "
            f"use --md-ps {shortest:.3g} or more"
        )


def _run_train(args: argparse.Namespace) -> None:
    from molsamp.analysis import plot_training_curves
    from molsamp.distributed import init_from_environment
    from molsamp.flows.trajcast.model import save_forecaster

    rank, world = init_from_environment("gloo")  # under torchrun: data-parallel training
    torch.manual_seed(args.seed)
    model, result, _, state, timings = train_model(
        args.system, args.minutes, args.md_ps, args.walkers, args.interval_steps, args.stride,
        args.rollout_steps, args.channels, args.batch_size, args.lr, args.seed, not args.quiet,
        restarts=args.restarts, restart_noise=args.restart_noise, restart_share=args.restart_share,
        rollout_restarts=args.rollout_restarts,
        distributed=world > 1, compile=args.compile, max_ell=args.max_ell,
    )  # fmt: skip
    if rank != 0:
        return
    out: Path = args.output
    metadata = {
        "system": args.system,
        "interval_steps": args.interval_steps,
        "start_positions": state.positions[0].tolist(),
        "start_velocities": state.velocities[0].tolist(),
    }
    calibration = None
    if args.calibrate_noise_ps is not None:
        from molsamp.flows.trajcast import recipes
        from molsamp.flows.trajcast.calibration import calibrate_velocity_noise

        system = recipes.build(args.system)[0]
        temperature = recipes.recipe(args.system).temperature
        calibration = calibrate_velocity_noise(
            model, system, state, temperature, args.calibrate_noise_ps, generator=args.seed,
            progress=not args.quiet,
        )  # fmt: skip
        metadata["velocity_noise_calibrated_for"] = {
            "thermostat": "langevin",
            "thermostat_ps": args.calibrate_noise_ps,
        }
    path = save_forecaster(model, out / "model.pt", metadata)
    report = {
        "best_val_loss": result.best_val_loss, "steps": result.steps, "timings": timings,
        "scales": result.scales, "config": result.config, "history": result.history,
        "noise_calibration": None if calibration is None else vars(calibration),
    }  # fmt: skip
    (out / "training.json").write_text(json.dumps(report, indent=2))
    curves = plot_training_curves(
        result.history,
        "step",
        {"val_loss": "validation loss (normalised)", "lr": "learning rate"},
        out / "training.png",
        f"molsamp forecast train: {args.system}",
    )
    print(f"forecaster: {path} (interval {model.interval} ps = {args.interval_steps} MD steps)")
    print(f"training curves: {curves}")
    print(f"validation loss {result.best_val_loss:.4f} after {result.steps} steps, {result.seconds:.0f} s")


def _run_rollout(args: argparse.Namespace) -> None:
    from molsamp.analysis import plot_energies
    from molsamp.flows.trajcast import recipes
    from molsamp.flows.trajcast.driver import rollout
    from molsamp.flows.trajcast.model import load_forecaster
    from molsamp.io import CSVReporter, TrajectoryReporter
    from molsamp.system import State

    model, metadata = load_forecaster(args.model)
    model.use_compile(args.compile)
    name = metadata.get("system")
    system, state, potential = recipes.build(name)
    if "start_positions" in metadata:
        state = State.from_positions(metadata["start_positions"], metadata["start_velocities"], system.cell)
    state = recipes.zero_momenta(system, state)
    temperature = None if args.no_thermostat else (args.temperature or recipes.recipe(name).temperature)
    out: Path = args.output
    reporters = [
        CSVReporter(out / "energies.csv", args.report_interval),
        TrajectoryReporter(out / "trajectory.dcd", args.report_interval, system.topology),
    ]
    start = time.perf_counter()
    final = rollout(
        model, system, state, args.steps, temperature=temperature, thermostat_time=args.thermostat_ps,
        thermostat=args.thermostat,
        velocity_noise=not args.no_velocity_noise,
        generator=args.seed, potential=potential, reporters=reporters, checkpoint=out / "checkpoint.pt",
        checkpoint_interval=args.checkpoint_interval, resume=args.resume, progress=not args.quiet,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    plot = plot_energies(out / "energies.csv", out / "energies.png", temperature)
    print(f"forecast {final.step} steps of {model.interval} ps = {final.time:.1f} ps in {seconds:.0f} s")
    for path in (out / "energies.csv", out / "trajectory.dcd", out / "checkpoint.pt", plot):
        print(path)


def run_forecast(args: argparse.Namespace) -> None:
    if args.forecast_command == "train":
        _run_train(args)
    else:
        _run_rollout(args)
