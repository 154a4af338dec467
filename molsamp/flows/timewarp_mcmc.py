"""The Timewarp Markov chain: flow proposals of large time steps, accepted by
Metropolis–Hastings so the chain targets exp(−E/kT) exactly (Klein et al., NeurIPS 2023).

The chain lives on (x, v) with target μ(x)·N(v; 0, I). One step: draw v ~ N(0, I) afresh
(a Gibbs step), propose (x̃, ṽ) ~ p_θ(· | x), accept with

    α = min(1, exp(−u(x̃) − |ṽ|²/2) p_θ(x, v | x̃) / [exp(−u(x) − |v|²/2) p_θ(x̃, ṽ | x)]),

u = E/kT. Whatever the flow does, the x-marginal is Boltzmann: a poor flow only lowers α.

K parallel proposals from one state are K sequential steps that happen to start from the
same x (every step redraws v, and a rejected step leaves x in place): the first accepted one
is taken, the rejections before it count as repeats of x, the proposals after it are
discarded (they were drawn from the old x). Still exact MH; the K energies are evaluated in
one batch.

Proposals that flip a chiral centre (e.g. L → D Cα) get u = +∞ and are rejected: the chain
then targets Boltzmann restricted to the starting chirality, which is what MD sees.

``explore=True`` replaces the MH test by an energy cut-off (accept when E(x̃) − E(x) is
below ``energy_cutoff`` kJ/mol). It finds metastable states fast but is **biased**: its
samples are not Boltzmann, and results say so (``biased=True``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from molsamp.flows.boltzmann import soften_energy
from molsamp.flows.coordinates import alpha_carbon_centres, chirality
from molsamp.flows.timewarp import TimewarpFlow, gaussian, train_timewarp
from molsamp.integrators.langevin import LangevinBAOAB
from molsamp.potentials.base import Potential
from molsamp.system import State, System
from molsamp.testing import integrated_autocorrelation_time
from molsamp.units import kT


def log_mh_ratio(
    u: torch.Tensor,
    v: torch.Tensor,
    u_new: torch.Tensor,
    v_new: torch.Tensor,
    log_q_forward: torch.Tensor,
    log_q_reverse: torch.Tensor,
) -> torch.Tensor:
    """(B,) log of the Timewarp MH ratio; −inf wherever anything is non-finite.

    u, u_new : (B,) reduced energies E/kT of x and x̃
    v, v_new : (B, N, 3) auxiliary velocities (current, proposed)
    log_q_forward : (B,) log p_θ(x̃, ṽ | x); log_q_reverse : (B,) log p_θ(x, v | x̃)
    """
    log_target_new = -u_new - 0.5 * v_new.pow(2).sum((1, 2)).to(u_new)
    log_target = -u - 0.5 * v.pow(2).sum((1, 2)).to(u)
    ratio = log_target_new - log_target + log_q_reverse.to(u) - log_q_forward.to(u)
    return torch.where(torch.isfinite(ratio), ratio, torch.full_like(ratio, -math.inf))


@dataclass(frozen=True)
class TimewarpStep:
    """What :meth:`TimewarpMove.apply` returns.

    Attributes
    ----------
    positions : (B, N, 3) nm, after the step
    reduced_energy : (B,) E/kT of ``positions``
    repeats : (B,) int, chain steps spent on the old state (rejections before the first
        accepted proposal, or all K when none was accepted)
    accepted : (B,) bool, whether a proposal was taken (one more chain step)
    """

    positions: torch.Tensor
    reduced_energy: torch.Tensor
    repeats: torch.Tensor
    accepted: torch.Tensor


class TimewarpMove:
    """Timewarp MH move for B walkers, K parallel proposals each.

    Parameters
    ----------
    flow : a trained (or not) :class:`TimewarpFlow`
    system : the molecule (elements, masses)
    potential : the reference potential, kJ/mol
    temperature : K
    n_proposals : K parallel proposals from each state per call
    chiral_centres : (centre, a, b, c) quadruples to keep; default the Cα of ``system.topology``
    reference_positions : (N, 3) or (1, N, 3) nm, whose chirality is kept (the start state)
    explore : biased exploration mode (energy cut-off instead of MH); see the module docstring
    energy_cutoff : kJ/mol, accept E(x̃) − E(x) below this in exploration mode
    batch_size : proposals per flow/energy batch
    """

    def __init__(
        self,
        flow: TimewarpFlow,
        system: System,
        potential: Potential,
        temperature: float,
        *,
        n_proposals: int = 1,
        chiral_centres: Sequence[tuple[int, int, int, int]] | None = None,
        reference_positions: torch.Tensor | None = None,
        explore: bool = False,
        energy_cutoff: float = 300.0,
        batch_size: int = 512,
    ):
        if n_proposals < 1:
            raise ValueError(f"n_proposals must be >= 1, got {n_proposals}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 K, got {temperature}")
        self.flow = flow
        self.system = system
        self.potential = potential
        self.temperature = float(temperature)
        self.n_proposals = int(n_proposals)
        self.explore = bool(explore)
        self.energy_cutoff = float(energy_cutoff)
        self.batch_size = int(batch_size)
        if chiral_centres is None:
            chiral_centres = [] if system.topology is None else alpha_carbon_centres(system.topology)
        self.chiral_centres = [tuple(int(a) for a in c) for c in chiral_centres]
        self.chiral_signs: list[float] = []
        if self.chiral_centres:
            if reference_positions is None:
                raise ValueError(
                    "chiral centres need reference_positions (N, 3) nm whose chirality the chain keeps"
                )
            ref = torch.as_tensor(reference_positions, dtype=torch.float64).reshape(1, system.n_atoms, 3)
            self.chiral_signs = [float(chirality(ref, *c)[0]) for c in self.chiral_centres]

    @property
    def kT(self) -> float:
        return kT(self.temperature)

    def wrong_chirality(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) True where some chiral centre has flipped."""
        wrong = torch.zeros(positions.shape[0], dtype=torch.bool, device=positions.device)
        for centre, sign in zip(self.chiral_centres, self.chiral_signs, strict=True):
            wrong |= chirality(positions, *centre) != sign
        return wrong

    def reduced_energy(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) float64 E/kT; +inf for flipped chirality, non-finite positions or energies."""
        x = positions.detach().to(torch.float64)
        keep = ~self.wrong_chirality(x) & torch.isfinite(x).all(dim=(1, 2))
        u = torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device)
        if keep.any():
            with torch.no_grad():
                energy = self.potential.energy(x[keep]).to(torch.float64) / self.kT
            u[keep] = torch.where(torch.isfinite(energy), energy, torch.full_like(energy, math.inf))
        return u

    def _propose(self, x: torch.Tensor, generator: torch.Generator):
        """For rows x (M, N, 3): v, x̃, ṽ, log q forward, log q reverse, ũ (batched)."""
        parts = []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch_size):
                x0 = x[start : start + self.batch_size]
                v = gaussian(x0.shape, generator, self.flow.dtype, self.flow.device)
                x1, v1, log_q = self.flow.sample(x0, self.system, generator)
                x1 = x1.to(torch.float64)
                u1 = self.reduced_energy(x1)
                if self.explore:
                    log_q_reverse = torch.zeros_like(log_q)
                else:
                    log_q_reverse = self.flow.log_prob(x0, v, x1, self.system)
                parts.append((v, x1, v1, log_q, log_q_reverse, u1))
        return [torch.cat(column) for column in zip(*parts, strict=True)]

    def apply(
        self, positions: torch.Tensor, reduced_energy: torch.Tensor, generator: torch.Generator
    ) -> TimewarpStep:
        """One call: K proposals per walker, first accepted one taken.

        positions : (B, N, 3) nm; reduced_energy : (B,) E/kT of them (from :meth:`reduced_energy`)
        """
        b, k = positions.shape[0], self.n_proposals
        x = positions.to(torch.float64)
        x_rep = x.repeat_interleave(k, 0)
        u_rep = reduced_energy.to(torch.float64).repeat_interleave(k, 0)
        v, x1, v1, log_q, log_q_reverse, u1 = self._propose(x_rep, generator)
        if self.explore:
            accept = torch.isfinite(u1) & ((u1 - u_rep) * self.kT < self.energy_cutoff)
        else:
            log_alpha = log_mh_ratio(u_rep, v, u1, v1, log_q, log_q_reverse)
            uniform = torch.rand(b * k, generator=generator, device=generator.device, dtype=torch.float64)
            uniform = uniform.to(log_alpha.device)
            accept = torch.log(uniform) < log_alpha
        accept = accept.reshape(b, k)
        any_accepted = accept.any(1)
        first = torch.where(any_accepted, accept.int().argmax(1), torch.full((b,), k, device=accept.device))
        chosen = torch.arange(b, device=accept.device) * k + first.clamp(max=k - 1)
        new_positions = torch.where(any_accepted[:, None, None], x1[chosen], x)
        new_u = torch.where(any_accepted, u1[chosen], reduced_energy.to(torch.float64))
        return TimewarpStep(new_positions, new_u, first.cpu(), any_accepted.cpu())


@dataclass(frozen=True)
class TimewarpResult:
    """A Timewarp chain's observables and statistics.

    Attributes
    ----------
    observables : (T, B, K) array: every chain step of every walker (repeats included, Langevin
        steps recorded once per block), cut to the shortest walker's length T
    acceptance_rate : accepted / MH steps (repeats counted as rejected steps)
    proposals_evaluated : flow proposals whose energy was computed (discarded ones included)
    n_energy_evaluations : reference-energy evaluations (proposals + Langevin steps)
    tau : (K,) effective autocorrelation times T·B / ESS, in chain steps
    ess : (K,) effective samples, :func:`multichain_ess` (conservative for stuck walkers)
    wall_s : wall time of the chain, s
    ess_per_second : (K,) ess / wall_s
    state : final State
    biased : True for exploration mode (not Boltzmann samples)
    """

    observables: np.ndarray
    acceptance_rate: float
    proposals_evaluated: int
    n_energy_evaluations: int
    tau: np.ndarray
    ess: np.ndarray
    wall_s: float
    ess_per_second: np.ndarray
    state: State
    biased: bool

    def summary(self) -> dict:
        """JSON-ready numbers (everything but the observables and the state)."""
        return {
            "acceptance_rate": self.acceptance_rate,
            "proposals_evaluated": self.proposals_evaluated,
            "n_energy_evaluations": self.n_energy_evaluations,
            "chain_steps_per_walker": int(self.observables.shape[0]),
            "walkers": int(self.observables.shape[1]),
            "tau_steps": self.tau.tolist(),
            "ess": self.ess.tolist(),
            "wall_s": self.wall_s,
            "ess_per_second": self.ess_per_second.tolist(),
            "biased": self.biased,
        }


def timewarp_mcmc(
    state: State,
    move: TimewarpMove,
    n_iterations: int,
    generator: torch.Generator,
    observe: Callable[[torch.Tensor], torch.Tensor],
    *,
    langevin: LangevinBAOAB | None = None,
    langevin_steps: int = 0,
    time_limit_s: float | None = None,
    callback: Callable[[dict], None] | None = None,
) -> TimewarpResult:
    """Run ``n_iterations`` Timewarp moves (each K parallel proposals per walker), each
    optionally followed by ``langevin_steps`` Langevin steps, recording ``observe(positions)``
    (B, K) at every chain step.

    Parameters
    ----------
    state : B walkers (positions nm; velocities nm/ps are used only by Langevin)
    generator : seeded torch.Generator for v, proposals and accept draws
    langevin : integrator at the move's temperature, run through
        :func:`molsamp.integrators.simulate` (OpenMM integrates when it can)
    time_limit_s : stop after this many wall seconds (at least 4 iterations run)
    callback : gets a dict (iteration, acceptance so far, wall_s) every 50 iterations
    """
    from molsamp.integrators.simulate import simulate

    if n_iterations < 4:
        raise ValueError(f"n_iterations must be >= 4 (autocorrelation needs a chain), got {n_iterations}")
    if langevin_steps and langevin is None:
        raise ValueError("langevin_steps > 0 needs a LangevinBAOAB integrator (langevin=...)")
    start = time.perf_counter()
    positions = state.positions.to(torch.float64)
    u = move.reduced_energy(positions)
    if not torch.isfinite(u).all():
        raise ValueError(
            "a starting state has a non-finite energy or the wrong chirality; start from MD frames"
        )
    n_walkers = positions.shape[0]
    current = observe(positions).detach().cpu().double().numpy()
    records: list[list[np.ndarray]] = [[] for _ in range(n_walkers)]
    accepted = mh_steps = evaluations = proposals = 0
    for iteration in range(n_iterations):
        step = move.apply(positions, u, generator)
        proposals += n_walkers * move.n_proposals
        evaluations += n_walkers * move.n_proposals
        positions, u = step.positions, step.reduced_energy
        new = observe(positions).detach().cpu().double().numpy()
        for walker in range(n_walkers):
            repeats = int(step.repeats[walker])
            if repeats:
                records[walker].append(np.repeat(current[walker][None], repeats, 0))
            if step.accepted[walker]:
                records[walker].append(new[walker][None])
        mh_steps += int(step.repeats.sum() + step.accepted.sum())
        accepted += int(step.accepted.sum())
        current = new
        if langevin_steps:
            state = simulate(
                langevin, state.replace(positions=positions), langevin_steps, progress=False, guard=None
            )
            positions = state.positions.to(torch.float64)
            u = move.reduced_energy(positions)
            evaluations += n_walkers * (langevin_steps + 1)
            current = observe(positions).detach().cpu().double().numpy()
            for walker in range(n_walkers):
                records[walker].append(current[walker][None])
        elapsed = time.perf_counter() - start
        if callback is not None and iteration % 50 == 0:
            callback({"iteration": iteration, "acceptance": accepted / max(mh_steps, 1), "wall_s": elapsed})
        if time_limit_s is not None and elapsed > time_limit_s and iteration >= 3:
            break
    wall_s = time.perf_counter() - start
    chains = [np.concatenate(r) if r else current[w][None] for w, r in enumerate(records)]
    length = min(len(c) for c in chains)
    observables = np.stack([c[:length] for c in chains], 1)
    ess = np.array([multichain_ess(observables[:, :, j]) for j in range(observables.shape[2])])
    with np.errstate(divide="ignore"):
        tau = observables.shape[0] * observables.shape[1] / ess
    return TimewarpResult(
        observables=observables,
        acceptance_rate=accepted / max(mh_steps, 1),
        proposals_evaluated=proposals,
        n_energy_evaluations=evaluations,
        tau=tau,
        ess=ess,
        wall_s=wall_s,
        ess_per_second=ess / wall_s,
        state=state.replace(positions=positions.to(state.positions)),
        biased=move.explore,
    )


def multichain_ess(series: np.ndarray) -> float:
    """Effective samples of (T, B) walkers: T·B/τ_int (autocorrelation about each walker's own
    mean), replaced by B·Var(all)/Var(walker means) (between-walker spread) when that is less
    than half of it.

    The first alone counts walkers that stay near their (different) starting points as T/τ
    samples each; the second catches that, provided the walkers started independently (e.g.
    from MD frames). Walkers that never moved give 0.
    """
    x = np.asarray(series, dtype=np.float64)
    t, b = x.shape
    if t < 4 or np.ptp(x, axis=0).max() == 0:  # never moved: no information beyond the start
        return 0.0
    ess = t * b / integrated_autocorrelation_time(x)
    if b > 1:
        spread = x.mean(0).var(ddof=1)
        between = b * x.var() / spread if spread > 0 else math.inf
        if between < 0.5 * ess:  # closer values are within its noise (±40 % for 16 walkers)
            ess = between
    return float(ess)


def acceptance_loss(
    move: TimewarpMove,
    x0: torch.Tensor,
    generator: torch.Generator,
    entropy_weight: float = 0.01,
    energy_high: float = 1e3,
) -> tuple[torch.Tensor, dict]:
    """E[−min(0, log α)] + λ_H·E[log p_θ(x̃, ṽ | x)] over proposals from data states x0
    (B, N, 3): the acceptance term of Timewarp's fine-tuning with an entropy bonus (the second
    term keeps the flow from shrinking its steps to win acceptance). Energies are softened
    above ``energy_high`` kT; chirality flips are left out of the mean."""
    flow = move.flow
    x1, v1, log_q = flow.sample(x0, move.system, generator)
    v = gaussian(x0.shape, generator, flow.dtype, flow.device)
    with torch.no_grad():
        u0 = move.reduced_energy(x0)
    x1_64 = x1.to(torch.float64)
    x1_64.register_hook(lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
    keep = ~move.wrong_chirality(x1_64.detach())
    u1 = move.potential.energy(x1_64) / move.kT
    u1 = soften_energy(u1, energy_high)
    log_q_reverse = flow.log_prob(x0, v, x1, move.system)
    log_alpha = (-u1 - 0.5 * v1.pow(2).sum((1, 2)).double()) - (-u0 - 0.5 * v.pow(2).sum((1, 2)).double())
    log_alpha = log_alpha + (log_q_reverse - log_q).double()
    terms = -log_alpha.clamp(max=0.0) + entropy_weight * log_q.double()
    loss = terms[keep].mean() if keep.any() else terms.sum() * 0.0
    with torch.no_grad():
        alpha = torch.exp(log_alpha.clamp(max=0.0))[keep]
    return loss, {"mean_acceptance": float(alpha.mean()) if keep.any() else 0.0}


def fine_tune_acceptance(
    move: TimewarpMove,
    x0: torch.Tensor,
    x1: torch.Tensor,
    generator: torch.Generator,
    *,
    n_steps: int,
    acceptance_weight: float = 1.0,
    entropy_weight: float = 0.01,
    batch_size: int = 32,
    learning_rate: float = 3e-4,
    clip_norm: float = 10.0,
    time_limit_s: float | None = None,
    log_every: int = 20,
    callback: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Adam on NLL(pairs) + w·:func:`acceptance_loss` (the likelihood anchors the flow), by
    :func:`molsamp.flows.timewarp.train_timewarp`; rows carry "acceptance_loss".

    On alanine dipeptide 2 minutes of this after 3 minutes of pure likelihood took the median
    log α of proposals from −3100 to −7 (the energy gradient fixes bond lengths that the
    likelihood alone learns slowly) — partly by shrinking the moves; raise ``entropy_weight``
    to resist that."""
    return train_timewarp(
        move.flow,
        move.system,
        x0,
        x1,
        generator,
        n_steps=n_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        clip_norm=clip_norm,
        time_limit_s=time_limit_s,
        log_every=log_every,
        callback=callback,
        auxiliary=(
            "acceptance_loss",
            acceptance_weight,
            lambda a, g: acceptance_loss(move, a, g, entropy_weight),
        ),
    )


__all__ = [
    "TimewarpMove",
    "TimewarpResult",
    "TimewarpStep",
    "acceptance_loss",
    "fine_tune_acceptance",
    "log_mh_ratio",
    "multichain_ess",
    "timewarp_mcmc",
]
