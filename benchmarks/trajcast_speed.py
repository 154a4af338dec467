"""Force-free MD speed: simulated ps per wall second of a TrajCast forecaster against molsamp
MD with the reference potential and with a MACE potential of similar size, same process.

Run: ``OMP_NUM_THREADS=1 python benchmarks/trajcast_speed.py [--models trajcast-example]``.
With ``--models`` the trained forecasters of ``examples/trajcast_forecast.py`` are timed and
the accuracy numbers of its ``report.json`` are printed beside the speed; without it an
untrained forecaster of the same size is timed (speed does not depend on the weights).
MACE is untrained too, its energy scale shrunk so that its MD stays finite, and every
forecaster's residual scales and velocity noise are shrunk 100x for the same reason (a young
smoke-run model can blow up), and its rollout starts at 1 % of the thermal velocities under a
thermostat with τ = 10⁶ ps, so its nearly free flight cannot push atoms onto each other:
the cost of a step does not depend on these values, so speed is what is measured.
Every run starts from a state equilibrated with the reference potential. Timings are medians of round-robin repeats (``median_rates`` of md_speed.py).
``--compile`` adds the forecaster and the MACE run through ``torch.compile`` (compiled during the
warm-up, which is not timed; MACE's forces take minutes to compile on a CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from molsamp.flows.trajcast import TrajCast, load_forecaster, recipes, rollout
from molsamp.integrators import LangevinBAOAB, VelocityVerlet, simulate
from molsamp.potentials import MACE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from md_speed import median_rates  # noqa: E402  (the round-robin timer of benchmarks/md_speed.py)

INTERVAL_STEPS = 10


def forecaster_for(name: str, models: Path | None) -> TrajCast:
    path = (
        None
        if models is None
        else models / ("lj" if name == "lennard_jones_fluid" else "alanine") / "model.pt"
    )
    if path is not None and path.is_file():
        model, _ = load_forecaster(path)
        model = model.to(torch.float32)
        with torch.no_grad():  # the cost of a step does not depend on these values, and shrunk
            model.displacement_scale.mul_(0.01)  # residuals and noise keep the timed steps finite
            model.velocity_scale.mul_(0.01)  # from any start, with any thermostat, for any model
            model.velocity_noise.mul_(0.01)
        return model
    settings = recipes.recipe(name)
    system, _, _ = recipes.build(name)
    return TrajCast(
        system.atomic_numbers.unique().tolist(), INTERVAL_STEPS * settings.timestep, r_max=settings.r_max,
        max_ell=settings.max_ell, dtype=torch.float32,
    )  # fmt: skip


def similar_mace(model: TrajCast, system) -> MACE:
    h = model.hyperparameters()
    c = h["channels"]
    mace = MACE(
        h["elements"], r_max=h["r_max"], max_ell=h["max_ell"], correlation=h["correlation"],
        num_interactions=h["num_interactions"], hidden_irreps=f"{c}x0e+{c}x1o", radial_mlp=h["radial_mlp"],
        avg_num_neighbors=float(model.avg_num_neighbors), dtype=torch.float32,
    )  # fmt: skip
    with torch.no_grad():
        mace.scale.fill_(1e-3)  # untrained: keep forces small so the timed MD stays finite
    return mace.bind(system.atomic_numbers, system.pbc)


def runners(name: str, model: TrajCast, n_forecast: int, compile: bool = False) -> tuple[dict, dict]:
    settings = recipes.recipe(name)
    system, state, potential = recipes.build(name, seed=1)
    state = recipes.equilibrate(name, system, state, potential, seed=1)  # a liquid, not the fcc start
    state = recipes.zero_momenta(system, state).replace(step=0, time=0.0)
    md_steps = n_forecast * INTERVAL_STEPS
    holder = {}

    # the forecast starts nearly at rest under a thermostat that barely acts (its cost is still
    # paid): with shrunk residuals a forecast is close to free flight, which at thermal speed
    # pushes liquid atoms onto each other within a ps and makes the timed steps non-finite
    slow = state.replace(velocities=0.01 * state.velocities).to(dtype=torch.float32)

    def forecast_with(forecaster: TrajCast, key: str):
        def forecast(n: int) -> None:
            holder[key] = rollout(
                forecaster, system, holder.get(key, slow), n, temperature=settings.temperature,
                thermostat_time=1e6, generator=1, progress=False, guard=None,
            )  # fmt: skip

        return forecast

    if settings.data_friction > 0:
        reference = LangevinBAOAB(potential, system.masses, settings.timestep, settings.temperature, 1.0, 1)
    else:
        reference = VelocityVerlet(potential, system.masses, settings.timestep)

    def reference_md(n: int) -> None:
        holder["r"] = simulate(reference, holder.get("r", state), n, progress=False, guard=None)

    mace = similar_mace(model, system)

    def mace_md_with(network: MACE, key: str):
        integrator = LangevinBAOAB(network, system.masses, settings.timestep, settings.temperature, 1.0, 1)

        def mace_md(n: int) -> None:
            holder[key] = simulate(
                integrator, holder.get(key, state.to(dtype=torch.float32)), n, progress=False, guard=None,
                engine="torch",
            )  # fmt: skip

        return mace_md

    n_mace = max(INTERVAL_STEPS, md_steps // 10)
    runs = {
        "TrajCast forecaster": (forecast_with(model, "f"), n_forecast),
        "MD, reference potential": (reference_md, md_steps),
        "MD, MACE of similar size": (mace_md_with(mace, "m"), n_mace),
    }
    if compile:
        runs["TrajCast forecaster, compiled"] = (
            forecast_with(copy.deepcopy(model).use_compile(), "fc"),
            n_forecast,
        )
        runs["MD, MACE, compiled"] = (mace_md_with(copy.deepcopy(mace).use_compile(), "mc"), n_mace)
    ps_per_step = {
        label: model.interval if label.startswith("TrajCast") else settings.timestep for label in runs
    }
    sizes = {
        "forecaster_parameters": sum(p.numel() for p in model.parameters()),
        "mace_parameters": sum(p.numel() for p in mace.parameters()),
    }
    return runs, {"ps_per_step": ps_per_step, **sizes}


def _temperature(report: dict) -> str:
    """The forecast's mean temperature from an example's report, or why it has none (a rollout
    that exploded in its first frames)."""
    kinetic = report["kinetic_forecast"]
    if "temperature_mean_K" in kinetic:
        return f"{kinetic['temperature_mean_K']:.1f} K"
    return f"not measured ({kinetic.get('skipped', 'no forecast frames')})"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="output folder of examples/trajcast_forecast.py")
    parser.add_argument("--forecast-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd networks")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report, results = {}, {}
    if args.models is not None and (args.models / "report.json").is_file():
        report = json.loads((args.models / "report.json").read_text())
    for name, key in (("lennard_jones_fluid", "lennard_jones"), ("alanine_dipeptide", "alanine_dipeptide")):
        model = forecaster_for(name, args.models)
        runs, info = runners(name, model, args.forecast_steps, args.compile)
        rates = median_rates(runs, args.repeats)  # steps/s
        ps = {k: rates[k] * info["ps_per_step"][k] for k in rates}
        settings = recipes.recipe(name)
        results[name] = {"ps_per_s": ps, "interval_multiple": INTERVAL_STEPS, **info}
        print(
            f"== {name}: forecast interval {model.interval * 1000:g} fs = {INTERVAL_STEPS} x MD step "
            f"{settings.timestep * 1000:g} fs; forecaster {info['forecaster_parameters']} parameters, "
            f"MACE {info['mace_parameters']} =="
        )
        for label, value in ps.items():
            print(
                f"{label:30s} {value:9.3f} ps/s  ({rates[label]:8.1f} steps/s)   "
                f"forecaster / this = {ps['TrajCast forecaster'] / value:6.2f}"
            )
        if key in report:
            r = report[key]
            if key == "lennard_jones":
                d = r["diffusion_nm2_per_ps"]
                print(
                    f"accuracy (report.json): g(r) distance {r['rdf_distance']:.4f} (MD floor "
                    f"{r['rdf_distance_md_half_vs_half']:.4f}), D rel. error Green-Kubo "
                    f"{d['green_kubo_relative_error']:+.1%}, MSD {d['msd_relative_error']:+.1%}, "
                    f"T {_temperature(r)}"
                )
            else:
                print(
                    f"accuracy (report.json): phi/psi JS {r['phi_psi_js']:.4f} (MD same starts and length "
                    f"{r['phi_psi_js_md_same_starts_and_length']:.4f}), T {_temperature(r)}, "
                    f"stable {r['rollout']['stable']} (exploded at step {r['rollout']['exploded_at_step']})"
                )
        print()
    return results


if __name__ == "__main__":
    main()
