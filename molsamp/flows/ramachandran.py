"""φ/ψ analysis of flow samples against MD: the report ``molsamp sample``/``demo`` and the
alanine example write (ESS, reweighted free energies, JS/KL with a noise floor, basin ΔF)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from molsamp.flows.coordinates import dihedral
from molsamp.flows.reweighting import (
    ALANINE_BASINS,
    basin_free_energy_difference,
    batch_ess_fractions,
    effective_counts,
    ess_fraction,
    half_vs_half_divergences,
    js_divergence,
    kish_ess,
    kl_divergence,
    matched_ess_js_floor,
    pareto_k,
)
from molsamp.testing import integrated_autocorrelation_time

if TYPE_CHECKING:
    import mdtraj

    from molsamp.flows.boltzmann import FlowSamples


def backbone_indices(topology: mdtraj.Topology) -> tuple[list[int], list[int]]:
    """Atom quadruples of the first φ and ψ (mdtraj's definitions)."""
    import mdtraj

    trajectory = mdtraj.Trajectory(np.zeros((1, topology.n_atoms, 3)), topology)
    phi, _ = mdtraj.compute_phi(trajectory)
    psi, _ = mdtraj.compute_psi(trajectory)
    if len(phi) == 0 or len(psi) == 0:
        raise ValueError("the topology has no backbone φ/ψ (needs a capped amino acid or a peptide)")
    return [int(a) for a in phi[0]], [int(a) for a in psi[0]]


def phi_psi(positions: torch.Tensor, topology: mdtraj.Topology) -> np.ndarray:
    """(S, 2) φ, ψ in radians of positions (S, N, 3) nm."""
    phi, psi = backbone_indices(topology)
    x = torch.as_tensor(positions, dtype=torch.float64)
    angles = [dihedral(*(x[:, a] for a in quadruple)) for quadruple in (phi, psi)]
    return torch.stack(angles, 1).numpy()


def with_phi_psi(
    positions: torch.Tensor, topology: mdtraj.Topology, phi_deg: float, psi_deg: float
) -> torch.Tensor:
    """(N, 3) nm positions with the first φ and ψ set to the given angles (degrees).

    The atoms on the far side of each central bond (N–Cα for φ, Cα–C for ψ) rotate rigidly
    about it, so bond lengths, angles and every other torsion are kept: a starting structure
    in another basin (e.g. αL, φ ≈ +60°) for MD.
    """
    phi, psi = backbone_indices(topology)
    neighbours: dict[int, set[int]] = {atom.index: set() for atom in topology.atoms}
    for a, b in topology.bonds:
        neighbours[a.index].add(b.index)
        neighbours[b.index].add(a.index)
    x = torch.as_tensor(positions, dtype=torch.float64).clone()
    if x.shape != (topology.n_atoms, 3):
        raise ValueError(f"positions must be ({topology.n_atoms}, 3) nm, got {tuple(x.shape)}")
    for quadruple, target in ((phi, phi_deg), (psi, psi_deg)):
        _, j, k, _ = quadruple
        moving, frontier = {k}, [k]  # the side of bond j–k that holds k
        while frontier:
            for neighbour in neighbours[frontier.pop()] - moving - {j}:
                moving.add(neighbour)
                frontier.append(neighbour)
        if j in moving:
            raise ValueError(f"bond {j}–{k} is in a ring; its torsion cannot be set by rotation")
        current = dihedral(*(x[a] for a in quadruple))
        angle = math.radians(target) - current  # a rotation by angle ± 2π is the same
        axis = (x[k] - x[j]) / torch.linalg.vector_norm(x[k] - x[j])
        index = torch.tensor(sorted(moving))
        relative = x[index] - x[k]
        # Rodrigues' rotation by `angle` about `axis` through atom k
        rotated = (
            relative * torch.cos(angle)
            + torch.linalg.cross(axis.expand_as(relative), relative) * torch.sin(angle)
            + axis * (relative @ axis)[:, None] * (1 - torch.cos(angle))
        )
        x[index] = x[k] + rotated
    return x


def md_frames(
    solvent: str,
    temperature: float,
    nanoseconds: float,
    interval_ps: float = 1.0,
    seed: int = 0,
    equilibration_ps: float = 20.0,
    engine: str = "auto",
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """(S, 22, 3) float64 alanine-dipeptide frames (nm) from Langevin MD (1 fs, γ = 1/ps),
    integrated through :func:`molsamp.integrators.simulate` (``engine="auto"``: by OpenMM;
    "torch": molsamp's own BAOAB loop). ``start``: (22, 3) nm starting positions (e.g. a
    frame in another basin) instead of the shipped structure."""
    from molsamp.integrators import LangevinBAOAB, simulate
    from molsamp.systems import alanine_dipeptide

    system, state, potential = alanine_dipeptide(solvent, temperature=temperature, seed=seed)
    if start is not None:
        if start.shape != state.positions.shape[1:]:
            raise ValueError(f"start must be ({system.n_atoms}, 3) positions in nm, got {tuple(start.shape)}")
        state = state.replace(positions=start.to(state.positions).expand_as(state.positions).clone())
    langevin = LangevinBAOAB(potential, system.masses, 0.001, temperature, 1.0, seed)
    state = simulate(langevin, state, int(round(equilibration_ps * 1000)), progress=False, engine=engine)
    interval = max(1, int(round(interval_ps * 1000)))
    frames = []
    for _ in range(max(1, int(nanoseconds * 1000 / interval_ps))):
        state = simulate(langevin, state, interval, progress=False, guard=None, engine=engine)
        frames.append(state.positions[0].clone())
    return torch.stack(frames)


def collective_variables(angles: np.ndarray) -> np.ndarray:
    """(..., 3): αR indicator, cos φ, cos ψ of (..., 2) φ/ψ angles (radians) — the CVs whose
    slowest one sets the effective sample size of alanine-dipeptide samplers."""
    alpha = ALANINE_BASINS["alphaR"].contains(angles[..., 0].ravel(), angles[..., 1].ravel())
    alpha = alpha.reshape(angles.shape[:-1]).astype(float)
    return np.stack([alpha, np.cos(angles[..., 0]), np.cos(angles[..., 1])], -1)


def chain_ess(cvs: np.ndarray) -> tuple[float, list[float]]:
    """cvs (T, B, K) → (ESS of the slowest CV, τ of each CV in records)."""
    taus = [integrated_autocorrelation_time(cvs[:, :, k]) for k in range(cvs.shape[2])]
    return cvs.shape[0] * cvs.shape[1] / max(taus), taus


def _basin_fractions(angles: np.ndarray, weights: np.ndarray | None) -> dict[str, float]:
    w = np.full(len(angles), 1.0 / len(angles)) if weights is None else weights
    return {
        name: float(w[basin.contains(angles[:, 0], angles[:, 1])].sum())
        for name, basin in ALANINE_BASINS.items()
    }


def _delta_f(
    angles: np.ndarray,
    pair: tuple[str, str],
    temperature: float,
    generator: torch.Generator,
    log_weights: torch.Tensor | None,
    block: int,
) -> list[float] | None:
    a, b = (ALANINE_BASINS[name] for name in pair)
    try:
        estimate = basin_free_energy_difference(
            a.contains(*angles.T),
            b.contains(*angles.T),
            temperature,
            generator,
            log_weights=log_weights,
            block_size=block,
        )
    except ValueError:  # a basin holds no sample: ΔF is not measured
        return None
    return [estimate.value, estimate.error]


def compare_to_reference(
    samples: FlowSamples,
    reference_positions: torch.Tensor,
    topology: mdtraj.Topology,
    temperature: float,
    generator: torch.Generator,
    output: Path | None = None,
    bins: int = 64,
    basin_pairs: tuple[tuple[str, str], ...] = (("beta", "alphaR"),),
) -> dict:
    """Reweighted flow φ/ψ against reference MD.

    Reports the Kish ESS, JS and KL(reference ‖ flow) of ``bins``² histograms (pseudocount 1,
    weighted histograms as effective counts), the reference's half-vs-half floor, and for each
    (a, b) in ``basin_pairs`` ΔF = F_b − F_a in kJ/mol with bootstrap errors (block bootstrap
    of ~5 τ for the MD chain); None where a basin holds no sample. With ``output`` it writes a
    side-by-side PNG of both free-energy maps.
    """
    from molsamp.flows.reweighting import normalized_weights

    flow_angles = phi_psi(samples.positions, topology)
    reference_angles = phi_psi(reference_positions, topology)
    log_w = samples.log_weights
    flow_counts = effective_counts(flow_angles, log_w, bins)
    reference_counts = effective_counts(reference_angles, None, bins)
    unweighted_counts = effective_counts(flow_angles, None, bins)
    alpha = ALANINE_BASINS["alphaR"].contains(*reference_angles.T).astype(float)
    tau = integrated_autocorrelation_time(alpha) if alpha.std() > 0 else 1.0
    block = int(min(max(1, 5 * tau), max(1, len(alpha) // 10)))
    results = {
        "n_samples": int(len(log_w)),
        "kish_ess": kish_ess(log_w),
        "ess_percent": 100 * ess_fraction(log_w),
        # one draw's ESS hinges on a few rare heavy weights: its spread over 5 independent
        # batches, and the tail's Pareto k̂ (< 0.5: finite weight variance)
        "ess_percent_batches": (100 * batch_ess_fractions(log_w, 5)).tolist() if len(log_w) >= 5 else None,
        "pareto_k": pareto_k(log_w) if int(torch.isfinite(log_w).sum()) >= 25 else None,
        "excluded": {
            "invalid_geometry": samples.n_invalid_geometry,
            "wrong_chirality": samples.n_wrong_chirality,
            "nonfinite_energy": samples.n_nonfinite_energy,
        },
        "js_reweighted_vs_reference": js_divergence(flow_counts, reference_counts, 1.0),
        "kl_reference_vs_reweighted": kl_divergence(reference_counts, flow_counts, 1.0),
        "js_unweighted_vs_reference": js_divergence(unweighted_counts, reference_counts, 1.0),
        "reference_half_vs_half": half_vs_half_divergences(reference_angles, bins),
        "reference_alphaR_tau_frames": tau,
        "reference_block_frames": block,
        "delta_f_kJ_per_mol": {
            f"F({b}) - F({a})": {
                "flow": _delta_f(flow_angles, (a, b), temperature, generator, log_w, 1),
                "reference": _delta_f(reference_angles, (a, b), temperature, generator, None, block),
            }
            for a, b in basin_pairs
        },
        "basin_fractions_flow_reweighted": _basin_fractions(flow_angles, normalized_weights(log_w)),
        "basin_fractions_reference": _basin_fractions(reference_angles, None),
    }
    if output is not None:
        path = Path(output) / "ramachandran_flow_vs_md.png"
        results["plot"] = str(
            plot_side_by_side(reference_angles, flow_angles, normalized_weights(log_w), temperature, path)
        )
    return results


def plot_side_by_side(
    reference_angles: np.ndarray,
    flow_angles: np.ndarray,
    weights: np.ndarray | None,
    temperature: float,
    path: Path,
    titles: tuple[str, str] = ("MD", "Boltzmann generator, reweighted"),
) -> Path:
    """PNG with F(φ, ψ) (kJ/mol) of the MD reference beside the (weighted) model samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from molsamp.analysis import free_energy_2d

    figure, axes = plt.subplots(1, 2, figsize=(10, 4.4), dpi=110, sharey=True)
    panels = [(reference_angles, None, titles[0]), (flow_angles, weights, titles[1])]
    for ax, (angles, w, title) in zip(axes, panels, strict=True):
        free_energy, edges = free_energy_2d(angles[:, 0], angles[:, 1], temperature, weights=w)
        degrees = np.degrees(edges)
        mesh = ax.pcolormesh(degrees, degrees, free_energy.T, cmap="viridis", vmax=30.0)
        ax.set(xlabel="φ (degrees)", title=title, xlim=(-180, 180), ylim=(-180, 180))
    axes[0].set_ylabel("ψ (degrees)")
    figure.colorbar(mesh, ax=axes, label="free energy (kJ/mol)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def compare_chain_to_reference(
    chain_angles: np.ndarray,
    reference_angles: np.ndarray,
    temperature: float,
    generator: torch.Generator,
    output: Path | None = None,
    bins: int = 64,
    basin_pairs: tuple[tuple[str, str], ...] = (("beta", "alphaR"),),
    title: str = "MCMC chain",
) -> dict:
    """φ/ψ of an (unweighted, correlated) MCMC chain against reference MD.

    chain_angles : (T, B, 2) radians, T chain steps of B walkers; reference_angles : (S, 2).
    Reports JS and KL(reference ‖ chain) of ``bins``² histograms (pseudocount 1, the chain's
    histogram as effective counts: probabilities × its ESS), the reference's half-vs-half
    floor, basin fractions, and ΔF = F_b − F_a (kJ/mol) per pair with moving-block bootstrap
    errors (chain: blocks of ~5 effective τ from the conservative multi-walker ESS of the
    slowest CV, each walker's chain contiguous; reference: ~5 τ of its αR indicator); None
    where a basin holds no sample. With ``output``, a side-by-side PNG.
    """
    from molsamp.flows.timewarp_mcmc import multichain_ess

    n_steps, n_walkers = chain_angles.shape[:2]
    flat = np.ascontiguousarray(np.swapaxes(chain_angles, 0, 1)).reshape(-1, 2)
    chain_cvs = collective_variables(chain_angles)
    chain_ess_value = min(multichain_ess(chain_cvs[:, :, k]) for k in range(chain_cvs.shape[2]))
    probabilities = effective_counts(flat, None, bins) / len(flat)
    chain_counts = probabilities * max(chain_ess_value, 1.0)
    reference_counts = effective_counts(reference_angles, None, bins)
    _, reference_taus = chain_ess(collective_variables(reference_angles)[:, None])
    # blocks of ~5 effective autocorrelation times, at most one walker's whole chain (walkers
    # that stay near their start are then resampled as units)
    tau_effective = n_steps * n_walkers / chain_ess_value if chain_ess_value > 0 else n_steps
    chain_block = int(min(n_steps, max(1, 5 * tau_effective)))
    alpha = ALANINE_BASINS["alphaR"].contains(*reference_angles.T).astype(float)
    tau = integrated_autocorrelation_time(alpha) if alpha.std() > 0 and len(alpha) >= 4 else 1.0
    reference_block = int(min(max(1, 5 * tau), max(1, len(alpha) // 10)))
    results = {
        "chain_samples": int(len(flat)),
        "chain_slowest_cv_ess": float(chain_ess_value),
        "js_chain_vs_reference": js_divergence(chain_counts, reference_counts, 1.0),
        "kl_reference_vs_chain": kl_divergence(reference_counts, chain_counts, 1.0),
        "reference_half_vs_half": half_vs_half_divergences(reference_angles, bins),
        # what an exact sampler with the chain's ESS scores against the same reference
        "reference_matched_floor": matched_ess_js_floor(
            reference_angles,
            max(chain_ess_value, 1.0),
            max([t for t in reference_taus if math.isfinite(t)], default=1.0),
            bins,
        ),
        "chain_block_steps": chain_block,
        "reference_block_frames": reference_block,
        "delta_f_kJ_per_mol": {
            f"F({b}) - F({a})": {
                "chain": _delta_f(flat, (a, b), temperature, generator, None, chain_block),
                "reference": _delta_f(
                    reference_angles, (a, b), temperature, generator, None, reference_block
                ),
            }
            for a, b in basin_pairs
        },
        "basin_fractions_chain": _basin_fractions(flat, None),
        "basin_fractions_reference": _basin_fractions(reference_angles, None),
    }
    if output is not None:
        path = Path(output) / "ramachandran_chain_vs_md.png"
        results["plot"] = str(
            plot_side_by_side(reference_angles, flat, None, temperature, path, ("MD", title))
        )
    return results
