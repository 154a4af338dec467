"""TrajCast acceptance run: force-free MD of a Lennard-Jones liquid and of alanine dipeptide.

For each system: reference MD → training pairs at Δt = k·δt (k = 10) → train the forecaster
(wall-time budget) → roll it out for ≥ 10⁴ forecast steps with a thermostat (Bussi for the
fluid, per-atom Langevin for the dipeptide) → compare with reference MD:

* fluid (108 argon atoms, periodic): g(r) distance, velocity autocorrelation and diffusion
  coefficient (Green–Kubo and MSD), kinetic-energy distribution vs the canonical gamma law,
  potential energy of forecast frames (reference LJ), stability;
* alanine dipeptide (vacuum): φ/ψ JS divergence vs long MD of 16 walkers from fresh starts
  (with MD from the same starts for the same length as the floor), each basin's share and
  Amber energy, kinetic energy vs canonical, potential energy (Amber) of forecast frames,
  bond-length stability, and log|det J| of a forecast step (phase-space contraction).

Writes ``OUTPUT/report.json`` and PNG plots. Run with one thread:
``OMP_NUM_THREADS=1 python examples/trajcast_forecast.py --output trajcast-example``
(``--quick`` for a smoke run of a couple of minutes). To train on every core, launch it with
``OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 examples/trajcast_forecast.py ...``: training
is data parallel (each step sees 2 × the batch), and rank 0 alone rolls out and compares.
Training and rollouts run the network through ``torch.compile`` (``--no-compile``: eager), which
needs a C++ compiler and about two minutes of the training budget.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from molsamp.distributed import init_from_environment, rank_and_world_size
from molsamp.flows.reweighting import effective_counts, half_vs_half_divergences, js_divergence
from molsamp.flows.trajcast import (
    FrameRecorder,
    forecast_log_volume_change,
    recipes,
    rollout,
    save_forecaster,
)
from molsamp.flows.trajcast.calibration import calibrate_velocity_noise
from molsamp.flows.trajcast.commands import train_model
from molsamp.flows.trajcast.observables import (
    canonical_kinetic_energy_check,
    diffusion_from_msd,
    diffusion_from_vacf,
    mean_squared_displacement,
    radial_distribution,
    rdf_distance,
    unwrap,
    velocity_autocorrelation,
)
from molsamp.integrators import SimulationExploded
from molsamp.io import CSVReporter, TrajectoryReporter
from molsamp.units import BOLTZMANN_KJ_PER_MOL_K

INTERVAL_STEPS = 10
THERMOSTAT_PS = 0.5  # Bussi time constant of the forecast and of the fluid's reference MD
# the dipeptide's forecast heats its stiff X–H bonds and cools its heavy atoms; a per-atom
# Langevin thermostat holds every element at 300 K. Its velocity noise is calibrated on
# rollouts under that thermostat (calibration.calibrate_velocity_noise), so a weak τ holds
# 300 K: the τ = 10 fs needed without calibration slowed C5 ↔ C7eq exchange 2–4× (friction);
# the forecast's own kinetic-energy fluctuations then show (variance +4 % at 0.05 ps, +9 % at 0.1)
ALANINE_THERMOSTAT = "langevin"
ALANINE_THERMOSTAT_PS = 0.05
ALANINE_CALIBRATION_WALKERS = 8


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def internal_kinetic(
    positions: torch.Tensor, velocities: torch.Tensor, masses: torch.Tensor, angular: bool
) -> np.ndarray:
    """(F, B) kinetic energy (kJ/mol) of the motion not fixed by conserved momenta."""
    from molsamp.flows.trajcast import StochasticVelocityRescaling

    split = StochasticVelocityRescaling(1.0, 1.0, 0, angular=angular)
    out = []
    for x, v in zip(positions, velocities, strict=True):
        _, internal = split.split(x, v, masses)
        out.append((0.5 * masses[:, None] * internal.square()).sum((-2, -1)))
    return torch.stack(out).numpy()


def energies(potential, frames, cell=None, chunk: int = 50) -> np.ndarray:
    """Reference potential energy (kJ/mol) of (F, N, 3) frames, in chunks of ``chunk``."""
    frames = torch.as_tensor(np.asarray(frames), dtype=torch.float64)
    with torch.no_grad():
        return torch.cat([potential.energy(part, cell) for part in frames.split(chunk)]).numpy()


def plot_kinetic(samples: dict[str, np.ndarray], n_dof: int, temperature: float, path: Path) -> str:
    from scipy import stats

    plt = _plt()
    figure, axes = plt.subplots(figsize=(5, 3.6), dpi=110)
    kt = BOLTZMANN_KJ_PER_MOL_K * temperature
    grid = np.linspace(0.3, 1.8, 300) * 0.5 * n_dof * kt
    for label, k in samples.items():
        axes.hist(k.ravel(), bins=60, density=True, histtype="step", label=label)
    axes.plot(grid, stats.gamma(a=0.5 * n_dof, scale=kt).pdf(grid), "k--", label=f"canonical (N_f = {n_dof})")
    axes.set(xlabel="internal kinetic energy (kJ/mol)", ylabel="density")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return str(path)


def timed_rollout(
    model, system, state, n_steps, potential, out: Path, temperature, seed, record_every=1,
    thermostat_time: float = THERMOSTAT_PS, thermostat: str = "bussi",
):  # fmt: skip
    """Roll out with CSV/DCD reporters and an in-memory recorder. Returns (final state or None
    if the run exploded, positions (F, B, N, 3), velocities, wall seconds, step of explosion)."""
    recorder = FrameRecorder(record_every)
    reporters = [
        recorder,
        CSVReporter(out / "forecast_energies.csv", 100),
        TrajectoryReporter(out / "forecast_trajectory.dcd", 100, system.topology),
    ]
    start = time.perf_counter()
    final, exploded_at = None, None
    try:
        final = rollout(
            model, system, state, n_steps, temperature=temperature, thermostat_time=thermostat_time,
            thermostat=thermostat, generator=seed, potential=potential, reporters=reporters, progress=False,
        )  # fmt: skip
    except SimulationExploded as error:
        exploded_at = error.step
        print(f"rollout exploded: {error}")
    seconds = time.perf_counter() - start
    return final, torch.stack(recorder.positions), torch.stack(recorder.velocities), seconds, exploded_at


# --------------------------------------------------------------------------- LJ fluid
def training_summary(settings, dt: float, result, timings: dict, data) -> dict:
    """The report entries both studies share: time steps and the forecaster's training."""
    return {
        "md_timestep_ps": settings.timestep,
        "forecast_interval_ps": dt,
        "interval_multiple": INTERVAL_STEPS,
        "training": {
            "best_val_loss": result.best_val_loss,
            "steps": result.steps,
            "seconds": result.seconds,
            "md_data_seconds": timings["md_data_s"],
            "restart_window_share": timings.get("restart_window_share"),
            "frames": int(data.positions.shape[0] * data.positions.shape[1]),
            "history": result.history,
        },
    }


