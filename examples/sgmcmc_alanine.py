"""How far to trust a MACE potential of alanine dipeptide: SG-MCMC posterior vs deep ensemble.

1. Amber-labelled 300 K MD frames train a small MACE (the MAP estimate) on forces, then
   fine-tune it with a 100× larger energy weight (``--energy-minutes``); or
   ``--map-model`` loads a model trained on the same frames (e.g. by
   ``examples/train_alanine_mace.py``).
2. Preconditioned SGLD with a cyclical step size (Zhang et al. 2020), one chain per process,
   starts from the MAP weights and keeps the end of every cycle as a posterior sample.
3. A deep ensemble (independently initialised models, same data) is the baseline.
4. On held-out 300 K frames: coverage of the 68 % / 95 % intervals of forces and of relative
   energies (raw, and with a scale fitted on calibration frames from an MD run of their own);
   on 700 K frames (out of distribution) σ must grow.
5. The Amber φ and ψ free-energy profiles, reweighted to every member (wₖ ∝ e^{−β(Uₖ − U_Amber)}) on
   block-bootstrap resamples of the frames, gives a credible band (model spread plus the
   reweighting's sampling error) that should contain the Amber reference. The members'
   energies are first widened by the calibration scale of relative energies: the profile
   depends on energy differences, which a posterior tempered on forces can be too sure of.

Writes ``report.json``, the posterior samples (``posterior_k.pt``) and ensemble members
(``ensemble_k.pt``) as model files (``load_potential``), the reference MD
(``reference_md.npz``, for ``--reference-md``), force and energy calibration and φ/ψ-profile
PNGs. ``--posterior-from`` analyses a previous run's samples again.

    python examples/sgmcmc_alanine.py --output runs/sgmcmc
    torchrun --nproc-per-node 2 examples/sgmcmc_alanine.py --output runs/sgmcmc   # a chain per rank
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import mdtraj
import numpy as np
import torch
import torch.distributed as dist

from molsamp.distributed import gather_on_root, init_from_environment
from molsamp.flows.reweighting import bootstrap_indices
from molsamp.integrators import CyclicalSchedule, LangevinBAOAB, PreconditionedSGLD, simulate
from molsamp.io import TrajectoryReporter
from molsamp.potentials import MACE, load_potential, save_potential
from molsamp.potentials.datasets import AtomsDataset, alanine_dipeptide_md_dataset
from molsamp.potentials.training import TrainingConfig, evaluate, train
from molsamp.systems import alanine_dipeptide
from molsamp.uncertainty import (
    calibrate,
    calibrate_relative_energies,
    credible_interval,
    plot_calibration,
    plot_credible_band,
    recalibration_factor,
    simultaneous_band,
    widen_member_spread,
)
from molsamp.uncertainty.likelihood import batches_of, energy_force_negative_log_likelihood
from molsamp.units import kT

DTYPE = torch.float32
TEMPERATURE = 300.0
# w_E (nm²) of the energy fine-tune. In kJ/mol and nm the force term of the loss is ~10³ and the
# energy term (per atom) ~10⁻², so with w_E ≤ 10³ the energies hardly steer the fit: forces
# fitted to 2 % left the C5 and C7eq basins 2.5 kJ/mol (1 kT) apart in energy error, which no
# force error shows; 5 epochs at w_E = 10⁴, lr 3·10⁻⁴ brought that to 0.75 with the same force
# error (lr 10⁻³: 0.2, but 20 % larger force errors)
ENERGY_WEIGHT = 1e4


def small_mace(seed: int) -> MACE:
    torch.manual_seed(seed)
    return MACE(
        [1, 6, 7, 8],
        r_max=0.4,
        max_ell=2,
        correlation=3,
        hidden_irreps="16x0e+16x1o",
        radial_mlp=(32, 32),
        dtype=DTYPE,
    )


def fit(
    model: MACE,
    train_set: AtomsDataset,
    val_set: AtomsDataset,
    minutes: float,
    quiet: bool,
    seed: int = 0,
    energy_minutes: float = 0.0,
):
    """Train on forces (energies weigh little) for ``minutes``, then for ``energy_minutes``
    with the energy weight ``ENERGY_WEIGHT`` (100× stage two's) from a lower learning rate."""
    config = TrainingConfig(
        max_epochs=500,
        batch_size=8,
        lr=5e-3,
        ema_decay=0.995,
        scheduler_patience=3,
        patience=50,
        stage_two_fraction=0.85,
        stage_two_energy_weight=100.0,
        stage_two_lr_factor=0.3,
        max_time_s=60 * minutes,
        dtype=DTYPE,
        seed=seed,
        progress=not quiet,
    )
    result = train(model, train_set, val_set, config)
    if energy_minutes <= 0:
        return result
    tuning = replace(
        config, lr=3e-4, energy_weight=ENERGY_WEIGHT, stage_two_fraction=1.0, max_time_s=60 * energy_minutes
    )
    tuned = train(model, train_set, val_set, tuning, fit_stats=False)
    later = [{**row, "seconds": row["seconds"] + result.seconds} for row in tuned.history]
    return replace(
        tuned,
        seconds=result.seconds + tuned.seconds,
        history=result.history + later,
        epochs=result.epochs + tuned.epochs,
    )


def predictions(models: list[MACE], structures, forces: bool = True):
    """Energies (K, S) kJ/mol and, if ``forces``, forces (K, S, N, 3) kJ/mol/nm of every model."""
    batches = batches_of(structures, 64, models[0], DTYPE)
    energies, member_forces = [], []
    for model in models:
        outputs = [
            model.predict(b.atomic_numbers, b.positions, b.batch, pairs=b.pairs, forces=forces)
            for b in batches
        ]
        energies.append(torch.cat([o["energy"].detach() for o in outputs]))
        if forces:
            member_forces.append(
                torch.cat([o["forces"].detach() for o in outputs]).reshape(len(structures), -1, 3)
            )
    return torch.stack(energies).double(), torch.stack(member_forces).double() if forces else None


def labels(structures) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([s.energy for s in structures]), torch.stack([s.forces for s in structures])


def uncertainty_report(name: str, models: list[MACE], val, test, ood, output: Path) -> dict:
    """Calibration on held-out test frames, raw and with scales fitted on the ``val`` frames
    (an MD run of its own: frames interleaved with the training frames would be fitted too
    well), of forces and of relative energies, and the OOD σ ratio.
    ``energy_recalibration_factor`` widens the members' energies for the φ and ψ profiles
    (:func:`torsion_profile`)."""
    report = {}
    (val_e, val_f), (test_e, test_f), (_, ood_f) = (
        predictions(models, s.structures) for s in (val, test, ood)
    )
    (val_e_ref, val_ref), (test_e_ref, test_ref), (_, ood_ref) = (
        labels(s.structures) for s in (val, test, ood)
    )

    def mean_sigma(forces):
        return forces.mean(0), (forces - forces.mean(0)).square().sum(-1).mean(0).sqrt()

    (val_mean, val_sigma), (test_mean, test_sigma), (ood_mean, ood_sigma) = map(
        mean_sigma, (val_f, test_f, ood_f)
    )
    factor = recalibration_factor(val_mean, val_ref, val_sigma)
    raw, scaled = (
        calibrate(test_mean, test_ref, test_sigma),
        calibrate(test_mean, test_ref, factor * test_sigma),
    )
    plot_calibration(
        scaled, output / f"calibration_{name}.png", title=f"{name}: test frames, σ × {factor:.2f}"
    )
    energy_factor = calibrate_relative_energies(val_e, val_e_ref).scale
    energy_raw = calibrate_relative_energies(test_e, test_e_ref)
    energy_scaled = calibrate_relative_energies(widen_member_spread(test_e, energy_factor), test_e_ref)
    plot_calibration(
        energy_scaled,
        output / f"energy_calibration_{name}.png",
        title=f"{name}: test relative energies, σ × {energy_factor:.2f}",
        label="(ΔE_pred − ΔE_ref)/σ",
    )
    report.update(
        members=len(models),
        test_force_mae=float((test_mean - test_ref).abs().mean()),
        coverage_68_raw=raw.coverage(0.68),
        coverage_95_raw=raw.coverage(0.95),
        miscalibration_area_raw=raw.miscalibration_area,
        recalibration_factor=factor,
        coverage_68=scaled.coverage(0.68),
        coverage_95=scaled.coverage(0.95),
        miscalibration_area=scaled.miscalibration_area,
        energy_coverage_68_raw=energy_raw.coverage(0.68),
        energy_coverage_95_raw=energy_raw.coverage(0.95),
        energy_recalibration_factor=energy_factor,
        energy_coverage_68=energy_scaled.coverage(0.68),
        energy_coverage_95=energy_scaled.coverage(0.95),
        mean_sigma_test=float(test_sigma.mean()),
        mean_sigma_700K=float(ood_sigma.mean()),
        sigma_ratio_ood_over_test=float(ood_sigma.mean() / test_sigma.mean()),
        ood_force_mae=float((ood_mean - ood_ref).abs().mean()),
    )
    return report


TORSION_EDGES = {
    "phi": np.linspace(-180, 0, 19),  # φ < 0 holds all of 300 K MD's weight
    "psi": np.linspace(-180, 180, 25),
}
TORSION_SYMBOLS = {"phi": "φ", "psi": "ψ"}


def frame_energies(models: list[MACE], frames: np.ndarray, topology) -> torch.Tensor:
    """(K, F) energies, kJ/mol, of every member on (F, N, 3) frames in nm."""
    from molsamp.potentials.datasets import Structure

    z = torch.tensor([a.element.atomic_number for a in topology.atoms])
    structures = [
        Structure(z, torch.from_numpy(x).double(), torch.tensor(0.0), torch.zeros(len(z), 3)) for x in frames
    ]
    return predictions(models, structures, forces=False)[0]


def torsion_profile(
    torsion: str, angles: np.ndarray, member_energies: torch.Tensor, amber_energies: np.ndarray,
    output: Path, name: str, energy_scale: float = 1.0,
) -> dict:  # fmt: skip
    """Amber profile of one torsion (``angles`` (F,) degrees of the Amber frames) reweighted to
    every member; the credible band against Amber itself.

    The band is computed twice: from the members as sampled ("raw"), and from the members'
    energies widened by ``energy_scale``, the relative-energy recalibration factor fitted on
    calibration frames (the headline, plotted): the profile depends on energy differences
    only, so their calibration, not the forces', sets its width."""
    edges = TORSION_EDGES[torsion]
    centers = 0.5 * (edges[1:] + edges[:-1])

    def profile(w):
        """−kT ln P(bin), P normalised over the bins: each bin's own probability, so no bin
        is pinned (a profile shifted to its minimum has zero width at that minimum)."""
        p, _ = np.histogram(angles, bins=edges, weights=w)
        with np.errstate(divide="ignore"):
            f = -kT(TEMPERATURE) * np.log(p / p.sum())
        f[~np.isfinite(f)] = np.nan  # empty bins
        return f

    reference = profile(np.full(len(angles), 1.0 / len(angles)))
    # each member's profile on block-bootstrap resamples of the frames: the band holds the
    # model (posterior) spread and the finite-sample error of reweighting a 2 ns trajectory
    # (blocks of 50 ps, fewer frames for short runs)
    block = min(100, max(1, len(angles) // 10))
    resamples = bootstrap_indices(len(angles), 25, torch.Generator().manual_seed(0), block_size=block)

    def bands(energies: torch.Tensor) -> dict:
        log_w = -(energies.numpy() - amber_energies[None]) / kT(TEMPERATURE)
        log_w -= log_w.max(1, keepdims=True)
        weights = np.exp(log_w)
        weights /= weights.sum(1, keepdims=True)
        resampled = np.array(
            [profile(np.bincount(r, weights=w[r], minlength=len(angles))) for w in weights for r in resamples]
        )
        members = np.array([profile(w) for w in weights])
        interval = credible_interval(resampled, level=0.95)
        populated = (reference - np.nanmin(reference) < 15.0) & np.all(np.isfinite(interval.values), 0)
        # a 95 % pointwise band misses some of 13 bins about half the time even when
        # calibrated; the simultaneous band holds a whole posterior profile with 95 % probability
        # none populated: every bin lost all weight in some resample (a tiny or far-off run)
        band = simultaneous_band(resampled[:, populated], level=0.95) if populated.any() else None
        # the older gauge, every profile shifted to its own minimum, for comparison
        pinned = credible_interval(resampled - np.nanmin(resampled, 1, keepdims=True), level=0.95)
        return {
            "populated": populated, "band": band, "members": members, "resampled": resampled,
            "kish": 1 / (weights**2).sum(1) / weights.shape[1],
            "bins": int(populated.sum()),
            "bins_inside_simultaneous_band": 0 if band is None else int(band.contains(reference[populated]).sum()),
            "bins_inside_model_only_band": int(
                credible_interval(members, level=0.95).contains(reference)[populated].sum()
            ),
            "bins_inside_band": int(interval.contains(reference)[populated].sum()),
            "bins_inside_band_pinned_at_minimum": int(
                pinned.contains(reference - np.nanmin(reference))[populated].sum()
            ),
            "band_width_mean_kj_per_mol": float((interval.upper - interval.lower)[populated].mean()),
        }  # fmt: skip

    raw = bands(member_energies)
    scaled = bands(widen_member_spread(member_energies, energy_scale))
    populated = scaled["populated"]
    shift = np.nanmin(reference)  # plotted relative to Amber's minimum (one constant for all)
    symbol = TORSION_SYMBOLS[torsion]
    if scaled["band"] is not None:
        plot_credible_band(
            centers[populated],
            _subset(scaled["band"], slice(None), shift),
            output / f"{torsion}_profile_{name}.png",
            reference=reference[populated] - shift,
            xlabel=f"{symbol} (degrees)",
            ylabel=f"free energy −kT ln P({symbol} bin) (kJ/mol)",
            title=f"{name}: {symbol} profile, 95 % simultaneous band (energy σ × {energy_scale:.2f}) vs Amber",
        )
    np.savez(
        output / f"{torsion}_profiles_{name}.npz",
        centers=centers, reference=reference, members=scaled["members"], resampled=scaled["resampled"],
        members_raw=raw["members"], resampled_raw=raw["resampled"], kish=scaled["kish"],
    )  # fmt: skip
    counts = [key for key in raw if key.startswith(("bins", "band_width"))]
    return {
        "energy_scale": energy_scale,
        **{key: scaled[key] for key in counts},
        "inside_simultaneous_band": scaled["band"] is not None
        and bool(scaled["band"].contains(reference[populated]).all()),
        "kish_ess_fraction_per_member": scaled["kish"].round(3).tolist(),
        "raw": {key: raw[key] for key in counts},
    }


def _subset(interval, mask, shift: float = 0.0):
    """The interval in the bins ``mask`` selects (a boolean array or a slice), shifted by ``shift``."""
    return type(interval)(
        interval.values[:, mask] - shift,
        interval.level,
        interval.lower[mask] - shift,
        interval.upper[mask] - shift,
        interval.median[mask] - shift,
    )


def posterior_files(folder: Path) -> list[Path]:
    """``posterior_k.pt`` files a previous run saved in ``folder``, in order of k."""
    files = sorted(folder.glob("posterior_*.pt"), key=lambda path: int(path.stem.split("_")[1]))
    if len(files) < 2:
        raise SystemExit(f"--posterior-from: need ≥ 2 posterior_k.pt files in {folder}, found {len(files)}")
    return files


def reference_md(n_frames: int, seed: int, temperature: float = TEMPERATURE):
    """Amber MD frames (nm) every 0.5 ps and their Amber energies (kJ/mol)."""
    import tempfile

    system, state, amber = alanine_dipeptide(seed=seed, temperature=temperature)
    langevin = LangevinBAOAB(amber, system.masses, 0.001, temperature, 1.0, seed)
    state = simulate(langevin, state, 10_000, progress=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reference.dcd"
        simulate(
            langevin,
            state,
            500 * n_frames,
            reporters=[TrajectoryReporter(path, 500, system.topology)],
            progress=False,
        )
        frames = mdtraj.load(str(path), top=system.topology).xyz.astype(np.float64)
    energies = amber.energy(torch.from_numpy(frames)).numpy()
    return frames, energies, system.topology


def main(argv: list[str] | None = None) -> dict | None:
    """Run the study; returns the report on rank 0 (None on other ranks)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frames", type=int, default=3000, help="training + validation frames (as train_alanine_mace.py)"
    )
    parser.add_argument("--test-frames", type=int, default=300)
    parser.add_argument("--map-minutes", type=float, default=10.0)
    parser.add_argument(
        "--energy-minutes",
        type=float,
        default=5.0,
        help="then fine-tune the MAP with a 100× larger energy weight (ensemble members: "
        "the same share of their minutes)",
    )
    parser.add_argument(
        "--map-model", type=Path, help="a MAP model saved by train_alanine_mace.py (skips training it)"
    )
    parser.add_argument(
        "--chains", type=int, default=2, help="chains in one process (torchrun: one per rank)"
    )
    parser.add_argument("--samples-per-chain", type=int, default=4)
    parser.add_argument("--cycle-steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3, help="pSGLD step size (RMSprop-like)")
    parser.add_argument(
        "--posterior-temperature",
        type=float,
        default=2400.0,
        help="T of the tempered posterior; the likelihood counts every force component of every "
        "frame as independent data, so T ≫ 1 is needed: repeat with T·f², f the run's force "
        "recalibration factor, until f ≈ 1 (the default came out of 25 → 350 → 1000 → 1560 → "
        "2400 with the README's 10-minute MAP, f 1.09)",
    )
    parser.add_argument("--seed", type=int, default=0, help="offsets the chains' seeds (replicates)")
    parser.add_argument(
        "--chain-starts",
        type=Path,
        nargs="+",
        help="model files the chains start from, chain i from file i mod n (e.g. a previous run's "
        "ensemble_*.pt: chains in several modes); default: every chain starts at the MAP",
    )
    parser.add_argument("--ensemble-members", type=int, default=4, help="0 skips the deep ensemble")
    parser.add_argument("--ensemble-minutes", type=float, default=2.0)
    parser.add_argument("--reference-frames", type=int, default=4000)
    parser.add_argument(
        "--posterior-from",
        type=Path,
        help="analyse the posterior samples (posterior_k.pt) a previous run saved in this folder "
        "instead of sampling again (same MAP and data settings)",
    )
    parser.add_argument(
        "--reference-md",
        type=Path,
        help="reuse the Amber reference MD a previous run saved (its reference_md.npz) instead of "
        "running it again (replicates with other --seed values)",
    )
    parser.add_argument("--output", type=Path, default=Path("sgmcmc-alanine"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rank, world = init_from_environment()
    args.output.mkdir(parents=True, exist_ok=True)
    report: dict = {"ranks": world}

    start = time.perf_counter()
    data = alanine_dipeptide_md_dataset(args.frames, interval_steps=50, seed=1)
    train_set, val_set = data.split(0.05, seed=0)  # the split train_alanine_mace.py trains on
    test = alanine_dipeptide_md_dataset(args.test_frames, interval_steps=200, seed=2)
    # the recalibration scales are fitted on their own MD run, independent of training and test
    calibration = alanine_dipeptide_md_dataset(args.test_frames, interval_steps=200, seed=5)
    ood = alanine_dipeptide_md_dataset(args.test_frames // 2, interval_steps=200, seed=3, temperature=700.0)
    report["data_seconds"] = time.perf_counter() - start

    map_model = small_mace(0)
    if args.map_model is not None:
        map_model = load_potential(args.map_model).to(DTYPE)
        report["map"] = {"file": str(args.map_model)}
    elif rank == 0:
        result = fit(
            map_model, train_set, val_set, args.map_minutes, args.quiet, energy_minutes=args.energy_minutes
        )
        report["map"] = {"seconds": result.seconds, "epochs": result.epochs, **result.best_metrics}
        print(
            f"MAP: force MAE {result.best_metrics['forces_mae']:.2f} kJ/mol/nm in {result.seconds / 60:.1f} min"
        )
    if world > 1 and args.map_model is None:
        shared = [map_model.state_dict() if rank == 0 else None]
        dist.broadcast_object_list(shared, src=0)
        map_model.load_state_dict(shared[0])
        map_model.avg_num_neighbors.copy_(shared[0]["avg_num_neighbors"])

    val_metrics = evaluate(map_model, batches_of(val_set.structures, 32, map_model, DTYPE))
    nll = energy_force_negative_log_likelihood(
        energy_noise=max(val_metrics["energy_rmse_per_atom"] * 22, 0.1),
        force_noise=val_metrics["forces_rmse"],
    )
    train_batches = batches_of(train_set.structures, 16, map_model, DTYPE)

    def chain(index: int) -> list[dict]:
        if args.chain_starts:
            model = load_potential(args.chain_starts[index % len(args.chain_starts)]).to(DTYPE)
        else:
            model = copy.deepcopy(map_model)
        schedule = CyclicalSchedule(
            args.lr, args.samples_per_chain * args.cycle_steps, args.samples_per_chain
        )
        sampler = PreconditionedSGLD(
            model,
            nll,
            len(train_set),
            prior_std=1.0,
            step_size=schedule,
            temperature=args.posterior_temperature,
            generator=1000 + 100 * args.seed + index,
        )
        return sampler.sample(
            train_batches,
            args.samples_per_chain * args.cycle_steps,
            burn_in=args.cycle_steps - 1,
            thin=args.cycle_steps,
            progress=not args.quiet,
        )

    start = time.perf_counter()
    if args.posterior_from is not None:
        samples = [load_potential(path).state_dict() for path in posterior_files(args.posterior_from)]
    else:
        chains = [rank] if world > 1 else range(args.chains)
        samples = gather_on_root([s for c in chains for s in chain(c)])
    sgmcmc_seconds = time.perf_counter() - start
    if rank != 0:
        return None
    report["seed"] = args.seed
    if args.posterior_from is not None:
        report["sgmcmc"] = {"samples_from": str(args.posterior_from), "samples": len(samples)}
    else:
        report["sgmcmc"] = {
            "chain_starts": [str(p) for p in args.chain_starts or []] or "MAP",
            "chains": max(world, args.chains) if world == 1 else world,
            "samples": len(samples),
            "seconds_per_rank": sgmcmc_seconds,
        }
    posterior = []
    for index, state in enumerate(samples):
        member = copy.deepcopy(map_model)
        member.load_state_dict(state)
        save_potential(member, args.output / f"posterior_{index}.pt")  # for MD per sample, reuse
        posterior.append(member)

    # cost benchmark: seconds per posterior sample vs seconds for an ensemble member to first
    # reach the posterior samples' median validation force MAE
    val_batches = batches_of(val_set.structures, 32, map_model, DTYPE)
    target = float(np.median([evaluate(m, val_batches)["forces_mae"] for m in posterior]))
    report["sgmcmc"].update(validation_force_mae_median=target)
    if args.posterior_from is None:
        report["sgmcmc"]["seconds_per_sample"] = sgmcmc_seconds * world / len(samples)
    start = time.perf_counter()
    ensemble, reached = [], []
    for member in range(args.ensemble_members):
        model = small_mace(100 + member)
        result = fit(
            model, train_set, val_set, args.ensemble_minutes, args.quiet, member + 1,
            args.ensemble_minutes * args.energy_minutes / max(args.map_minutes, 1e-9),
        )  # fmt: skip
        save_potential(model, args.output / f"ensemble_{member}.pt")
        ensemble.append(model)
        times = [row["seconds"] for row in result.history if row["forces_mae"] <= target]
        reached.append(times[0] if times else None)
    report["deep_ensemble"] = {
        "members": len(ensemble),
        "seconds": time.perf_counter() - start,
        "seconds_to_posterior_validation_mae": reached,
    }
    if "seconds_per_sample" in report["sgmcmc"]:
        print(
            f"cost: {report['sgmcmc']['seconds_per_sample']:.0f} s per posterior sample (after the MAP); "
            f"ensemble members reached its validation force MAE {target:.1f} after {reached} s"
        )

    if args.reference_md is not None:
        stored = np.load(args.reference_md)  # plain arrays, no pickles
        frames, amber_energies = stored["frames"], stored["energies"]
        topology = alanine_dipeptide()[0].topology
    else:
        frames, amber_energies, topology = reference_md(args.reference_frames, seed=4)
        np.savez(args.output / "reference_md.npz", frames=frames, energies=amber_energies)
    trajectory = mdtraj.Trajectory(frames, topology)
    torsions = {
        "phi": np.degrees(mdtraj.compute_phi(trajectory)[1][:, 0]),
        "psi": np.degrees(mdtraj.compute_psi(trajectory)[1][:, 0]),
    }
    compared = {"sgmcmc": posterior, "deep_ensemble": ensemble} if ensemble else {"sgmcmc": posterior}
    for name, models in compared.items():
        report[name].update(uncertainty_report(name, models, calibration, test, ood, args.output))
        energies = frame_energies(models, frames, topology)
        for torsion, angles in torsions.items():
            report[name][torsion] = torsion_profile(
                torsion, angles, energies, amber_energies, args.output, name,
                report[name]["energy_recalibration_factor"],
            )  # fmt: skip
        r = report[name]
        inside = ", ".join(
            f"{TORSION_SYMBOLS[t]} {r[t]['bins_inside_simultaneous_band']}/{r[t]['bins']} "
            f"(pointwise {r[t]['bins_inside_band']}; raw σ {r[t]['raw']['bins_inside_simultaneous_band']})"
            for t in torsions
        )
        print(
            f"{name}: test force MAE {r['test_force_mae']:.2f}; coverage 68/95 % raw "
            f"{r['coverage_68_raw']:.2f}/{r['coverage_95_raw']:.2f}, scaled ×{r['recalibration_factor']:.2f} "
            f"{r['coverage_68']:.2f}/{r['coverage_95']:.2f}; σ(700 K)/σ(300 K) {r['sigma_ratio_ood_over_test']:.2f}; "
            f"relative energies 68/95 % raw {r['energy_coverage_68_raw']:.2f}/{r['energy_coverage_95_raw']:.2f}, "
            f"scaled ×{r['energy_recalibration_factor']:.2f} {r['energy_coverage_68']:.2f}/{r['energy_coverage_95']:.2f}; "
            f"bins inside the 95 % simultaneous band (energy σ scaled): {inside}"
        )
    (args.output / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {args.output / 'report.json'}")
    return report


if __name__ == "__main__":
    main()
