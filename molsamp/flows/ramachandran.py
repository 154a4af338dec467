"""φ/ψ analysis of flow samples against MD: the report ``molsamp sample``/``demo`` and the
alanine example write (ESS, reweighted free energies, JS/KL with a noise floor, basin ΔF)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from molsamp.flows.coordinates import dihedral
from molsamp.flows.reweighting import (
    ALANINE_BASINS,
    basin_free_energy_difference,
    effective_counts,
    ess_fraction,
    half_vs_half_divergences,
    js_divergence,
    kish_ess,
    kl_divergence,
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


def md_frames(
    solvent: str,
    temperature: float,
    nanoseconds: float,
    interval_ps: float = 1.0,
    seed: int = 0,
    equilibration_ps: float = 20.0,
) -> torch.Tensor:
    """(S, 22, 3) float64 alanine-dipeptide frames (nm) from Langevin MD (1 fs, γ = 1/ps),
    integrated by OpenMM through :func:`molsamp.integrators.simulate`."""
    from molsamp.integrators import LangevinBAOAB, simulate
    from molsamp.systems import alanine_dipeptide

    system, state, potential = alanine_dipeptide(solvent, temperature=temperature, seed=seed)
    langevin = LangevinBAOAB(potential, system.masses, 0.001, temperature, 1.0, seed)
    state = simulate(langevin, state, int(round(equilibration_ps * 1000)), progress=False)
    interval = max(1, int(round(interval_ps * 1000)))
    frames = []
    for _ in range(max(1, int(nanoseconds * 1000 / interval_ps))):
        state = simulate(langevin, state, interval, progress=False, guard=None)
        frames.append(state.positions[0].clone())
    return torch.stack(frames)


def _basin_fractions(angles: np.ndarray, weights: np.ndarray | None) -> dict[str, float]:
    w = np.full(len(angles), 1.0 / len(angles)) if weights is None else weights
    return {
        name: float(w[basin.contains(angles[:, 0], angles[:, 1])].sum())
        for name, basin in ALANINE_BASINS.items()
    }


def compare_to_reference(
    samples: FlowSamples,
    reference_positions: torch.Tensor,
    topology: mdtraj.Topology,
    temperature: float,
    generator: torch.Generator,
    output: Path | None = None,
    bins: int = 64,
    basins: tuple[str, str] = ("beta", "alphaR"),
) -> dict:
    """ESS, JS/KL (64×64, pseudocount 1) of reweighted flow φ/ψ vs reference MD, the reference's
    half-vs-half floor, ΔF between ``basins`` (b − a, kJ/mol and kT) for both, and plots."""
    from molsamp.analysis import plot_ramachandran
    from molsamp.flows.reweighting import normalized_weights
    from molsamp.units import kT

    flow_angles = phi_psi(samples.positions, topology)
    reference_angles = phi_psi(reference_positions, topology)
    log_w = samples.log_weights
    weights = normalized_weights(log_w)
    flow_counts = effective_counts(flow_angles, log_w, bins)
    reference_counts = effective_counts(reference_angles, None, bins)
    unweighted_counts = effective_counts(flow_angles, None, bins)
    a, b = (ALANINE_BASINS[name] for name in basins)
    # block bootstrap for the correlated MD reference: blocks of ~5 autocorrelation times
    indicator = b.contains(reference_angles[:, 0], reference_angles[:, 1]).astype(float)
    tau = integrated_autocorrelation_time(indicator) if indicator.std() > 0 else 1.0
    block = int(min(max(1, 5 * tau), len(indicator) // 10))
    flow_df = basin_free_energy_difference(
        a.contains(*flow_angles.T), b.contains(*flow_angles.T), temperature, generator, log_weights=log_w
    )
    reference_df = basin_free_energy_difference(
        a.contains(*reference_angles.T),
        b.contains(*reference_angles.T),
        temperature,
        generator,
        block_size=block,
    )
    beta_inverse = kT(temperature)
    results = {
        "n_samples": int(len(log_w)),
        "kish_ess": kish_ess(log_w),
        "ess_percent": 100 * ess_fraction(log_w),
        "excluded": {
            "invalid_geometry": samples.n_invalid_geometry,
            "wrong_chirality": samples.n_wrong_chirality,
            "nonfinite_energy": samples.n_nonfinite_energy,
        },
        "js_reweighted_vs_reference": js_divergence(flow_counts, reference_counts, 1.0),
        "kl_reference_vs_reweighted": kl_divergence(reference_counts, flow_counts, 1.0),
        "js_unweighted_vs_reference": js_divergence(unweighted_counts, reference_counts, 1.0),
        "reference_half_vs_half": half_vs_half_divergences(reference_angles, bins),
        "delta_f_name": f"F({basins[1]}) - F({basins[0]})",
        "delta_f_flow_kJ_per_mol": [flow_df.value, flow_df.error],
        "delta_f_reference_kJ_per_mol": [reference_df.value, reference_df.error],
        "delta_f_flow_kT": [flow_df.value / beta_inverse, flow_df.error / beta_inverse],
        "delta_f_reference_kT": [reference_df.value / beta_inverse, reference_df.error / beta_inverse],
        "reference_block_frames": block,
        "reference_tau_frames": tau,
        "basin_fractions_flow_reweighted": _basin_fractions(flow_angles, weights),
        "basin_fractions_reference": _basin_fractions(reference_angles, None),
    }
    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        results["plots"] = {
            "reference": str(
                plot_ramachandran(
                    *reference_angles.T, temperature, output / "ramachandran_md.png", title="MD reference"
                )
            ),
            "flow_reweighted": str(
                plot_ramachandran(
                    *flow_angles.T,
                    temperature,
                    output / "ramachandran_flow.png",
                    title="Flow, reweighted",
                    weights=weights,
                )
            ),
        }
    return results
