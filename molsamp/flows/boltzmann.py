"""Boltzmann generators: a flow in internal coordinates, reweighted to exp(−E/kT).

Noé, Olsson, Köhler & Wu, Science 2019. The flow q is trained by maximum likelihood on MD
frames, by reverse KL E_q[u + log q] on the energy, or both; samples carry log importance
weights −u(x) − log q(x), so reweighted averages are exact in the limit of many samples.

Safety: a sample with an improper geometry (bond ≤ 0, angle outside (0, π)), a non-finite
energy or the wrong Cα chirality gets log weight −inf (weight 0), never NaN, and is counted
in :class:`FlowSamples`. In training the energy is softened above ``energy_high`` (kT units)
to u_high + log(1 + u − u_high), and non-finite energy gradients are zeroed.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import molsamp
from molsamp.flows.coordinates import (
    InternalCoordinates,
    NormalizedInternal,
    ZMatrix,
    alpha_carbon_centres,
    chirality,
)
from molsamp.flows.flow import CouplingSplineFlow, Flow
from molsamp.flows.reweighting import ess_fraction, log_importance_weights
from molsamp.potentials.base import Potential
from molsamp.potentials.serialization import load_plain_data, save_plain_data
from molsamp.system import System
from molsamp.units import kT


@dataclass(frozen=True)
class FlowSamples:
    """What :meth:`BoltzmannGenerator.draw` returns.

    Attributes
    ----------
    positions : (S, N, 3) nm, canonical frame
    log_weights : (S,) log importance weights (−inf where excluded)
    reduced_energy : (S,) E/kT (+inf where excluded)
    log_prob : (S,) log q(x) of the flow in Cartesian space (modulo rigid motions)
    n_invalid_geometry, n_wrong_chirality, n_nonfinite_energy : excluded samples by reason
    """

    positions: torch.Tensor
    log_weights: torch.Tensor
    reduced_energy: torch.Tensor
    log_prob: torch.Tensor
    n_invalid_geometry: int
    n_wrong_chirality: int
    n_nonfinite_energy: int


def soften_energy(reduced_energy: torch.Tensor, high: float) -> torch.Tensor:
    """u below ``high``; high + log(1 + u − high) above; non-finite → a finite constant with no
    gradient. Keeps reverse-KL gradients bounded on clashing samples (Noé et al. 2019)."""
    finite = torch.isfinite(reduced_energy)
    safe = torch.where(finite, reduced_energy, torch.full_like(reduced_energy, high))
    excess = (safe - high).clamp(min=0.0)
    softened = torch.where(safe > high, high + torch.log1p(excess), safe)
    return torch.where(finite, softened, torch.full_like(softened, high + math.log1p(1e9)))


# reverse-KL samples a history row needs before its ESS can select the weights (keep_best)
MIN_SELECTION_SAMPLES = 1000
# keep_best with λ > 0: the best windows are re-measured on fresh samples of their own weights
# (a window pools samples of 25-odd different parameter sets, and a few thousand heavy-tailed
# weights rank flows noisily)
RESELECTION_CANDIDATES = 3
RESELECTION_SAMPLES = 8192


class BoltzmannGenerator(torch.nn.Module):
    """A flow over normalised internal coordinates with a target potential.

    Parameters
    ----------
    flow : a :class:`Flow` of dimension 3N − 6 whose circular mask marks the torsions
    coordinates : the :class:`NormalizedInternal` map positions ↔ flow coordinates
    target_potential : molsamp Potential, energy in kJ/mol
    temperature : K
    chiral_centres : (centre, a, b, c) atom quadruples whose signed volume must keep
        ``chiral_signs``; samples with another sign are excluded (weight 0) and counted
    chiral_signs : (len(chiral_centres),) ±1
    """

    def __init__(
        self,
        flow: Flow,
        coordinates: NormalizedInternal,
        target_potential: Potential,
        temperature: float,
        chiral_centres: Sequence[tuple[int, int, int, int]] = (),
        chiral_signs: Sequence[float] = (),
    ):
        super().__init__()
        if flow.dim != coordinates.dim:
            raise ValueError(
                f"flow.dim = {flow.dim} but the coordinates have {coordinates.dim}; build the flow with dim=coordinates.dim"
            )
        if not torch.equal(flow.circular.cpu(), coordinates.circular):
            raise ValueError(
                "flow.circular must mark exactly the torsions of the coordinates (coordinates.circular)"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 K, got {temperature}")
        if len(chiral_centres) != len(chiral_signs):
            raise ValueError(
                f"give one chiral sign per chiral centre: {len(chiral_centres)} centres, {len(chiral_signs)} signs"
            )
        self.flow = flow
        self.coordinates = coordinates
        self.target_potential = target_potential
        self.temperature = float(temperature)
        self.chiral_centres = [tuple(int(a) for a in centre) for centre in chiral_centres]
        self.register_buffer("chiral_signs", torch.as_tensor(list(chiral_signs), dtype=torch.float64))

    @classmethod
    def build(
        cls,
        system: System,
        target_potential: Potential,
        positions: torch.Tensor,
        temperature: float,
        generator: torch.Generator,
        *,
        dtype: torch.dtype = torch.float32,
        whiten: bool | None = None,
        **flow_options,
    ) -> BoltzmannGenerator:
        """Z-matrix from ``system.topology``, statistics and Cα chirality from ``positions``
        (S, N, 3) nm (MD frames), and a :class:`CouplingSplineFlow` (``flow_options``).

        ``whiten=None`` whitens bonds and angles jointly when there are more than twice as many
        frames as bonds and angles (a well-determined covariance), else scales each one."""
        if system.topology is None:
            raise ValueError(
                "system.topology is None; internal coordinates need the bond graph (build the system from a PDB)"
            )
        internal = InternalCoordinates(ZMatrix.from_topology(system.topology))
        if whiten is None:
            whiten = positions.shape[0] > 2 * (2 * internal.n_atoms - 3)
        coordinates = NormalizedInternal(internal, positions.to(torch.float64), whiten=whiten).to(dtype)
        flow = CouplingSplineFlow(
            coordinates.dim, coordinates.circular, generator=generator, dtype=dtype, **flow_options
        )
        centres = alpha_carbon_centres(system.topology)
        signs = [float(chirality(positions[:1].double(), *centre)[0]) for centre in centres]
        return cls(flow, coordinates, target_potential, temperature, centres, signs)

    @property
    def kT(self) -> float:
        return kT(self.temperature)

    def log_prob(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) log q(x) of positions (B, N, 3) nm, a density modulo rigid motions."""
        z, correction = self.coordinates(positions.to(self.flow.dtype))
        return self.flow.log_prob(z) + correction

    def wrong_chirality(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) True where some Cα has the mirror-image configuration."""
        wrong = torch.zeros(positions.shape[0], dtype=torch.bool, device=positions.device)
        for centre, sign in zip(self.chiral_centres, self.chiral_signs.tolist(), strict=True):
            wrong |= chirality(positions, *centre) != sign
        return wrong

    def reduced_energy(self, positions: torch.Tensor, evaluate: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) E/kT (differentiable), evaluated only where ``evaluate`` (default: everywhere);
        +inf elsewhere, for wrong chirality and for non-finite energies. Non-finite force
        components are zeroed in the backward pass so one bad sample cannot poison a batch."""
        keep = ~self.wrong_chirality(positions)
        if evaluate is not None:
            keep &= evaluate
        u = torch.full((positions.shape[0],), math.inf, dtype=positions.dtype, device=positions.device)
        if keep.any():
            x = positions[keep].to(torch.float64)
            if x.requires_grad:
                x.register_hook(lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
            energy = self.target_potential.energy(x) / self.kT
            energy = torch.where(torch.isfinite(energy), energy, torch.full_like(energy, math.inf))
            u = u.index_put((keep.nonzero().flatten(),), energy.to(u.dtype))
        return u

    def _draw_batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """n flow samples, without gradients: latent z (n, D), positions (n, N, 3) float64,
        log q (n,), reduced energy u (n,), valid geometry (n,) and wrong chirality (n,) masks."""
        with torch.no_grad():
            z, log_q_z = self.flow.sample(n, generator)
            valid = self.coordinates.valid(z) & torch.isfinite(log_q_z)
            positions, log_det = self.coordinates.inverse(z)
            positions = positions.double()
            log_q = (log_q_z - log_det).double()
            valid &= torch.isfinite(positions).all(dim=(1, 2)) & torch.isfinite(log_q)
            wrong = self.wrong_chirality(positions) & valid
            u = self.reduced_energy(positions, evaluate=valid)
        return z, positions, log_q, u, valid, wrong

    def draw(self, n: int, generator: torch.Generator, batch_size: int = 4096) -> FlowSamples:
        """n samples with weights and exclusion counts (no gradients)."""
        parts = [
            self._draw_batch(min(batch_size, n - start), generator)[1:] for start in range(0, n, batch_size)
        ]
        positions, log_q, u, valid, wrong = (torch.cat(column) for column in zip(*parts, strict=True))
        return FlowSamples(
            positions=positions,
            log_weights=log_importance_weights(-u, log_q),
            reduced_energy=u,
            log_prob=log_q,
            n_invalid_geometry=int((~valid).sum()),
            n_wrong_chirality=int(wrong.sum()),
            n_nonfinite_energy=int((valid & ~wrong & ~torch.isfinite(u)).sum()),
        )

    def propose(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n positions (n, N, 3) nm (float64) and log q (n,), without energies: the proposal
        of :class:`molsamp.flows.mcmc.IndependenceMetropolis`. Improper geometries get
        log q = +inf, hence weight 0."""
        with torch.no_grad():
            z, log_q_z = self.flow.sample(n, generator)
            positions, log_det = self.coordinates.inverse(z)
            log_q = (log_q_z - log_det).double()
            log_q = torch.where(self.coordinates.valid(z), log_q, torch.full_like(log_q, math.inf))
        return positions.double(), log_q

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n positions (n, N, 3) nm and their log importance weights (n,)."""
        samples = self.draw(n, generator)
        return samples.positions, samples.log_weights

    def ml_loss(self, positions: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per sample of data positions (B, N, 3), in nats."""
        return -self.log_prob(positions).mean()

    def kl_loss(self, n: int, generator: torch.Generator, energy_high: float) -> tuple[torch.Tensor, dict]:
        """Reverse KL E_q[u_soft(x) + log q(x)] (up to log Z) by reparametrised samples.

        Samples with an improper geometry or the wrong chirality are left out of the mean and
        counted (the data term keeps them improbable).
        """
        z, log_q_z = self.flow.sample(n, generator)
        valid = self.coordinates.valid(z).detach()
        positions, log_det = self.coordinates.inverse(z)
        u = self.reduced_energy(positions, evaluate=valid)
        usable = valid & ~self.wrong_chirality(positions.detach())
        terms = soften_energy(u, energy_high) + (log_q_z - log_det).to(u)
        loss = terms[usable].mean() if usable.any() else terms.sum() * 0.0
        finite = torch.isfinite(u.detach())
        log_q = (log_q_z - log_det).detach().double()
        stats = {
            "mean_energy_kT": float(u.detach()[finite].mean()) if finite.any() else math.inf,
            "excluded": int((~usable).sum()),
            "log_weights": log_importance_weights(torch.where(usable, -u.detach(), -math.inf), log_q),
        }
        return loss, stats

    def reweighted_nll(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward KL(p ‖ q) up to a constant, by self-normalised importance sampling of the
        flow's own samples: −Σᵢ w̄ᵢ log q(xᵢ) with the samples and weights w̄ (summing to 1)
        held fixed. Mass-covering: it raises q where the weights are largest, the regions the
        flow under-covers that make the weights heavy-tailed (and the Kish ESS small).

        Returns the loss and the samples' log importance weights (n,), −inf where excluded.
        """
        z, _, log_q, u, _, _ = self._draw_batch(n, generator)
        log_weights = log_importance_weights(-u, log_q)
        usable = torch.isfinite(log_weights)
        if not usable.any():  # nothing to learn from (the spline conditioners need ≥ 1 row)
            return torch.zeros((), dtype=z.dtype, device=z.device, requires_grad=True), log_weights
        weights = torch.softmax(log_weights[usable], 0).to(z)
        return -(weights * self.flow.log_prob(z[usable])).sum(), log_weights

    def train(
        self,
        data: torch.Tensor,
        generator: torch.Generator,
        *,
        n_steps: int,
        batch_size: int = 256,
        kl_batch_size: int = 128,
        kl_weight: float | Callable[[int], float] = 0.0,
        reweighted_weight: float = 0.0,
        reweighted_batch_size: int = 512,
        learning_rate: float = 1e-3,
        clip_norm: float = 100.0,
        energy_high: float = 1e4,
        time_limit_s: float | None = None,
        clock: str = "wall",
        log_every: int = 100,
        validation: torch.Tensor | None = None,
        keep_best: bool = False,
        callback: Callable[[dict], None] | None = None,
    ) -> list[dict]:
        """Adam on (1 − λ)·NLL(data) + λ·KL(q ‖ p) + μ·KL(p ‖ q) with gradient-norm clipping.

        Parameters
        ----------
        data : (S, N, 3) nm training frames (e.g. MD)
        generator : seeded torch.Generator for batches and flow samples
        n_steps : optimiser steps (stops earlier after ``time_limit_s`` seconds)
        clock : "wall" (elapsed time) or "cpu" (this process's CPU time: the fair budget on a
            machine shared with other jobs)
        kl_weight : λ in [0, 1], or a function step → λ (e.g. a ramp from ML to mixed)
        reweighted_weight : μ ≥ 0, weight of :meth:`reweighted_nll` on ``reweighted_batch_size``
            flow samples per step (energies without gradients); it thins the weights' tail
        energy_high : reduced energy (kT) above which the energy is softened logarithmically
        clip_norm : maximum gradient norm
        log_every : steps between history rows (dicts with step, nll, kl, λ, wall_s/cpu_s, …)
        validation : (V, N, 3) held-out frames; rows then carry their NLL ("validation_nll"),
            the overfitting signal (training NLL falling while this rises ruins the ESS)
        keep_best : end with the weights of the best history row instead of the last: the
            highest Kish ESS fraction of the reverse-KL samples drawn since the previous row
            ("window_ess", counted once they are ≥ ``MIN_SELECTION_SAMPLES``) when λ > 0, else
            the lowest ``validation_nll`` (needs ``validation``). With λ > 0 the
            ``RESELECTION_CANDIDATES`` best windows' weights are then re-measured on
            ``RESELECTION_SAMPLES`` fresh draws each and the highest ESS kept (the last history
            row records them under ``reselection`` and ``kept_step``). All of it is measured
            during training, never on the samples that are reweighted afterwards.

        The learning rate follows a cosine from ``learning_rate`` to 1/20 of it over
        ``n_steps`` or over ``time_limit_s``, whichever ends first.
        """
        if data.ndim != 3 or data.shape[0] < 2:
            raise ValueError(f"data must be (S, N, 3) frames in nm with S >= 2, got {tuple(data.shape)}")
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
        if not reweighted_weight >= 0:
            raise ValueError(f"reweighted_weight must be >= 0, got {reweighted_weight}")
        uses_kl = callable(kl_weight) or kl_weight > 0 or reweighted_weight > 0
        if keep_best and validation is None and not uses_kl:
            raise ValueError("keep_best with kl_weight 0 selects by validation NLL: pass validation frames")
        now = time.perf_counter if clock == "wall" else time.process_time
        weight = kl_weight if callable(kl_weight) else (lambda step: float(kl_weight))
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=learning_rate)
        data = data.to(device=self.flow.device, dtype=self.flow.dtype)
        history, start = [], now()
        window: list[torch.Tensor] = []  # reverse-KL log-weights since the last history row
        best_score, best_state = -math.inf, None
        candidates: list[tuple[float, int, dict]] = []  # (window ESS, step, weights), λ > 0 only
        for step in range(n_steps):
            progress = step / max(n_steps, 1)
            if time_limit_s is not None and time_limit_s > 0:
                progress = max(progress, (now() - start) / time_limit_s)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * (0.05 + 0.475 * (1 + math.cos(math.pi * min(progress, 1.0))))
            lam = weight(step)
            if not 0.0 <= lam <= 1.0:
                raise ValueError(f"kl_weight must be in [0, 1], got {lam} at step {step}")
            index = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
            nll = (
                self.ml_loss(data[index.to(data.device)])
                if lam < 1.0
                else torch.zeros((), device=data.device)
            )
            loss = (1.0 - lam) * nll
            stats: dict = {}
            if lam > 0.0:
                kl, stats = self.kl_loss(kl_batch_size, generator, energy_high)
                window.append(stats.pop("log_weights"))
                loss = loss + lam * kl.to(loss)
            if reweighted_weight > 0.0:
                forward_kl, sample_log_weights = self.reweighted_nll(reweighted_batch_size, generator)
                window.append(sample_log_weights)
                stats["reweighted_nll"] = float(forward_kl.detach())
                loss = loss + reweighted_weight * forward_kl.to(loss)
            optimizer.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.flow.parameters(), clip_norm)
            if torch.isfinite(norm):
                optimizer.step()
            elapsed = now() - start
            last = step == n_steps - 1 or (time_limit_s is not None and elapsed > time_limit_s)
            if step % log_every == 0 or last:
                row = {
                    "step": step,
                    "nll": float(nll.detach()),
                    "kl_weight": lam,
                    "grad_norm": float(norm),
                    "learning_rate": optimizer.param_groups[0]["lr"],
                    f"{clock}_s": elapsed,
                    **stats,
                }
                if lam > 0.0:
                    row["kl"] = float(kl.detach())
                eligible = True
                if window:
                    pooled = torch.cat(window)
                    row["window_ess"] = ess_fraction(pooled)
                    # Kish ESS of a few hundred heavy-tailed weights reads far too high
                    eligible = pooled.numel() >= MIN_SELECTION_SAMPLES
                    window = []
                if validation is not None:
                    with torch.no_grad():
                        held_out = validation.to(device=self.flow.device, dtype=self.flow.dtype)
                        row["validation_nll"] = float(self.ml_loss(held_out))
                score = row.get("window_ess") if uses_kl else -row.get("validation_nll", math.inf)
                if keep_best and eligible and score is not None and score > best_score:
                    best_score, best_state = score, copy.deepcopy(self.flow.state_dict())
                    row["kept"] = True
                if keep_best and uses_kl and eligible and score is not None:
                    candidates.append((score, step, copy.deepcopy(self.flow.state_dict())))
                    candidates = sorted(candidates, key=lambda c: -c[0])[:RESELECTION_CANDIDATES]
                history.append(row)
                if callback is not None:
                    callback(row)
            if last:
                break
        if len(candidates) > 1:
            best_state = self._reselect(candidates, generator, history)
        if best_state is not None:
            self.flow.load_state_dict(best_state)
        return history

    def _reselect(
        self, candidates: list[tuple[float, int, dict]], generator: torch.Generator, history: list[dict]
    ) -> dict:
        """The candidate weights with the highest Kish ESS fraction on RESELECTION_SAMPLES fresh
        draws; the last history row records them (``reselection``: step, window and fresh ESS
        per candidate; ``kept_step``)."""
        measured = []
        for window_ess, step, state in candidates:
            self.flow.load_state_dict(state)
            fresh = ess_fraction(self.draw(RESELECTION_SAMPLES, generator).log_weights)
            measured.append({"step": step, "window_ess": window_ess, "fresh_ess": fresh})
        best = max(range(len(candidates)), key=lambda i: measured[i]["fresh_ess"])
        history[-1].update(reselection=measured, kept_step=candidates[best][1])
        return candidates[best][2]


FORMAT = "molsamp-boltzmann-generator-1"


def save_boltzmann_generator(bg: BoltzmannGenerator, path: str | Path) -> Path:
    """Write ``bg``'s flow, coordinate statistics, Z-matrix, chirality and temperature to
    ``path`` as plain data (atomically); the target potential is not stored. Returns the path."""
    if not isinstance(bg.flow, CouplingSplineFlow):
        raise TypeError(f"only CouplingSplineFlow generators can be saved, got {type(bg.flow).__name__}")
    zmatrix = bg.coordinates.internal.zmatrix
    return save_plain_data(
        {
            "format": FORMAT,
            "molsamp_version": molsamp.__version__,
            "temperature_K": bg.temperature,
            "dtype": str(bg.flow.dtype).removeprefix("torch."),
            "zmatrix_root": torch.tensor(zmatrix.root),
            "zmatrix_rows": torch.tensor(zmatrix.rows, dtype=torch.int64).reshape(-1, 4),
            "chiral_centres": torch.tensor(bg.chiral_centres, dtype=torch.int64).reshape(-1, 4),
            "chiral_signs": bg.chiral_signs.cpu(),
            "flow_options": json.dumps(bg.flow.options),
            "coordinate_mean": bg.coordinates.mean.cpu(),
            "coordinate_cholesky": bg.coordinates.cholesky.cpu(),
            "flow": {k: v.cpu() for k, v in bg.flow.state_dict().items()},  # its masks included
        },
        path,
    )


def load_boltzmann_generator(
    path: str | Path,
    system: System,
    target_potential: Potential,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
) -> BoltzmannGenerator:
    """Rebuild a generator written by :func:`save_boltzmann_generator` for ``system`` (its
    atom count must match) with ``target_potential``, reweighting to ``temperature`` K (default:
    the one it was trained at). ``torch.load(weights_only=True)``: nothing in the file runs."""
    payload = load_plain_data(
        path, FORMAT, "molsamp Boltzmann generator", "molsamp.flows.save_boltzmann_generator"
    )
    rows = tuple(tuple(int(a) for a in row) for row in payload["zmatrix_rows"].tolist())
    zmatrix = ZMatrix(tuple(int(a) for a in payload["zmatrix_root"].tolist()), rows)
    if zmatrix.n_atoms != system.n_atoms:
        raise ValueError(
            f"{path} is a generator for {zmatrix.n_atoms} atoms but the system has {system.n_atoms}; "
            "load it with the system it was trained on"
        )
    dtype = getattr(torch, payload["dtype"])
    coordinates = NormalizedInternal(
        InternalCoordinates(zmatrix), statistics=(payload["coordinate_mean"], payload["coordinate_cholesky"])
    ).to(dtype=dtype, device=device)
    options, weights = json.loads(payload["flow_options"]), payload["flow"]
    flow = CouplingSplineFlow(
        coordinates.dim,
        coordinates.circular,
        generator=torch.Generator().manual_seed(0),  # initial weights, overwritten below
        dtype=dtype,
        device=device,
        halves=torch.stack([weights[f"layers.{i}.transformed"] for i in range(0, options["n_couplings"], 2)]),
        **options,
    )
    flow.load_state_dict(weights)
    centres = [tuple(int(a) for a in centre) for centre in payload["chiral_centres"].tolist()]
    return BoltzmannGenerator(
        flow, coordinates, target_potential,
        float(payload["temperature_K"]) if temperature is None else temperature, centres,
        payload["chiral_signs"].tolist(),
    ).to(device)  # fmt: skip
