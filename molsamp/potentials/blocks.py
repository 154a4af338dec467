"""Pieces shared by the message-passing potentials (MACE, TensorNet).

Radial basis with a smooth cutoff, a bias-free radial MLP, and aggregation of edge messages
onto atoms. Lengths in nm.
"""

from __future__ import annotations

import math

import torch


class BesselBasis(torch.nn.Module):
    """Radial Bessel functions √2 · sin(nπ x) / x with x = r / r_c, n = 1 … n_basis.

    (Gasteiger, Groß & Günnemann, DimeNet, ICLR 2020.) Written in the dimensionless x so the
    values are O(1) whatever the length unit; the frequencies nπ are trainable.

    Parameters
    ----------
    r_max : cutoff r_c, nm
    n_basis : number of functions
    """

    def __init__(self, r_max: float, n_basis: int = 8):
        super().__init__()
        if not r_max > 0:
            raise ValueError(f"r_max must be > 0 nm, got {r_max}")
        if n_basis < 1:
            raise ValueError(f"n_basis must be >= 1, got {n_basis}")
        self.r_max = float(r_max)
        self.frequencies = torch.nn.Parameter(
            math.pi * torch.arange(1, n_basis + 1, dtype=torch.get_default_dtype())
        )

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """r : (E,) nm → (E, n_basis), dimensionless."""
        x = r[:, None] / self.r_max
        return math.sqrt(2.0) * torch.sin(self.frequencies * x) / x


class PolynomialCutoff(torch.nn.Module):
    """Smooth envelope going to 0 at r_max like (1 − x)³: continuous energy and forces.

    f(x) = 1 − (p+1)(p+2)/2 x^p + p(p+2) x^{p+1} − p(p+1)/2 x^{p+2}, x = r / r_max, and
    f = 0 for x ≥ 1 (Gasteiger et al., DimeNet, 2020).
    """

    def __init__(self, r_max: float, p: int = 5):
        super().__init__()
        if p < 2:
            raise ValueError(f"p must be >= 2 for a smooth cutoff, got {p}")
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """r : (E,) nm → (E,) dimensionless."""
        p = self.p
        x = r / self.r_max
        f = (
            1.0
            - 0.5 * (p + 1) * (p + 2) * x.pow(p)
            + p * (p + 2) * x.pow(p + 1)
            - 0.5 * p * (p + 1) * x.pow(p + 2)
        )
        return f * (x < 1.0)


class RadialEmbedding(torch.nn.Module):
    """Bessel basis times the polynomial cutoff: (E,) nm → (E, n_basis), zero beyond r_max."""

    def __init__(self, r_max: float, n_basis: int = 8, p: int = 5):
        super().__init__()
        self.bessel = BesselBasis(r_max, n_basis)
        self.cutoff = PolynomialCutoff(r_max, p)
        self.n_basis = int(n_basis)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.bessel(r) * self.cutoff(r)[:, None]


class RadialMLP(torch.nn.Module):
    """Bias-free MLP with SiLU; with no biases, a zero input (r ≥ r_max) gives a zero output,
    so messages vanish smoothly at the cutoff.

    Parameters
    ----------
    sizes : layer widths [n_in, hidden…, n_out]
    """

    def __init__(self, sizes: list[int]):
        super().__init__()
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list >= 2 positive widths, got {sizes}")
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        for layer in self.layers:
            torch.nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < len(self.layers) - 1:
                x = torch.nn.functional.silu(x) * 1.679  # keeps unit variance (e3nn's norm)
        return x


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``values`` (E, …) into ``size`` bins given by ``index`` (E,)."""
    out = values.new_zeros((size, *values.shape[1:]))
    return out.index_add(0, index, values)


class ScalarReadout(torch.nn.Module):
    """Per-atom energy from invariant features: Linear → SiLU → Linear, or one Linear.

    Parameters
    ----------
    n_in : number of scalar features
    hidden : width of the hidden layer, or 0 for a linear readout
    """

    def __init__(self, n_in: int, hidden: int = 16):
        super().__init__()
        if hidden:
            self.net = torch.nn.Sequential(
                torch.nn.Linear(n_in, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 1)
            )
        else:
            self.net = torch.nn.Linear(n_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x : (M, n_in) → (M,)."""
        return self.net(x).squeeze(-1)
