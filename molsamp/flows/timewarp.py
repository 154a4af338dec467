"""Timewarp: a conditional flow p(x(t+τ), v | x(t)) over all-atom Cartesian positions and
auxiliary velocities, trained on MD pairs and used as a Metropolis–Hastings proposal.

Klein et al., NeurIPS 2023 ("Timewarp: Transferable Acceleration of Molecular Dynamics by
Learning Time-Coarsened Dynamics"). The chain that uses the flow is in
:mod:`molsamp.flows.timewarp_mcmc`.

Shape of the model (:class:`TimewarpFlow`):

- latent (z_x, z_v) ~ N(0, I) in 6N dimensions; the positions live as normalised
  displacements y = (x(t+τ) − x(t)) / σ_e, σ_e a learnt length per element (nm), so the
  untrained flow is a Gaussian random walk around x(t);
- couplings alternate an affine map of y conditioned on (v, x(t)) and of v conditioned on
  (y, x(t)); per-atom log-scales and shifts come from an atom transformer whose inputs are an
  element embedding, the centred conditioning positions x(t) − x̄(t) and the untouched half,
  and whose attention logits carry −d²ᵢⱼ/(2ℓ²_h): an RBF kernel of the distances in x(t) with
  a learnt length ℓ_h per head, so attention is local in the conditioning state;
- translations: every input is relative to the (mass-weighted) centre of x(t), so
  p(x' + a, v | x + a) = p(x', v | x) exactly;
- rotations: **data augmentation** (a random rotation of each training pair), not an
  equivariant conditioner; the MH test stays exact whatever the flow does;
- rigid motions over τ: :func:`molsamp.flows.timewarp_commands.train_on_frames` aligns each
  x(t+τ) onto x(t) (centre of mass and Kabsch rotation) before training, so the flow spends its
  capacity on internal motion. The Boltzmann density is invariant to rigid motions, so the
  chain loses nothing it needs (its rigid-body diffusion is merely slow).

One model serves several molecules: atoms are described by their element alone, the
transformer takes any N. Lengths nm, energies kJ/mol, times ps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from molsamp.flows.flow import _initialise as initialise_linear_layers
from molsamp.system import System

MAX_ELEMENT = 119


@dataclass(frozen=True)
class TimewarpConfig:
    """Hyperparameters of :class:`TimewarpFlow` (saved beside the weights as JSON).

    Attributes
    ----------
    n_couplings : (position, velocity) coupling pairs
    hidden : transformer width
    heads : attention heads (each with its own kernel length)
    blocks : transformer blocks per conditioner
    kernel_lengths : initial RBF lengths of the heads, nm (cycled over the heads)
    position_scale : initial σ of the displacement, nm (overwritten per element by data)
    max_log_scale : |log scale| of each affine map is bounded by this (soft tanh bound)
    """

    n_couplings: int = 4
    hidden: int = 64
    heads: int = 4
    blocks: int = 1
    kernel_lengths: tuple[float, ...] = (0.15, 0.3, 0.6, 1.2)
    position_scale: float = 0.02
    max_log_scale: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TimewarpConfig:
        data = dict(data)
        data["kernel_lengths"] = tuple(data["kernel_lengths"])
        return cls(**data)


def center_of_mass(positions: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """(B, 1, 3) mass-weighted centre of positions (B, N, 3) nm, masses (N,) amu."""
    w = (masses / masses.sum()).to(positions)
    return torch.einsum("bnd,n->bd", positions, w)[:, None, :]


def gaussian(
    shape: torch.Size, generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """N(0, 1) draws of ``shape`` from ``generator`` on its own device, then moved to ``device``:
    a CPU generator drives a flow on CUDA (its state stays host-side and checkpointable)."""
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def random_rotations(n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """(n, 3, 3) rotation matrices uniform on SO(3) (QR of Gaussian matrices, sign-fixed)."""
    a = torch.randn(n, 3, 3, generator=generator, device=generator.device, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det[:, None]  # reflections → rotations
    return q.to(dtype)


class _KernelAttention(nn.Module):
    """Multi-head self-attention over atoms with logits q·k/√d − d²ᵢⱼ/(2ℓ²_h)."""

    def __init__(self, hidden: int, heads: int, kernel_lengths: tuple[float, ...]):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        lengths = torch.tensor([kernel_lengths[h % len(kernel_lengths)] for h in range(heads)])
        self.log_length = nn.Parameter(torch.log(lengths))

    def forward(self, h: torch.Tensor, squared_distances: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        inverse_length2 = torch.exp(-2 * self.log_length).to(h)
        logits = logits - 0.5 * squared_distances[:, None] * inverse_length2[None, :, None, None]
        mixed = torch.softmax(logits, -1) @ v
        return self.out(mixed.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, kernel_lengths: tuple[float, ...]):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = _KernelAttention(hidden, heads, kernel_lengths)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))

    def forward(self, h: torch.Tensor, squared_distances: torch.Tensor) -> torch.Tensor:
        h = h + self.attention(self.norm1(h), squared_distances)
        return h + self.mlp(self.norm2(h))


class AtomTransformer(nn.Module):
    """Per-atom features (B, N, F) and element embeddings → per-atom affine parameters
    (B, N, 6): three log-scales and three shifts. The head starts at zero (identity map)."""

    def __init__(self, n_features: int, config: TimewarpConfig):
        super().__init__()
        self.embed = nn.Embedding(MAX_ELEMENT, config.hidden)
        self.lift = nn.Linear(n_features, config.hidden)
        self.blocks = nn.ModuleList(
            _Block(config.hidden, config.heads, config.kernel_lengths) for _ in range(config.blocks)
        )
        self.norm = nn.LayerNorm(config.hidden)
        self.head = nn.Linear(config.hidden, 6)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, features: torch.Tensor, numbers: torch.Tensor, squared_distances: torch.Tensor
    ) -> torch.Tensor:
        h = self.lift(features) + self.embed(numbers)[None]
        for block in self.blocks:
            h = block(h, squared_distances)
        return self.head(self.norm(h))


class _Coupling(nn.Module):
    """y ← y·exp(s) + t given (v, x(t)), then v ← v·exp(s') + t' given (y, x(t))."""

    def __init__(self, config: TimewarpConfig):
        super().__init__()
        # features: centred x(t) / 1 nm (3), the other half (3), proposed centred position (3)
        self.positions = AtomTransformer(6, config)
        self.velocities = AtomTransformer(9, config)
        self.max_log_scale = config.max_log_scale

    def _affine(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bound = self.max_log_scale
        return bound * torch.tanh(raw[..., :3] / bound), raw[..., 3:]

    def forward(self, y, v, cond, inverse: bool):
        """Latent → data when ``inverse`` is False; returns (y, v, log|det|) of that direction."""
        centred, numbers, d2, sigma = cond
        log_det = y.new_zeros(y.shape[0])

        def update_y(y, v):
            s, t = self._affine(self.positions(torch.cat([centred, v], -1), numbers, d2))
            return s, t

        def update_v(y, v):
            proposed = centred + y * sigma
            s, t = self._affine(self.velocities(torch.cat([centred, y, proposed], -1), numbers, d2))
            return s, t

        if not inverse:  # latent → data: y first, then v
            s, t = update_y(y, v)
            y = y * torch.exp(s) + t
            log_det = log_det + s.sum((1, 2))
            s, t = update_v(y, v)
            v = v * torch.exp(s) + t
            log_det = log_det + s.sum((1, 2))
        else:  # data → latent: undo v, then y
            s, t = update_v(y, v)
            v = (v - t) * torch.exp(-s)
            log_det = log_det - s.sum((1, 2))
            s, t = update_y(y, v)
            y = (y - t) * torch.exp(-s)
            log_det = log_det - s.sum((1, 2))
        return y, v, log_det


class TimewarpFlow(nn.Module):
    """Conditional flow p(x(t+τ), v | x(t)) for any molecule made of known elements.

    Parameters
    ----------
    config : :class:`TimewarpConfig`
    generator : seeded torch.Generator for the initial weights
    dtype : parameter dtype (float32 for training speed; float64 for exact tests)
    """

    def __init__(
        self, config: TimewarpConfig | None = None, *, generator: torch.Generator, dtype=torch.float32
    ):
        super().__init__()
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a seeded torch.Generator, got {type(generator).__name__}")
        self.config = config or TimewarpConfig()
        self.couplings = nn.ModuleList(_Coupling(self.config) for _ in range(self.config.n_couplings))
        self.log_sigma = nn.Parameter(torch.full((MAX_ELEMENT,), math.log(self.config.position_scale)))
        _initialise(self, generator)
        self.to(dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.log_sigma.dtype

    @property
    def device(self) -> torch.device:
        return self.log_sigma.device

    def set_scales_from_data(self, x0: torch.Tensor, x1: torch.Tensor, system: System) -> dict[int, float]:
        """σ_e = RMS per-coordinate displacement of each element in the pairs (after removing
        the centre-of-mass shift); returns {atomic number: σ (nm)}."""
        masses = system.masses
        d = (x1 - center_of_mass(x1, masses)) - (x0 - center_of_mass(x0, masses))
        scales = {}
        with torch.no_grad():
            for z in system.atomic_numbers.unique().tolist():
                rms = d[:, system.atomic_numbers == z].double().pow(2).mean().sqrt().clamp(min=1e-4)
                self.log_sigma[z] = math.log(float(rms))
                scales[int(z)] = float(rms)
        return scales

    def _condition(self, x0: torch.Tensor, system: System):
        numbers = system.atomic_numbers.to(self.device)
        x0 = x0.to(self.dtype)
        com = center_of_mass(x0, system.masses.to(x0.device))
        centred = x0 - com
        d2 = (centred[:, :, None] - centred[:, None, :]).pow(2).sum(-1)
        sigma = torch.exp(self.log_sigma[numbers])[None, :, None]
        return (centred, numbers, d2, sigma), com

    def _check(self, x0: torch.Tensor, system: System, *others: torch.Tensor) -> None:
        n = system.n_atoms
        if x0.ndim != 3 or x0.shape[1:] != (n, 3):
            raise ValueError(f"x0 must be (B, {n}, 3) positions in nm, got {tuple(x0.shape)}")
        for other in others:
            if other.shape != x0.shape:
                raise ValueError(f"x1 and v must have x0's shape {tuple(x0.shape)}, got {tuple(other.shape)}")

    def to_latent(
        self, x1: torch.Tensor, v: torch.Tensor, x0: torch.Tensor, system: System
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x(t+τ), v) given x(t) → latent (z_x, z_v), each (B, N, 3), and log|det ∂z/∂(x, v)| (B,)."""
        self._check(x0, system, x1, v)
        cond, _ = self._condition(x0, system)
        sigma = cond[3]
        y = (x1.to(self.dtype) - x0.to(self.dtype)) / sigma
        v = v.to(self.dtype)
        log_det = -torch.log(sigma).sum() * x1.new_ones(x1.shape[0], dtype=self.dtype) * 3
        for coupling in reversed(self.couplings):
            y, v, ld = coupling(y, v, cond, inverse=True)
            log_det = log_det + ld
        return y, v, log_det

    def from_latent(
        self, z_x: torch.Tensor, z_v: torch.Tensor, x0: torch.Tensor, system: System
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent → (x(t+τ) nm, v), each (B, N, 3), and log|det ∂(x, v)/∂z| (B,)."""
        self._check(x0, system, z_x, z_v)
        cond, _ = self._condition(x0, system)
        sigma = cond[3]
        y, v = z_x.to(self.dtype), z_v.to(self.dtype)
        log_det = y.new_zeros(y.shape[0])
        for coupling in self.couplings:
            y, v, ld = coupling(y, v, cond, inverse=False)
            log_det = log_det + ld
        x1 = x0.to(self.dtype) + y * sigma
        return x1, v, log_det + 3 * torch.log(sigma).sum()

    @staticmethod
    def _log_normal(*tensors: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for t in tensors:
            total = total - 0.5 * t.pow(2).sum((1, 2)) - 0.5 * math.log(2 * math.pi) * t[0].numel()
        return total

    def log_prob(self, x1: torch.Tensor, v: torch.Tensor, x0: torch.Tensor, system: System) -> torch.Tensor:
        """(B,) log p(x(t+τ), v | x(t)), a density on ℝ^{6N} (positions nm, v dimensionless)."""
        z_x, z_v, log_det = self.to_latent(x1, v, x0, system)
        return self._log_normal(z_x, z_v) + log_det

    def sample(
        self, x0: torch.Tensor, system: System, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One proposal per row of x0 (B, N, 3): x' (B, N, 3) nm, v' (B, N, 3) and log p (B,);
        differentiable (reparametrised)."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a seeded torch.Generator, got {type(generator).__name__}")
        z_x = gaussian(x0.shape, generator, self.dtype, self.device)
        z_v = gaussian(x0.shape, generator, self.dtype, self.device)
        x1, v, log_det = self.from_latent(z_x, z_v, x0, system)
        return x1, v, self._log_normal(z_x, z_v) - log_det


def _initialise(module: nn.Module, generator: torch.Generator) -> None:
    """Every weight drawn from ``generator`` (never the global RNG): linear layers ±1/√fan_in
    and zero output heads as in the spline flows (so the flow starts as the Gaussian random
    walk), embeddings N(0, 1)."""
    initialise_linear_layers(module, generator)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Embedding):
                sub.weight.normal_(0.0, 1.0, generator=generator)


def transition_pairs(frames: torch.Tensor, lag: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x(t), x(t+τ)) pairs from frames (S, N, 3) or trajectories (W, S, N, 3) saved every Δt:
    τ = lag·Δt. Returns two (P, N, 3) tensors."""
    if lag < 1:
        raise ValueError(f"lag must be >= 1 frame, got {lag}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[1] <= lag:
        raise ValueError(
            f"frames must be (S, N, 3) or (W, S, N, 3) with S > lag = {lag}, got {tuple(frames.shape)}"
        )
    x0 = frames[:, :-lag].reshape(-1, *frames.shape[2:])
    x1 = frames[:, lag:].reshape(-1, *frames.shape[2:])
    return x0, x1


def align(mobile: torch.Tensor, reference: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """``mobile`` (B, N, 3) moved rigidly onto ``reference`` (B, N, 3): same centre of mass and
    the proper rotation of least mass-weighted RMSD (Kabsch, Acta Cryst. A 1976)."""
    w = (masses / masses.sum()).to(mobile)
    a = mobile - center_of_mass(mobile, masses)
    com = center_of_mass(reference, masses)
    b = reference - com
    covariance = torch.einsum("bni,n,bnj->bij", a, w, b)
    u, _, vt = torch.linalg.svd(covariance)
    sign = torch.sign(torch.linalg.det(u @ vt))
    u = torch.cat([u[:, :, :2], u[:, :, 2:] * sign[:, None, None]], 2)
    return a @ (u @ vt) + com


def augment(
    x0: torch.Tensor, x1: torch.Tensor, masses: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random rotation of each pair about x(t)'s centre of mass (rotations are
    learnt from data, see the module docstring)."""
    rotation = random_rotations(x0.shape[0], generator, x0.dtype).to(x0.device)
    com = center_of_mass(x0, masses.to(x0.device))
    return (x0 - com) @ rotation + com, (x1 - com) @ rotation + com


def train_timewarp(
    flow: TimewarpFlow,
    system: System,
    x0: torch.Tensor,
    x1: torch.Tensor,
    generator: torch.Generator,
    *,
    n_steps: int,
    batch_size: int = 64,
    learning_rate: float = 5e-4,
    clip_norm: float = 10.0,
    time_limit_s: float | None = None,
    log_every: int = 100,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callable[[dict], None] | None = None,
    auxiliary: tuple[str, float, Callable] | None = None,
) -> list[dict]:
    """Maximum likelihood of pairs: minimise −log p(x(t+τ), v | x(t)) with v ~ N(0, I) drawn
    afresh for every batch and every pair rotated at random (Adam, cosine decay, clipping).

    ``auxiliary`` = (name, weight, f): adds weight·f(x(t) batch, generator) / N to the loss,
    f returning (loss, stats dict); rows then carry ``name`` and the stats (used by
    :func:`molsamp.flows.timewarp_mcmc.fine_tune_acceptance`).

    Parameters
    ----------
    x0, x1 : (P, N, 3) nm, pairs from :func:`transition_pairs`
    n_steps : optimiser steps (stops earlier after ``time_limit_s`` wall seconds)
    validation : held-out (x0, x1) pairs; history rows then carry "validation_nll"

    Returns the history (dicts: step, nll per atom (nats), grad_norm, wall_s, …).
    """
    if x0.shape != x1.shape or x0.ndim != 3 or x0.shape[0] < 2:
        raise ValueError(
            f"x0 and x1 must both be (P, N, 3) with P >= 2, got {tuple(x0.shape)}, {tuple(x1.shape)}"
        )
    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate)
    x0 = x0.to(device=flow.device, dtype=torch.float64)
    x1 = x1.to(device=flow.device, dtype=torch.float64)
    history, start = [], time.perf_counter()
    n_atoms = system.n_atoms
    for step in range(n_steps):
        elapsed = time.perf_counter() - start
        progress = max(step / n_steps, elapsed / time_limit_s if time_limit_s else 0.0)
        for group in optimizer.param_groups:  # cosine decay over the budget (steps or time)
            group["lr"] = learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
        index = torch.randint(0, x0.shape[0], (batch_size,), generator=generator, device=generator.device)
        index = index.to(x0.device)
        a, b = augment(x0[index], x1[index], system.masses, generator)
        v = gaussian(a.shape, generator, flow.dtype, flow.device)
        nll = -flow.log_prob(b, v, a, system).mean() / n_atoms
        loss, stats = nll, {}
        if auxiliary is not None:
            extra, stats = auxiliary[2](a, generator)
            stats = {auxiliary[0]: float(extra.detach()), **stats}
            loss = nll + auxiliary[1] * extra.to(nll) / n_atoms
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(flow.parameters(), clip_norm)
        if torch.isfinite(norm):
            optimizer.step()
        elapsed = time.perf_counter() - start
        last = step == n_steps - 1 or (time_limit_s is not None and elapsed > time_limit_s)
        if step % log_every == 0 or last:
            row = {
                "step": step,
                "nll_per_atom": float(nll.detach()),
                "grad_norm": float(norm),
                "wall_s": elapsed,
                **stats,
            }
            if validation is not None:
                row["validation_nll_per_atom"] = validation_nll(flow, system, *validation, generator)
            history.append(row)
            if callback is not None:
                callback(row)
        if last:
            break
    return history


def validation_nll(
    flow: TimewarpFlow, system: System, x0: torch.Tensor, x1: torch.Tensor, generator: torch.Generator
) -> float:
    """Mean −log p per atom (nats) of held-out pairs (no augmentation), batches of 256."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, x0.shape[0], 256):
            a, b = x0[start : start + 256], x1[start : start + 256]
            v = gaussian(a.shape, generator, flow.dtype, flow.device)
            total += float(-flow.log_prob(b.to(flow.device), v, a.to(flow.device), system).sum())
    return total / (x0.shape[0] * system.n_atoms)


def save_timewarp(flow: TimewarpFlow, path) -> None:
    """Weights as a state dict (``path``) and the config as JSON beside it (``path``.json)."""
    import json
    from pathlib import Path

    path = Path(path)
    torch.save(flow.state_dict(), path)
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(flow.config.to_dict()))


def load_timewarp(path, dtype=torch.float32) -> TimewarpFlow:
    """Inverse of :func:`save_timewarp` (``weights_only=True``: no pickled code runs)."""
    import json
    from pathlib import Path

    path = Path(path)
    config = TimewarpConfig.from_dict(json.loads(path.with_suffix(path.suffix + ".json").read_text()))
    flow = TimewarpFlow(config, generator=torch.Generator().manual_seed(0), dtype=dtype)
    flow.load_state_dict(torch.load(path, weights_only=True))
    return flow


__all__ = [
    "AtomTransformer",
    "TimewarpConfig",
    "TimewarpFlow",
    "align",
    "augment",
    "center_of_mass",
    "load_timewarp",
    "random_rotations",
    "save_timewarp",
    "train_timewarp",
    "transition_pairs",
    "validation_nll",
]
