"""TensorNet: O(3)-equivariant message passing with rank-2 Cartesian tensors.

(Simeon & De Fabritiis, NeurIPS 2023.) Every atom carries ``hidden_channels`` 3×3 tensors
X, split into the isotropic I = tr(X)/3 · 1, antisymmetric A = (X − Xᵀ)/2 and symmetric
traceless S parts. Linear maps mix channels within each part; messages are sums of
neighbours' parts weighted by radial functions; the update uses the anticommutator
Y M + M Y, which keeps the grading (I, S even and A odd under inversion), so energies —
built from the norms of I, A and S — are invariant under rotations *and* reflections.
Written from the paper; the radial basis, cutoff and readout are molsamp's shared blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from molsamp.potentials.blocks import RadialEmbedding, ScalarReadout, scatter_sum
from molsamp.potentials.graph import GraphPotential


def decompose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(…, 3, 3) → isotropic, antisymmetric and symmetric-traceless parts (same shape)."""
    trace = torch.diagonal(x, dim1=-2, dim2=-1).sum(-1)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    iso = (trace / 3.0)[..., None, None] * eye
    transpose = x.transpose(-1, -2)
    return iso, 0.5 * (x - transpose), 0.5 * (x + transpose) - iso


def squared_norm(x: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius norm over the last two axes (smooth at 0, unlike the norm)."""
    return x.square().sum((-2, -1))


_SYM_ROWS = (0, 1, 2, 0, 0, 1)
_SYM_COLS = (0, 1, 2, 1, 2, 2)


def _vector_of_skew(a: torch.Tensor) -> torch.Tensor:
    """(…, 3, 3) antisymmetric → (…, 3) vector v with a = skew(v)."""
    return torch.stack([a[..., 2, 1], a[..., 0, 2], a[..., 1, 0]], dim=-1)


def _skew_of_vector(v: torch.Tensor) -> torch.Tensor:
    """(…, 3) → (…, 3, 3) with skew(v) u = v × u."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))


def _symmetric_of_six(c: torch.Tensor) -> torch.Tensor:
    """(…, 6) upper-triangle entries (xx, yy, zz, xy, xz, yz) → (…, 3, 3) symmetric."""
    xx, yy, zz, xy, xz, yz = c.unbind(-1)
    return torch.stack([xx, xy, xz, xy, yy, yz, xz, yz, zz], dim=-1).unflatten(-1, (3, 3))


def _compact_sum(
    n_atoms: int,
    receiver: torch.Tensor,
    weights: torch.Tensor,
    iso: torch.Tensor,
    vector: torch.Tensor,
    six: torch.Tensor,
) -> torch.Tensor:
    """Σ over edges into receivers of w_I·iso·1 + w_A·skew(vector) + w_S·sym(six), summed in
    compact form (1 + 3 + 6 numbers per channel instead of three 3×3 tensors).

    weights (E, C, 3); iso (E, C); vector (E, C, 3); six (E, C, 6) → (M, C, 3, 3)."""
    packed = torch.cat(
        [
            (weights[..., 0] * iso)[..., None],
            weights[..., 1, None] * vector,
            weights[..., 2, None] * six,
        ],
        dim=-1,
    )
    total = scatter_sum(packed, receiver, n_atoms)
    eye = torch.eye(3, dtype=total.dtype, device=total.device)
    return (
        total[..., 0, None, None] * eye + _skew_of_vector(total[..., 1:4]) + _symmetric_of_six(total[..., 4:])
    )


class ChannelLinear(torch.nn.Module):
    """Mix channels of (M, C, 3, 3) tensors with a (C_out, C_in) matrix; no bias (a bias
    would break equivariance of A and S)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.linear = torch.nn.Linear(c_in, c_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TensorNetLayer(torch.nn.Module):
    """One TensorNet interaction: normalise, mix, message, anticommutator, residual update."""

    def __init__(self, channels: int, n_radial: int):
        super().__init__()
        self.radial = torch.nn.Sequential(
            torch.nn.Linear(n_radial, channels),
            torch.nn.SiLU(),
            torch.nn.Linear(channels, 2 * channels),
            torch.nn.SiLU(),
            torch.nn.Linear(2 * channels, 3 * channels),
            torch.nn.SiLU(),
        )
        self.mix_in = torch.nn.ModuleList(ChannelLinear(channels, channels) for _ in range(3))
        self.mix_out = torch.nn.ModuleList(ChannelLinear(channels, channels) for _ in range(3))
        self.channels = channels

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        radial: torch.Tensor,
        envelope: torch.Tensor,
    ) -> torch.Tensor:
        """x (M, C, 3, 3), edge_index (2, E), radial (E, n_radial), envelope (E,)."""
        receiver, sender = edge_index
        weights = (self.radial(radial) * envelope[:, None]).reshape(-1, self.channels, 3)
        x = x / (squared_norm(x) + 1.0)[..., None, None]
        iso, anti, sym = (mix(p) for mix, p in zip(self.mix_in, decompose(x), strict=True))
        y = iso + anti + sym
        m = _compact_sum(
            x.shape[0],
            receiver,
            weights,
            iso[sender, :, 0, 0],
            _vector_of_skew(anti)[sender],
            sym[..., _SYM_ROWS, _SYM_COLS][sender],
        )
        iso, anti, sym = decompose(y @ m + m @ y)
        scale = (squared_norm(iso + anti + sym) + 1.0)[..., None, None]
        iso, anti, sym = (mix(p / scale) for mix, p in zip(self.mix_out, (iso, anti, sym), strict=True))
        dx = iso + anti + sym
        return x + dx + dx @ dx


class TensorNet(GraphPotential):
    """TensorNet interatomic potential; energies in kJ/mol, lengths in nm.

    Parameters
    ----------
    elements : atomic numbers the model supports
    r_max : cutoff, nm
    hidden_channels : number of 3×3 tensor channels per atom
    num_layers : interaction layers
    num_radial : radial basis functions (shared Bessel basis × polynomial envelope)
    num_polynomial_cutoff : p of the envelope
    readout_hidden : hidden width of the energy MLP (0: linear)
    skin : Verlet skin (nm) of the neighbour cache used in MD
    dtype : parameter dtype (the global default is never changed)
    """

    zero_beyond_cutoff = True  # polynomial envelope × radial weights and pair embeddings

    def __init__(
        self,
        elements: Sequence[int],
        *,
        r_max: float = 0.5,
        hidden_channels: int = 64,
        num_layers: int = 2,
        num_radial: int = 16,
        num_polynomial_cutoff: int = 5,
        readout_hidden: int = 64,
        skin: float = 0.05,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(elements, r_max, skin)
        if hidden_channels < 1 or num_layers < 0:
            raise ValueError(
                f"hidden_channels must be >= 1 and num_layers >= 0, got {hidden_channels} and {num_layers}"
            )
        self._hyper = {
            "elements": list(self.elements),
            "r_max": float(r_max),
            "hidden_channels": int(hidden_channels),
            "num_layers": int(num_layers),
            "num_radial": int(num_radial),
            "num_polynomial_cutoff": int(num_polynomial_cutoff),
            "readout_hidden": int(readout_hidden),
            "skin": float(skin),
        }
        c = hidden_channels
        self.channels = c
        self.radial_embedding = RadialEmbedding(r_max, num_radial, num_polynomial_cutoff)
        self.embedding = torch.nn.Embedding(self.n_elements, c)
        self.pair = torch.nn.Linear(2 * c, c)
        self.edge_parts = torch.nn.Linear(num_radial, 3 * c)
        self.embed_mix = torch.nn.ModuleList(ChannelLinear(c, c) for _ in range(3))
        self.embed_norm = torch.nn.LayerNorm(c)
        self.embed_scale = torch.nn.Sequential(
            torch.nn.Linear(c, 2 * c),
            torch.nn.SiLU(),
            torch.nn.Linear(2 * c, 3 * c),
            torch.nn.SiLU(),
        )
        self.layers = torch.nn.ModuleList(TensorNetLayer(c, num_radial) for _ in range(num_layers))
        self.out_norm = torch.nn.LayerNorm(3 * c)
        self.readout = ScalarReadout(3 * c, readout_hidden)
        if dtype is not None:
            self.to(dtype)

    def _atom_energies(
        self, species: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        dtype = self.atomic_energies.dtype
        vectors = vectors.to(dtype)
        receiver, sender = edge_index
        lengths = torch.linalg.norm(vectors, dim=-1)
        unit = vectors / lengths[:, None]
        radial = self.radial_embedding(lengths)
        envelope = self.radial_embedding.cutoff(lengths)
        n_atoms, c = species.shape[0], self.channels
        # embedding: X_i = Σ_j φ(r) Z_ij ⊙ (f_I 1 + f_A skew(r̂) + f_S (r̂ r̂ᵀ − 1/3))
        h = self.embedding(species)
        z_ij = self.pair(torch.cat([h[receiver], h[sender]], dim=-1)) * envelope[:, None]
        f = self.edge_parts(radial).reshape(-1, c, 3) * z_ij[:, :, None]
        eye = torch.eye(3, dtype=dtype, device=vectors.device)
        outer = unit[:, :, None] * unit[:, None, :] - eye / 3.0
        x = _compact_sum(
            n_atoms,
            receiver,
            f,
            torch.ones_like(f[..., 0]),
            unit[:, None, :].expand(-1, c, 3),
            outer[:, None, _SYM_ROWS, _SYM_COLS].expand(-1, c, 6),
        )
        scales = self.embed_scale(self.embed_norm(squared_norm(x))).reshape(n_atoms, c, 3)
        parts = [mix(p) for mix, p in zip(self.embed_mix, decompose(x), strict=True)]
        x = sum(scales[:, :, k, None, None] * parts[k] for k in range(3))
        for layer in self.layers:
            x = layer(x, edge_index, radial, envelope)
        invariants = torch.cat([squared_norm(p) for p in decompose(x)], dim=-1)
        return self.readout(self.out_norm(invariants))
