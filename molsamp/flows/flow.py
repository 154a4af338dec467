"""Normalising flows on ℝⁿ × (circle)ᵐ: rational-quadratic spline couplings.

Splines are Durkan et al., NeurIPS 2019 (nflows' spline kernels do the elementwise maths);
on circular coordinates the spline's end derivatives are tied and a learnt rotation follows
(circular splines, Rezende et al., ICML 2020), so the map is a diffeomorphism of the circle.
Couplings follow Dinh et al., ICLR 2017. Any :class:`Flow` can be conditional: the
conditioners also see a context vector (p(x | c)).

The interface (:class:`Flow`) is what the rest of molsamp uses; another backend (zuko, say)
only has to provide ``forward``/``inverse`` with log-dets and the base distribution.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from nflows.transforms.splines.rational_quadratic import DEFAULT_MIN_DERIVATIVE, rational_quadratic_spline
from torch import nn

# softplus(IDENTITY_DERIVATIVE) + min_derivative = 1: zero network output is the identity map
IDENTITY_DERIVATIVE = float(np.log(np.expm1(1 - DEFAULT_MIN_DERIVATIVE)))


def wrap(angle: torch.Tensor) -> torch.Tensor:
    """Angles mapped to [−π, π)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


class Flow(nn.Module):
    """A bijection between data x (B, D) and latent u (B, D) with a base density on u.

    Subclasses implement ``forward`` (x → u) and ``inverse`` (u → x), each returning the
    output and log|det| of that direction (B,). Real coordinates have a standard-normal base,
    circular ones (``circular`` mask, values in [−π, π)) a uniform one.
    """

    def __init__(self, dim: int, circular: torch.Tensor | None, context_dim: int):
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling flow needs dim >= 2 coordinates, got {dim}")
        circular = (
            torch.zeros(dim, dtype=torch.bool) if circular is None else torch.as_tensor(circular).bool()
        )
        if circular.shape != (dim,):
            raise ValueError(f"circular must be a (dim,) = ({dim},) bool mask, got {tuple(circular.shape)}")
        self.dim = dim
        self.context_dim = context_dim
        self.register_buffer("circular", circular)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(
        self, u: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def base_log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """(B,) log density of the base: N(0, 1) on real coordinates, U[−π, π) on circular ones."""
        circular = self.circular
        normal = -0.5 * (u[:, ~circular] ** 2).sum(1) - 0.5 * math.log(2 * math.pi) * int((~circular).sum())
        outside = (u[:, circular].abs() > math.pi).any(1)
        uniform = -math.log(2 * math.pi) * int(circular.sum())
        return torch.where(outside, torch.full_like(normal, -math.inf), normal + uniform)

    def sample_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, D) base samples in the flow's dtype and device (never the global default dtype)."""
        options = {"generator": generator, "dtype": self.dtype, "device": self.device}
        u = torch.randn(n, self.dim, **options)
        angles = (2 * torch.rand(n, self.dim, **options) - 1) * math.pi
        return torch.where(self.circular, angles, u)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) log density of data x (B, D)."""
        u, log_det = self.forward(x, context)
        return self.base_log_prob(u) + log_det

    def sample(
        self, n: int, generator: torch.Generator, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples (n, D) and their log density (n,); differentiable (reparametrised).

        context : (n, C) or (C,) for a conditional flow, None otherwise
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a seeded torch.Generator, got {type(generator).__name__}")
        if context is not None and context.ndim == 1:
            context = context.expand(n, -1)
        u = self.sample_base(n, generator)
        x, log_det = self.inverse(u, context)
        return x, self.base_log_prob(u) - log_det


class _Conditioner(nn.Module):
    """MLP from the untouched coordinates (angles as cos, sin) and context to spline parameters."""

    def __init__(self, n_in: int, n_out: int, hidden: int, n_hidden_layers: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(n_hidden_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_out)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(features))


class SplineCoupling(nn.Module):
    """One coupling layer: coordinates in ``transformed`` go through splines whose parameters
    depend on the others (and the context).

    Parameters
    ----------
    transformed : (D,) bool, the coordinates this layer changes
    circular : (D,) bool, coordinates on [−π, π)
    hidden, n_hidden_layers : conditioner MLP size
    bins : spline bins K
    tail_bound : real coordinates in [−B, B] are splined, outside is the identity
    context_dim : length of the context vector (0 for an unconditional flow)
    """

    def __init__(
        self,
        transformed: torch.Tensor,
        circular: torch.Tensor,
        hidden: int,
        n_hidden_layers: int,
        bins: int,
        tail_bound: float,
        context_dim: int,
    ):
        super().__init__()
        self.register_buffer("transformed", transformed.clone())
        self.register_buffer("circular", circular.clone())
        self.bins = bins
        self.tail_bound = tail_bound
        kept = ~transformed
        n_in = int((kept & ~circular).sum()) + 2 * int((kept & circular).sum()) + context_dim
        self.n_params = 3 * bins + 1  # widths, heights, derivatives, rotation (circular only)
        self.conditioner = _Conditioner(
            max(n_in, 1), int(transformed.sum()) * self.n_params, hidden, n_hidden_layers
        )

    def _parameters_for(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        kept = x[:, ~self.transformed]
        periodic = self.circular[~self.transformed]
        features = [kept[:, ~periodic], torch.cos(kept[:, periodic]), torch.sin(kept[:, periodic])]
        if context is not None:
            features.append(context.to(x))
        features = torch.cat(features, dim=1)
        if features.shape[1] == 0:
            features = x.new_ones(x.shape[0], 1)
        return self.conditioner(features).reshape(x.shape[0], -1, self.n_params)

    def _transform(
        self, x: torch.Tensor, context: torch.Tensor | None, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # One spline call for every transformed coordinate on [−π, π]: real coordinates are
        # scaled by π/B into it (the scale cancels in the log-det) and keep identity tails
        # outside [−B, B] with unit end slopes; circular ones tie their end slopes instead.
        raw = self._parameters_for(x, context)
        k = self.bins
        widths, heights = raw[..., :k], raw[..., k : 2 * k]
        inner = raw[..., 2 * k : 3 * k] + IDENTITY_DERIVATIVE
        rotation = raw[..., 3 * k]
        periodic = self.circular[self.transformed]
        ends = torch.where(
            periodic[:, None], inner[..., :1], torch.full_like(inner[..., :1], IDENTITY_DERIVATIVE)
        )
        derivatives = torch.cat(
            [torch.where(periodic[:, None], inner[..., :1], ends), inner[..., 1:], ends], -1
        )
        values = x[:, self.transformed]
        scale = torch.where(periodic, 1.0, math.pi / self.tail_bound).to(values)
        if inverse:
            values = torch.where(periodic, wrap(values - rotation), values)
        scaled = values * scale
        finite = torch.isfinite(scaled)  # NaN/inf pass through unchanged, never into the spline
        inside = finite & (periodic | (scaled.abs() <= math.pi))
        spline, log_det = rational_quadratic_spline(
            torch.where(finite, scaled, torch.zeros_like(scaled)).clamp(-math.pi, math.pi),
            widths,
            heights,
            derivatives,
            inverse=inverse,
            left=-math.pi,
            right=math.pi,
            bottom=-math.pi,
            top=math.pi,
        )
        out = torch.where(inside, spline / scale, values)
        if not inverse:
            out = torch.where(periodic, wrap(out + rotation), out)
        log_det = torch.where(inside, log_det, torch.zeros_like(log_det))
        y = x.clone()
        y[:, self.transformed] = out
        return y, log_det.sum(1)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(x, context, inverse=False)

    def inverse(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(y, context, inverse=True)


class CouplingSplineFlow(Flow):
    """A stack of :class:`SplineCoupling` layers on ℝⁿ × (circle)ᵐ, optionally conditional.

    Parameters
    ----------
    dim : number of coordinates D
    circular : (D,) bool mask of coordinates on [−π, π), or None
    n_couplings : layers; pairs of layers use complementary random halves of the coordinates
    hidden, n_hidden_layers : conditioner MLP size
    bins : spline bins
    tail_bound : real coordinates splined on [−B, B] (standardised data: 4–6)
    context_dim : context length for p(x | c), 0 for p(x)
    generator : seeded torch.Generator for the masks and the initial weights
    dtype, device : of the parameters (float32 or float64)
    halves : (n_couplings / 2, D) bool, the coordinates the first layer of every pair
        transforms (the second transforms the rest); default: random halves from ``generator``.
        A saved flow's halves rebuild it (:func:`molsamp.flows.boltzmann.load_boltzmann_generator`).

    ``options`` keeps the keyword arguments that set the architecture.
    """

    def __init__(
        self,
        dim: int,
        circular: torch.Tensor | None = None,
        *,
        n_couplings: int = 8,
        hidden: int = 128,
        n_hidden_layers: int = 2,
        bins: int = 8,
        tail_bound: float = 5.0,
        context_dim: int = 0,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        halves: torch.Tensor | None = None,
    ):
        super().__init__(dim, circular, context_dim)
        if n_couplings < 2 or n_couplings % 2:
            raise ValueError(f"n_couplings must be an even number >= 2, got {n_couplings}")
        if halves is None:
            halves = torch.zeros(n_couplings // 2, dim, dtype=torch.bool)
            for half in halves:
                half[torch.randperm(dim, generator=generator)[: dim // 2]] = True
        elif tuple(halves.shape) != (n_couplings // 2, dim):
            raise ValueError(
                f"halves must be (n_couplings / 2, dim) = ({n_couplings // 2}, {dim}), got {tuple(halves.shape)}"
            )
        self.options = {
            "n_couplings": n_couplings, "hidden": hidden, "n_hidden_layers": n_hidden_layers,
            "bins": bins, "tail_bound": float(tail_bound), "context_dim": context_dim,
        }  # fmt: skip
        layers = []
        for half in halves.bool().cpu():
            for mask in (half, ~half):
                layers.append(
                    SplineCoupling(
                        mask, self.circular, hidden, n_hidden_layers, bins, tail_bound, context_dim
                    )
                )
        self.layers = nn.ModuleList(layers)
        _initialise(self, generator)
        self.to(dtype=dtype, device=device)

    @property
    def halves(self) -> torch.Tensor:
        """(n_couplings / 2, D) bool: what the first layer of every pair transforms."""
        return torch.stack([layer.transformed for layer in self.layers[::2]]).cpu()

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Data x (B, D) → latent u (B, D), log|det ∂u/∂x| (B,)."""
        self._check(x, context)
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, log_det = layer(x, context)
            total = total + log_det
        return x, total

    def inverse(
        self, u: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent u (B, D) → data x (B, D), log|det ∂x/∂u| (B,)."""
        self._check(u, context)
        total = u.new_zeros(u.shape[0])
        for layer in reversed(self.layers):
            u, log_det = layer.inverse(u, context)
            total = total + log_det
        return u, total

    def _check(self, x: torch.Tensor, context: torch.Tensor | None) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"flow input must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if self.context_dim and (context is None or context.shape != (x.shape[0], self.context_dim)):
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"this flow is conditional: context must be (B, {self.context_dim}), got {got}")
        if not self.context_dim and context is not None:
            raise ValueError("this flow is unconditional (context_dim=0); pass context=None")


def _initialise(module: nn.Module, generator: torch.Generator) -> None:
    """Uniform ±1/√fan_in weights from ``generator``; conditioner heads start at zero, so every
    spline starts as the identity."""
    with torch.no_grad():
        for name, sub in module.named_modules():
            if isinstance(sub, nn.Linear):
                if name.endswith("head"):
                    sub.weight.zero_()
                    sub.bias.zero_()
                    continue
                bound = 1.0 / math.sqrt(sub.in_features)
                sub.weight.uniform_(-bound, bound, generator=generator)
                sub.bias.uniform_(-bound, bound, generator=generator)


__all__ = ["Flow", "CouplingSplineFlow", "SplineCoupling", "wrap"]