def _closest_pair(x: np.ndarray, cell: np.ndarray) -> float:
    """Smallest minimum-image distance (nm) among the (N, 3) positions."""
    f = (x[:, None] - x[None]) @ np.linalg.inv(cell)
    d = np.linalg.norm((f - np.round(f)) @ cell, axis=-1)
    return float(d[np.triu_indices(len(x), 1)].min())


def lennard_jones_study(
    out: Path, minutes: float, md_ps: float, n_steps: int, reference_ps: float, seed: int, rollout_steps: int,
    channels: int = 16, distributed: bool = False, compile: bool = False,
) -> dict | None:  # fmt: skip
    name = "lennard_jones_fluid"
    out.mkdir(parents=True, exist_ok=True)
    settings = recipes.recipe(name)
    model, result, data, md_state, timings = train_model(
        name, minutes, md_ps, walkers=4, interval_steps=INTERVAL_STEPS, stride=2, seed=seed, progress=False,
        rollout_steps=rollout_steps, channels=channels, distributed=distributed, compile=compile,
    )  # fmt: skip
    if rank_and_world_size()[0] != 0:  # data-parallel training done; rank 0 rolls out and compares
        return None
    save_forecaster(model, out / "model.pt", {"system": name, "interval_steps": INTERVAL_STEPS})
    system, _, potential = recipes.build(name)
    dt = model.interval
    start = recipes.zero_momenta(system, md_state)
    start = start.replace(positions=start.positions[:1], velocities=start.velocities[:1], step=0, time=0.0)

    n_ref = int(round(reference_ps / dt))
    t0 = time.perf_counter()
    ref_x, ref_v = recipes.reference_md(
        name, system, start, potential, n_ref, INTERVAL_STEPS, seed, thermostat_time=THERMOSTAT_PS
    )
    md_seconds = time.perf_counter() - t0
    final, fx, fv, forecast_seconds, exploded_at = timed_rollout(
        model, system, start, n_steps, potential, out, settings.temperature, seed
    )
    done = len(fx)
    ref_x, ref_v, fx, fv = (a[:, 0].numpy() for a in (ref_x, ref_v, fx, fv))
    cell = system.cell.numpy()

    # structure
    r_max = 0.49 * float(np.min(np.diag(cell)))
    every_ref, every_f = max(1, n_ref // 1000), max(1, len(fx) // 1000)
    r, g_md = radial_distribution(ref_x[::every_ref], cell, r_max)
    _, g_f = radial_distribution(fx[::every_f], cell, r_max)
    half = len(ref_x) // 2
    _, g_a = radial_distribution(ref_x[:half:every_ref], cell, r_max)
    _, g_b = radial_distribution(ref_x[half::every_ref], cell, r_max)
    # dynamics: frames every Δt for both
    frames = min(done, len(ref_x))  # a run that exploded early (or a smoke run) has fewer
    max_lag = min(int(round(2.0 / dt)), frames - 1)  # 2 ps
    vacf_md, vacf_f = velocity_autocorrelation(ref_v, max_lag), velocity_autocorrelation(fv, max_lag)
    msd_lag = min(int(round(5.0 / dt)), frames - 2)
    msd_md = mean_squared_displacement(unwrap(ref_x, cell), msd_lag)
    msd_f = mean_squared_displacement(unwrap(fx, cell), msd_lag)
    d = {
        "green_kubo_md": diffusion_from_vacf(vacf_md, dt),
        "green_kubo_forecast": diffusion_from_vacf(vacf_f, dt),
        "msd_md": diffusion_from_msd(msd_md, dt),
        "msd_forecast": diffusion_from_msd(msd_f, dt),
    }
    d["green_kubo_relative_error"] = d["green_kubo_forecast"] / d["green_kubo_md"] - 1
    d["msd_relative_error"] = d["msd_forecast"] / d["msd_md"] - 1
    # thermodynamics
    masses = system.masses
    k_f = internal_kinetic(torch.as_tensor(fx)[:, None], torch.as_tensor(fv)[:, None], masses, False)[:, 0]
    k_md = internal_kinetic(torch.as_tensor(ref_x)[:, None], torch.as_tensor(ref_v)[:, None], masses, False)[
        :, 0
    ]
    n_dof = 3 * system.n_atoms - 3
    with torch.no_grad():
        sub = slice(None, None, max(1, len(fx) // 500))
        e_f = potential.energy(torch.as_tensor(fx[sub]), system.cell).numpy()
        e_md = potential.energy(torch.as_tensor(ref_x[:: max(1, n_ref // 500)]), system.cell).numpy()
    # stability: closest approach over the rollout
    min_pair = min(_closest_pair(x, cell) for x in fx[:: max(1, len(fx) // 200)])

    plt = _plt()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110)
    axes[0].plot(r, g_md, label="MD")
    axes[0].plot(r, g_f, "--", label=f"TrajCast (Δt = {INTERVAL_STEPS} δt)")
    axes[0].set(xlabel="r (nm)", ylabel="g(r)", title="radial distribution")
    t = np.arange(max_lag + 1) * dt
    axes[1].plot(t, vacf_md / vacf_md[0], label="MD")
    axes[1].plot(t, vacf_f / vacf_f[0], "--", label="TrajCast")
    axes[1].set(xlabel="t (ps)", ylabel="VACF / VACF(0)", title="velocity autocorrelation")
    tm = np.arange(msd_lag + 1) * dt
    axes[2].plot(tm, msd_md, label=f"MD, D = {d['msd_md']:.2e} nm²/ps")
    axes[2].plot(tm, msd_f, "--", label=f"TrajCast, D = {d['msd_forecast']:.2e} nm²/ps")
    axes[2].set(xlabel="t (ps)", ylabel="MSD (nm²)", title="mean squared displacement")
    for ax in axes:
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "lj_structure_dynamics.png")
    plt.close(figure)
    return {
        "system": "periodic LJ argon, 108 atoms, rho*=0.8, 120 K",
        **training_summary(settings, dt, result, timings, data),
        "rollout": {"forecast_steps": done, "requested_steps": n_steps, "exploded_at_step": exploded_at,
                    "simulated_ps": done * dt, "wall_s": forecast_seconds,
                    "ps_per_s": done * dt / forecast_seconds, "stable": exploded_at is None and done == n_steps,
                    "closest_pair_nm": min_pair},
        "reference_md": {"simulated_ps": n_ref * dt, "wall_s": md_seconds, "ps_per_s": n_ref * dt / md_seconds},
        "rdf_distance": rdf_distance(g_f, g_md, r),
        "rdf_distance_md_half_vs_half": rdf_distance(g_b, g_a, r),
        "rdf_first_peak": {"md": [float(r[g_md.argmax()]), float(g_md.max())], "forecast": [float(r[g_f.argmax()]), float(g_f.max())]},
        "diffusion_nm2_per_ps": d,
        "kinetic_forecast": canonical_kinetic_energy_check(k_f, n_dof, settings.temperature),
        "kinetic_md": canonical_kinetic_energy_check(k_md, n_dof, settings.temperature),
        "potential_energy_kJ_per_mol": {"forecast_mean": float(e_f.mean()), "forecast_std": float(e_f.std()),
                                        "md_mean": float(e_md.mean()), "md_std": float(e_md.std())},
        "plots": [str(out / "lj_structure_dynamics.png"),
                  plot_kinetic({"TrajCast": k_f, "MD (VV + Bussi)": k_md}, n_dof, settings.temperature, out / "lj_kinetic.png")],
    }  # fmt: skip


# --------------------------------------------------------------------------- alanine
def _bond_lengths(positions: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    return np.linalg.norm(positions[..., bonds[:, 0], :] - positions[..., bonds[:, 1], :], axis=-1)


def _kinetic_check(kinetic: np.ndarray, degrees_of_freedom: int, temperature: float) -> dict:
    """The canonical kinetic-energy check, or why a rollout that exploded in its first frames
    has none (an autocorrelation time needs a few frames per walker)."""
    try:
        return canonical_kinetic_energy_check(kinetic, degrees_of_freedom, temperature)
    except ValueError as error:
        return {"skipped": f"{len(kinetic)} forecast frames: {error}"}


def _basins(angles: np.ndarray) -> dict[str, np.ndarray]:
    """Frame masks of the dipeptide's basins from (F, 2) φ/ψ in radians: C5 (φ < 0, ψ > 115° or
    < −150°), C7eq (φ < 0, 30° ≤ ψ ≤ 115°), αR (φ < 0, −150° ≤ ψ < 30°) and φ ≥ 0 (αL, C7ax)."""
    phi, psi = np.degrees(angles[:, 0]), np.degrees(angles[:, 1])
    in_c5 = (phi < 0) & ((psi > 115.0) | (psi < -150.0))
    in_c7eq = (phi < 0) & (psi >= 30.0) & (psi <= 115.0)
    return {"C5": in_c5, "C7eq": in_c7eq, "alpha_R": (phi < 0) & ~in_c5 & ~in_c7eq, "phi_positive": phi >= 0}


def _in_c5(angles: np.ndarray) -> np.ndarray:
    """Frames in C5 (:func:`_basins`)."""
    return _basins(angles)["C5"]


def _basin_table(angles: dict[str, np.ndarray], energies: dict[str, np.ndarray]) -> dict:
    """Per run (MD from the forecast's starts, the forecast), each basin's share of the frames
    and the mean reference potential energy (kJ/mol) of its frames: where a population error
    goes, and whether the frames there are strained."""
    table = {}
    for run, run_angles in angles.items():
        table[run] = {}
        for name, mask in _basins(run_angles).items():
            energy = float(energies[run][mask].mean()) if mask.any() else None
            table[run][name] = {"share": float(mask.mean()), "mean_energy_kJ_per_mol": energy}
    return table


def _c5_fractions(
    ref_angles: np.ndarray, same_angles: np.ndarray, forecast_angles: np.ndarray, walkers: int
) -> dict:
    """Share of frames in C5 rather than C7eq (:func:`_basins`), for long MD, for MD from the
    forecast's starts and of its length, and for the forecast, also per walker: where the
    forecast's φ/ψ bias shows, and how much one walker scatters (C5 ↔ C7eq crossings take tens
    of ps)."""
    per_walker = _in_c5(forecast_angles).reshape(walkers, -1).mean(1)
    return {
        "md": float(_in_c5(ref_angles).mean()),
        "md_same_starts": float(_in_c5(same_angles).mean()),
        "md_same_starts_per_walker": _in_c5(same_angles).reshape(walkers, -1).mean(1).round(3).tolist(),
        "forecast": float(per_walker.mean()),
        "forecast_per_walker": per_walker.round(3).tolist(),
    }


def _basin_changes(angles: np.ndarray, walkers: int, frame_ps: float) -> float:
    """Median over walkers of C5 ↔ not-C5 changes per 100 ps, from frames every ``frame_ps``
    (walker-major (walkers × frames, 2) φ/ψ in radians): how fast a walker exchanges basins."""
    in_c5 = _in_c5(angles).reshape(walkers, -1)
    changes = (np.diff(in_c5.astype(int), axis=1) != 0).sum(1)
    return float(np.median(changes / (in_c5.shape[1] * frame_ps / 100.0)))


def _volume_change(model, system, positions, velocities, friction: float, n_states: int = 32) -> dict:
    """Mean log|det J| of one forecast step (no noise or thermostat) at ``n_states`` MD states
    spread over (F, B, N, 3) ``positions``/``velocities``, in float64, beside what the training
    data's Langevin friction gives over the interval (−3Nγ·Δt; Hamiltonian flow: 0)."""
    exact = copy.deepcopy(model).use_compile(False).double()
    pick = torch.linspace(0, positions.shape[0] * positions.shape[1] - 1, n_states).long()
    x, v = (t.flatten(0, 1)[pick] for t in (positions, velocities))
    values = forecast_log_volume_change(exact, system, x, v).numpy()
    return {
        "mean": float(values.mean()),
        "standard_error": float(values.std(ddof=1) / np.sqrt(len(values))),
        "states": len(values),
        "md_data_friction": -3 * system.n_atoms * friction * model.interval,
    }


def alanine_study(
    out: Path,
    minutes: float,
    md_ps: float,
    n_steps: int,
    reference_ns: float,
    walkers: int,
    seed: int,
    rollout_steps: int,
    restarts: int = 0,
    restart_noise: float = 0.005,
    rollout_restarts: int = 0,
    channels: int = 16,
    distributed: bool = False,
    rollout_walkers: int = 16,
    lr: float | None = None,
    calibration_steps: int = 1000,
    compile: bool = False,
    restart_share: float | None = None,
    max_ell: int | None = None,
    volume_states: int = 32,
) -> dict | None:
    from molsamp.analysis import free_energy_2d
    from molsamp.flows.ramachandran import phi_psi

    name = "alanine_dipeptide"
    out.mkdir(parents=True, exist_ok=True)
    settings = recipes.recipe(name)
    model, result, data, md_state, timings = train_model(
        name,
        minutes,
        md_ps,
        walkers=walkers,
        interval_steps=INTERVAL_STEPS,
        stride=5,
        seed=seed,
        progress=False,
        rollout_steps=rollout_steps,
        restarts=restarts,
        restart_noise=restart_noise,
        restart_share=restart_share,
        rollout_restarts=rollout_restarts,
        channels=channels,
        distributed=distributed,
        lr=lr,
        compile=compile,
        max_ell=max_ell,
    )
    if rank_and_world_size()[0] != 0:
        return None
    system, _, potential = recipes.build(name)
    t0 = time.perf_counter()
    fitted_noise = model.velocity_noise.tolist()
    cal_system, cal_starts, _ = recipes.build(name, ALANINE_CALIBRATION_WALKERS, seed + 5)
    cal_starts = recipes.equilibrate(name, cal_system, cal_starts, potential, seed + 5)
    try:
        calibration = calibrate_velocity_noise(
            model, system, cal_starts, settings.temperature, ALANINE_THERMOSTAT_PS,
            steps=calibration_steps, warmup=calibration_steps // 5, generator=seed + 5,
        )  # fmt: skip
        calibrated = {"calibrated_nm_per_ps": calibration.sigma,
                      "last_round_temperature_ratio": calibration.temperature_ratio}  # fmt: skip
    except SimulationExploded as error:  # a model too unstable to calibrate keeps its MD-fitted noise
        calibrated = {"calibration_failed": str(error)}
    calibration_seconds = time.perf_counter() - t0
    save_forecaster(model, out / "model.pt", {"system": name, "interval_steps": INTERVAL_STEPS})
    dt = model.interval
    steps_per_ps = int(round(1.0 / settings.timestep))
    n_ref = int(round(reference_ns * 1000 / walkers))
    t0 = time.perf_counter()
    ref_x, _ = recipes.reference_md(
        name, system, md_state.replace(step=0, time=0.0), potential, n_ref, steps_per_ps, seed
    )
    # the rollout's walkers start from fresh equilibrated states; MD from the same starts for
    # the rollout's length shows how far one run of that size lies from the long reference
    start_system, starts, _ = recipes.build(name, rollout_walkers, seed + 3)
    starts = recipes.equilibrate(name, start_system, starts, potential, seed + 3).replace(step=0, time=0.0)
    same_x, same_v = recipes.reference_md(
        name, system, starts, potential, max(1, round(n_steps * dt)), steps_per_ps, seed + 3
    )
    md_seconds = time.perf_counter() - t0
    start = recipes.zero_momenta(system, starts)
    final, fx, fv, forecast_seconds, exploded_at = timed_rollout(
        model,
        system,
        start,
        n_steps,
        potential,
        out,
        settings.temperature,
        seed,
        record_every=1,
        thermostat_time=ALANINE_THERMOSTAT_PS,
        thermostat=ALANINE_THERMOSTAT,
    )
    topology = system.topology
    ref_frames = ref_x.transpose(0, 1)  # (B, F, N, 3)
    every = int(round(1.0 / dt))  # 1 ps, like the reference frames
    # every 1 ps like the reference; a run that exploded early keeps all its frames
    f_frames = (fx[every - 1 :: every] if len(fx) >= every else fx).transpose(0, 1)
    frame_ps = every * dt if len(fx) >= every else dt
    ref_angles = phi_psi(ref_frames.reshape(-1, system.n_atoms, 3), topology)
    f_angles = phi_psi(f_frames.reshape(-1, system.n_atoms, 3), topology)
    bins = 36
    ref_counts = effective_counts(ref_angles, None, bins)
    js = js_divergence(effective_counts(f_angles, None, bins), ref_counts, 1.0)
    same = phi_psi(same_x.transpose(0, 1).reshape(-1, system.n_atoms, 3), topology)
    js_same_length = js_divergence(effective_counts(same, None, bins), ref_counts, 1.0)
    # stability and energies
    bonds = np.array([[a.index, b.index] for a, b in topology.bonds])
    ref_b = _bond_lengths(ref_frames.numpy(), bonds)
    f_b = _bond_lengths(fx.numpy(), bonds)
    stretched = (f_b > 1.25 * ref_b.max(axis=(0, 1))).any(-1)  # (F, B)
    with torch.no_grad():
        sub = fx[:: max(1, len(fx) // 300)].reshape(-1, system.n_atoms, 3)
        e_f = potential.energy(sub).numpy()
        e_md = potential.energy(
            ref_frames.reshape(-1, system.n_atoms, 3)[:: max(1, ref_frames.shape[1] * walkers // 1200)]
        ).numpy()
        basin_energies = {
            "md_same_starts": potential.energy(same_x.transpose(0, 1).reshape(-1, system.n_atoms, 3)).numpy(),
            "forecast": potential.energy(f_frames.reshape(-1, system.n_atoms, 3)).numpy(),
        }
    k_f = internal_kinetic(fx, fv, system.masses, True)
    contraction = _volume_change(model, system, same_x, same_v, settings.data_friction, volume_states)
    n_dof = 3 * system.n_atoms - 6

    plt = _plt()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.4), dpi=110, sharey=True)
    for ax, (angles, title) in zip(
        axes,
        [
            (ref_angles, f"MD ({reference_ns:g} ns)"),
            (f_angles, f"TrajCast ({len(fx) * dt * rollout_walkers / 1000:g} ns)"),
        ],
        strict=True,
    ):
        free_energy, edges = free_energy_2d(angles[:, 0], angles[:, 1], settings.temperature)
        degrees = np.degrees(edges)
        mesh = ax.pcolormesh(degrees, degrees, free_energy.T, cmap="viridis", vmax=30.0)
        ax.set(xlabel="φ (degrees)", title=title, xlim=(-180, 180), ylim=(-180, 180))
    axes[0].set_ylabel("ψ (degrees)")
    figure.colorbar(mesh, ax=axes, label="free energy (kJ/mol)")
    figure.savefig(out / "alanine_ramachandran.png")
    plt.close(figure)
    return {
        "system": "alanine dipeptide, vacuum, Amber ff99SB-ILDN, 300 K",
        **training_summary(settings, dt, result, timings, data),
        "rollout": {"walkers": rollout_walkers, "thermostat": ALANINE_THERMOSTAT, "thermostat_ps": ALANINE_THERMOSTAT_PS, "forecast_steps_per_walker": len(fx), "requested_steps": n_steps,
                    "exploded_at_step": exploded_at, "simulated_ps_per_walker": len(fx) * dt,
                    "wall_s": forecast_seconds, "ps_per_s_all_walkers": rollout_walkers * len(fx) * dt / forecast_seconds,
                    "stable": exploded_at is None and len(fx) == n_steps and not stretched.any(),
                    "frames_with_a_bond_over_1.25x_md_max": int(stretched.sum())},
        "reference_md": {"simulated_ns": n_ref * walkers / 1000, "same_starts_ns": same_x.shape[0] * rollout_walkers / 1000,
                         "wall_s": md_seconds},
        "phi_psi_js": js,
        "phi_psi_forecast_frames": int(f_frames.shape[0] * f_frames.shape[1]),
        "phi_psi_js_md_same_starts_and_length": js_same_length,
        "phi_psi_md_half_vs_half": half_vs_half_divergences(ref_angles, bins),
        "phi_psi_bins": bins,
        "fraction_phi_positive": {"md": float((ref_angles[:, 0] > 0).mean()), "forecast": float((f_angles[:, 0] > 0).mean())},
        "fraction_c5": _c5_fractions(ref_angles, same, f_angles, rollout_walkers),
        "basins": _basin_table({"md_same_starts": same, "forecast": f_angles}, basin_energies),
        "c5_c7eq_changes_per_100ps_median": {"md_same_starts": _basin_changes(same, rollout_walkers, 1.0),
                                             "forecast": _basin_changes(f_angles, rollout_walkers, frame_ps)},
        "phase_space_log_volume_change_per_step": contraction,
        "velocity_noise": {"elements": [int(e) for e in model.elements], "fitted_on_md_nm_per_ps": fitted_noise,
                           **calibrated, "calibration_walkers": ALANINE_CALIBRATION_WALKERS, "seconds": calibration_seconds},
        "kinetic_forecast": _kinetic_check(k_f, n_dof, settings.temperature),
        "potential_energy_kJ_per_mol": {"forecast_mean": float(e_f.mean()), "forecast_std": float(e_f.std()),
                                        "md_mean": float(e_md.mean()), "md_std": float(e_md.std())},
        "plots": [str(out / "alanine_ramachandran.png"),
                  plot_kinetic({"TrajCast": k_f}, n_dof, settings.temperature, out / "alanine_kinetic.png")],
    }  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("trajcast-example"))
    parser.add_argument("--lj-minutes", type=float, default=20.0, help="LJ training wall time")
    parser.add_argument("--alanine-minutes", type=float, default=20.0, help="alanine training wall time")
    parser.add_argument("--steps", type=int, default=10_000, help="forecast steps per walker")
    parser.add_argument(
        "--rollout-steps", type=int, default=2, help="forecast steps in the fluid's training loss"
    )
    parser.add_argument(
        "--alanine-rollout-steps",
        type=int,
        default=4,
        help="forecast steps in the dipeptide's training loss (2: φ/ψ JS 0.061-0.078, 4: 0.053-0.055)",
    )
    parser.add_argument(
        "--lj-channels", type=int, default=32, help="C of the fluid's forecaster (16: faster, D 41 %% low)"
    )
    parser.add_argument(
        "--lj-md-ps", type=float, default=30.0, help="LJ training MD per walker (4 walkers), ps"
    )
    parser.add_argument("--alanine-channels", type=int, default=16, help="C of the dipeptide's forecaster")
    parser.add_argument(
        "--alanine-max-ell", type=int, help="l_max of the dipeptide's edge spherical harmonics (default: 2)"
    )
    parser.add_argument(
        "--alanine-md-ps", type=float, default=60.0, help="alanine training MD per walker (4), ps"
    )
    parser.add_argument(
        "--alanine-restarts",
        type=int,
        default=300,
        help="MD segments (0.5 ps) restarted from strained training frames, added to the alanine data",
    )
    parser.add_argument(
        "--alanine-restart-noise",
        type=float,
        default=0.012,
        help="largest position noise (nm) of the strained restarts",
    )
    parser.add_argument(
        "--alanine-restart-share",
        type=float,
        help="fraction of training windows drawn from the strained restarts (default: by their number)",
    )
    parser.add_argument(
        "--alanine-rollout-restarts",
        type=int,
        default=0,
        help="rollouts whose states restart reference MD after 60 %% of training (DAgger); 0: off",
    )
    parser.add_argument(
        "--alanine-lr",
        type=float,
        help=(
            "alanine learning rate (default: the recipe's 6e-3, which validates 20 %% lower in 20 "
            "minutes than 3e-3)"
        ),
    )
    parser.add_argument(
        "--alanine-walkers",
        type=int,
        default=16,
        help="dipeptide rollout walkers, each from a fresh equilibrated start (4 are too few to judge φ/ψ)",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="train and roll out the eager network (default: torch.compile, twice the training steps per "
        "second after about two minutes of compilation; off in --quick)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["lj", "alanine"], help="run one study")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (minutes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rank, world = init_from_environment("gloo")  # torchrun: train data parallel, one thread per rank
    if args.quick:
        args.lj_minutes = args.alanine_minutes = 0.3
        args.lj_channels = 16  # a 0.3-minute C = 32 model explodes within the smoke run
        args.alanine_rollout_steps = 2  # so does a 0.3-minute dipeptide model with a 4-step loss
        args.steps, args.lj_md_ps, args.alanine_md_ps = 200, 10.0, 10.0
        args.alanine_restarts = min(args.alanine_restarts, 20)
        args.no_compile = True  # compiling takes longer than the smoke run trains
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "threads": torch.get_num_threads()}
    start = time.perf_counter()
    if args.only in (None, "lj"):
        report["lennard_jones"] = lennard_jones_study(
            args.output / "lj", args.lj_minutes, args.lj_md_ps, args.steps,
            5.0 if args.quick else 150.0, args.seed, args.rollout_steps, args.lj_channels, world > 1,
            not args.no_compile,
        )  # fmt: skip
        if rank == 0:
            _save(args.output, report)
    if args.only in (None, "alanine"):
        report["alanine_dipeptide"] = alanine_study(
            args.output / "alanine", args.alanine_minutes, args.alanine_md_ps, args.steps,
            0.02 if args.quick else 1.2, 4, args.seed, args.alanine_rollout_steps, args.alanine_restarts,
            args.alanine_restart_noise, args.alanine_rollout_restarts, args.alanine_channels, world > 1,
            args.alanine_walkers, args.alanine_lr, 50 if args.quick else 1000, not args.no_compile,
            restart_share=args.alanine_restart_share, max_ell=args.alanine_max_ell,
            volume_states=4 if args.quick else 32,  # each costs 6N = 132 backward passes
        )  # fmt: skip
    if rank != 0:
        return {}
    report["total_s"] = time.perf_counter() - start
    _save(args.output, report)
    print(json.dumps(_summary(report), indent=2))
    return report


def _save(folder: Path, report: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=float))


def _summary(report: dict) -> dict:
    out = {"total_s": report.get("total_s")}
    if "lennard_jones" in report:
        lj = report["lennard_jones"]
        out["lennard_jones"] = {
            "interval": f"{lj['interval_multiple']} x {lj['md_timestep_ps']} ps",
            "training_s": lj["training"]["seconds"], "rollout": lj["rollout"],
            "rdf_distance": lj["rdf_distance"], "rdf_floor": lj["rdf_distance_md_half_vs_half"],
            "diffusion": lj["diffusion_nm2_per_ps"],
            "T_forecast": [lj["kinetic_forecast"][k] for k in ("temperature_mean_K", "temperature_std_K", "temperature_std_expected_K")],
            "K_mean_sigma_away": lj["kinetic_forecast"]["mean_sigma_away"],
            "K_var_relative_error": lj["kinetic_forecast"]["variance_relative_error"],
            "epot": lj["potential_energy_kJ_per_mol"],
        }  # fmt: skip
    if "alanine_dipeptide" in report:
        al = report["alanine_dipeptide"]
        out["alanine_dipeptide"] = {
            "interval": f"{al['interval_multiple']} x {al['md_timestep_ps']} ps",
            "training_s": al["training"]["seconds"], "rollout": al["rollout"],
            "phi_psi_js": al["phi_psi_js"], "js_md_same_length": al["phi_psi_js_md_same_starts_and_length"],
            "js_md_half_vs_half": al["phi_psi_md_half_vs_half"]["js"],
            "fraction_phi_positive": al["fraction_phi_positive"],
            "fraction_c5": al["fraction_c5"],
            "log_volume_change_per_step": al["phase_space_log_volume_change_per_step"],
            "basin_shares": {run: {name: round(b["share"], 3) for name, b in basins.items()}
                             for run, basins in al["basins"].items()},
            "T_forecast": [al["kinetic_forecast"].get(k) for k in ("temperature_mean_K", "temperature_std_K", "temperature_std_expected_K")],
            "K_mean_sigma_away": al["kinetic_forecast"].get("mean_sigma_away"),
            "K_var_relative_error": al["kinetic_forecast"].get("variance_relative_error"),
            "epot": al["potential_energy_kJ_per_mol"],
        }  # fmt: skip
    return out


if __name__ == "__main__":
    main()
