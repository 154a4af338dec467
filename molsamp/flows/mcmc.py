"""Flow-MCMC: independence Metropolis–Hastings with flow proposals, optionally alternated
with Langevin MD, for B walkers at once.

A proposal x' ~ q replaces x with probability min(1, w(x')/w(x)), w = exp(−u)/q
(Hastings, Biometrika 1970; with flows: Nicoli et al., PRE 2020; Gabrié, Rotskoff &
Vanden-Eijnden, PNAS 2022, who also alternate it with local Langevin moves). The chain is
exact for p ∝ exp(−u) whatever q is, as long as q covers p; Langevin moves (BAOAB, exact up to
its O(Δt²) configurational error) help where q is poor. Samples with −inf weight (clashes,
non-finite energies, wrong chirality) are never accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from molsamp.integrators.langevin import LangevinBAOAB
from molsamp.system import State
from molsamp.testing import integrated_autocorrelation_time

Propose = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""n, generator → positions (n, N, 3) nm and their proposal log density (n,)."""


@dataclass(frozen=True)
class FlowMCMCResult:
    """Chains of observables and the sampler's statistics.

    Attributes
    ----------
    observables : (T, B, K) array, the observables of every walker after every iteration
    acceptance_rate : accepted / proposed flow moves
    n_energy_evaluations : target-energy (and force) evaluations spent, Langevin steps included
    tau : (K,) integrated autocorrelation times in iterations (walkers averaged)
    ess : (K,) effective samples T·B / τ per observable
    state : the final State (positions, velocities)
    """

    observables: np.ndarray
    acceptance_rate: float
    n_energy_evaluations: int
    tau: np.ndarray
    ess: np.ndarray
    state: State


class IndependenceMetropolis:
    """One flow proposal per walker, accepted with min(1, w'/w).

    Parameters
    ----------
    propose : draws positions and log q (e.g. :meth:`BoltzmannGenerator.propose`)
    log_proposal : positions (B, N, 3) → log q (B,), the same density as ``propose`` reports
    reduced_energy : positions → u = E/kT (B,); +inf or NaN mean "excluded"
    """

    def __init__(
        self,
        propose: Propose,
        log_proposal: Callable[[torch.Tensor], torch.Tensor],
        reduced_energy: Callable[[torch.Tensor], torch.Tensor],
    ):
        self.propose = propose
        self.log_proposal = log_proposal
        self.reduced_energy = reduced_energy

    def log_weight(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) log w = −u − log q with −inf wherever anything is non-finite."""
        with torch.no_grad():
            log_w = (-self.reduced_energy(positions) - self.log_proposal(positions)).double()
        return torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -math.inf))

    def apply(
        self, positions: torch.Tensor, log_w: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One MH step for every walker: new positions (B, N, 3), new log w (B,), accepted (B,) bool."""
        with torch.no_grad():
            proposal, log_q = self.propose(positions.shape[0], generator)
            proposal = proposal.to(positions)
            new_log_w = (-self.reduced_energy(proposal) - log_q.to(positions.dtype)).double()
        new_log_w = torch.where(torch.isfinite(new_log_w), new_log_w, torch.full_like(new_log_w, -math.inf))
        uniform = torch.rand(
            positions.shape[0], generator=generator, dtype=torch.float64, device=generator.device
        )
        log_ratio = torch.where(
            torch.isneginf(new_log_w),
            torch.full_like(new_log_w, -math.inf),
            torch.where(torch.isneginf(log_w), torch.zeros_like(new_log_w), new_log_w - log_w),
        )
        # decided where the weights live: no copy to the host per step
        accept = torch.log(uniform).to(log_ratio.device) < log_ratio
        positions = torch.where(accept.to(positions.device)[:, None, None], proposal, positions)
        log_w = torch.where(accept.to(log_w.device), new_log_w, log_w)
        return positions, log_w, accept


def flow_mcmc(
    state: State,
    move: IndependenceMetropolis,
    n_iterations: int,
    generator: torch.Generator,
    observe: Callable[[torch.Tensor], torch.Tensor],
    *,
    langevin: LangevinBAOAB | None = None,
    langevin_steps: int = 0,
) -> FlowMCMCResult:
    """Alternate a flow MH step with ``langevin_steps`` Langevin steps, ``n_iterations`` times.

    Parameters
    ----------
    state : B walkers (positions nm, velocities nm/ps)
    move : the flow proposal move
    generator : seeded torch.Generator for proposals and accept/reject draws (the Langevin
        integrator has its own)
    observe : positions (B, N, 3) → (B, K) observables recorded every iteration
    langevin : integrator at the target's temperature (optional); run through
        :func:`molsamp.integrators.simulate`, so OpenMM integrates when it can
    langevin_steps : MD steps per iteration (0: pure flow-MCMC)
    """
    from molsamp.integrators.simulate import simulate

    if n_iterations < 4:
        raise ValueError(f"n_iterations must be >= 4 (autocorrelation needs a chain), got {n_iterations}")
    if langevin_steps and langevin is None:
        raise ValueError("langevin_steps > 0 needs a LangevinBAOAB integrator (langevin=...)")
    positions = state.positions
    log_w = move.log_weight(positions)
    evaluations = positions.shape[0]
    accepted = torch.zeros((), dtype=torch.int64, device=log_w.device)
    records = []  # kept on the device and copied once at the end (no host sync per iteration)
    for _ in range(n_iterations):
        positions, log_w, accept = move.apply(positions, log_w, generator)
        accepted += accept.sum()
        evaluations += positions.shape[0]
        if langevin_steps:
            state = simulate(
                langevin, state.replace(positions=positions), langevin_steps, progress=False, guard=None
            )
            positions = state.positions
            log_w = move.log_weight(positions)
            evaluations += positions.shape[0] * (langevin_steps + 1)
        records.append(observe(positions).detach())
    observables = torch.stack(records).cpu().double().numpy()
    tau = np.array(
        [integrated_autocorrelation_time(observables[:, :, k]) for k in range(observables.shape[2])]
    )
    return FlowMCMCResult(
        observables=observables,
        acceptance_rate=int(accepted) / (n_iterations * positions.shape[0]),
        n_energy_evaluations=evaluations,
        tau=tau,
        ess=observables.shape[0] * observables.shape[1] / tau,
        state=state.replace(positions=positions),
    )
