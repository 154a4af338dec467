"""MACE: higher-order equivariant message passing (Batatia et al., NeurIPS 2022).

Written on e3nn from the paper. Each layer: a channel-wise convolution of neighbour
features with spherical harmonics, weighted by a radial MLP, summed and divided by the
average neighbour count (the atomic basis A); the species-dependent symmetric product basis
B of correlation ν (:mod:`molsamp.potentials.symmetric_contraction`); a linear map plus a
species-dependent self-connection; a readout to per-atom energy (linear on all layers but
the last, an MLP on the last).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from e3nn import o3

from molsamp.potentials.blocks import RadialEmbedding, RadialMLP, ScalarReadout, scatter_sum
from molsamp.potentials.graph import GraphPotential
from molsamp.potentials.symmetric_contraction import (
    SymmetricContraction,
    channel_layout,
    e3nn_layout,
    irrep_blocks,
)


def _match_generated_constants(module: torch.nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """Load hook for the constants e3nn generates (``*._tensor_constant*``, fixed Wigner-3j
    blocks): supply those a state_dict saved without them lacks, drop those this module lacks."""
    own = {name: buffer for name, buffer in module.named_buffers() if "._tensor_constant" in name}
    for name, buffer in own.items():
        state_dict.setdefault(prefix + name, buffer)
    for key in [k for k in state_dict if k.startswith(prefix) and "._tensor_constant" in k]:
        if key[len(prefix) :] not in own:
            del state_dict[key]


class MACELayer(torch.nn.Module):
    """One MACE interaction + product block.

    Parameters
    ----------
    irreps_node : irreps of the incoming node features
    irreps_sh : spherical-harmonics irreps, e.g. "1x0e+1x1o+1x2e+1x3o"
    irreps_out : irreps of the outgoing node features (every irrep with ``channels`` copies)
    channels : number of channels
    n_elements, n_radial, radial_hidden, correlation : see :class:`MACE`
    """

    def __init__(
        self,
        irreps_node: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_out: o3.Irreps,
        channels: int,
        n_elements: int,
        n_radial: int,
        radial_hidden: Sequence[int],
        correlation: int,
    ):
        super().__init__()
        self.channels = channels
        self.irreps_sh = irreps_sh
        self.irreps_out = irreps_out
        self.linear_up = o3.Linear(irreps_node, irreps_node)
        # channel-wise ("uvu") products node ⊗ Y, kept when the result is an irrep of Y
        wanted = {ir for _, ir in irreps_sh}
        mid, instructions = [], []
        for i1, (mul, ir1) in enumerate(irreps_node):
            for i2, (_, ir2) in enumerate(irreps_sh):
                for ir in ir1 * ir2:
                    if ir in wanted:
                        instructions.append((i1, i2, len(mid), "uvu", True))
                        mid.append((mul, ir))
        conv = o3.TensorProduct(
            irreps_node,
            irreps_sh,
            o3.Irreps(mid),
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        # e3nn re-traces its generated code when a module is copied, and the re-trace can turn
        # a folded Wigner-3j block into a new buffer (max_ell ≥ 3, 16 channels): keep the copied
        # form, so that copies (the training EMA, ensemble members) have this module's keys
        self.conv = copy.deepcopy(conv)
        self.register_load_state_dict_pre_hook(_match_generated_constants)
        self.radial = RadialMLP([n_radial, *radial_hidden, self.conv.weight_numel])
        irreps_atomic = o3.Irreps([(channels, ir) for _, ir in irreps_sh])
        self.linear_message = o3.Linear(o3.Irreps(mid), irreps_atomic)
        out_per_channel = o3.Irreps([(1, ir) for _, ir in irreps_out])
        self._atomic_blocks = irrep_blocks(irreps_atomic)  # plain integers: compilable
        self._out_blocks = irrep_blocks(out_per_channel)
        self.product = SymmetricContraction(
            str(o3.Irreps([(1, ir) for _, ir in irreps_sh])),
            str(out_per_channel),
            channels,
            n_elements,
            correlation,
        )
        self.linear_product = o3.Linear(irreps_out, irreps_out)
        self.self_connection = o3.FullyConnectedTensorProduct(
            irreps_node, o3.Irreps(f"{n_elements}x0e"), irreps_out
        )

    def forward(
        self,
        node: torch.Tensor,
        one_hot: torch.Tensor,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        sh: torch.Tensor,
        radial: torch.Tensor,
        avg_num_neighbors: torch.Tensor,
    ) -> torch.Tensor:
        """node (M, irreps_node.dim), one_hot (M, n_elements), species (M,), edge_index
        (2, E), sh (E, irreps_sh.dim), radial (E, n_radial) → (M, irreps_out.dim)."""
        receiver, sender = edge_index
        skip = self.self_connection(node, one_hot)
        h = self.linear_up(node)
        messages = self.conv(h[sender], sh, self.radial(radial))
        atomic = scatter_sum(messages, receiver, node.shape[0]) / avg_num_neighbors
        atomic = self.linear_message(atomic)
        basis = self.product(channel_layout(atomic, self._atomic_blocks, self.channels), species)
        return self.linear_product(e3nn_layout(basis, self._out_blocks)) + skip


class MACE(GraphPotential):
    """MACE interatomic potential; energies in kJ/mol, lengths in nm.

    Parameters
    ----------
    elements : atomic numbers the model supports
    r_max : cutoff, nm (0.5 nm = 5 Å)
    num_bessel : radial Bessel functions
    num_polynomial_cutoff : p of the polynomial cutoff envelope
    max_ell : highest degree of the spherical harmonics
    correlation : body order of the product basis minus one (ν)
    num_interactions : number of layers
    hidden_irreps : node features between layers, e.g. "64x0e+64x1o"; every irrep must have
        the same multiplicity (the number of channels); the last layer keeps only the scalars
    radial_mlp : hidden widths of the radial MLP
    readout_hidden : hidden width of the last layer's readout MLP
    avg_num_neighbors : initial value of the buffer messages are divided by (training sets
        it from the data)
    skin : Verlet skin (nm) of the neighbour cache used in MD
    dtype : parameter dtype (the global default dtype is never changed)

    Call ``fit``-style statistics through :mod:`molsamp.potentials.training` or set the
    ``atomic_energies``, ``scale``, ``shift`` and ``avg_num_neighbors`` buffers directly.
    """

    zero_beyond_cutoff = True  # polynomial envelope × bias-free radial MLP

    def __init__(
        self,
        elements: Sequence[int],
        *,
        r_max: float = 0.5,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        max_ell: int = 3,
        correlation: int = 3,
        num_interactions: int = 2,
        hidden_irreps: str = "64x0e+64x1o",
        radial_mlp: Sequence[int] = (64, 64, 64),
        readout_hidden: int = 16,
        avg_num_neighbors: float = 10.0,
        skin: float = 0.05,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(elements, r_max, skin)
        self.avg_num_neighbors.fill_(avg_num_neighbors)
        hidden = o3.Irreps(hidden_irreps).sort().irreps.simplify()  # scalars first
        channels = {mul for mul, _ in hidden}
        if len(channels) != 1 or o3.Irrep("0e") not in [ir for _, ir in hidden]:
            raise ValueError(
                f"hidden_irreps must contain 0e and give every irrep the same multiplicity "
                f"(the channel count), e.g. '64x0e+64x1o'; got {hidden_irreps!r}"
            )
        if num_interactions < 1:
            raise ValueError(f"num_interactions must be >= 1, got {num_interactions}")
        if max_ell < 0:
            raise ValueError(f"max_ell must be >= 0, got {max_ell}")
        self._hyper = {
            "elements": list(self.elements),
            "r_max": float(r_max),
            "num_bessel": int(num_bessel),
            "num_polynomial_cutoff": int(num_polynomial_cutoff),
            "max_ell": int(max_ell),
            "correlation": int(correlation),
            "num_interactions": int(num_interactions),
            "hidden_irreps": str(hidden),
            "radial_mlp": [int(w) for w in radial_mlp],
            "readout_hidden": int(readout_hidden),
            "avg_num_neighbors": float(avg_num_neighbors),
            "skin": float(skin),
        }
        (n_channels,) = channels
        n_el = self.n_elements
        self.radial_embedding = RadialEmbedding(r_max, num_bessel, num_polynomial_cutoff)
        self.irreps_sh = o3.Irreps.spherical_harmonics(max_ell)
        self.spherical_harmonics = o3.SphericalHarmonics(
            self.irreps_sh, normalize=True, normalization="component"
        )
        scalars = o3.Irreps(f"{n_channels}x0e")
        self.embedding = o3.Linear(o3.Irreps(f"{n_el}x0e"), scalars)
        self.layers = torch.nn.ModuleList()
        self.readouts = torch.nn.ModuleList()
        irreps_node = scalars
        for layer in range(num_interactions):
            last = layer == num_interactions - 1
            irreps_out = scalars if last else hidden
            self.layers.append(
                MACELayer(
                    irreps_node,
                    self.irreps_sh,
                    irreps_out,
                    n_channels,
                    n_el,
                    num_bessel,
                    list(radial_mlp),
                    correlation,
                )  # fmt: skip
            )
            self.readouts.append(ScalarReadout(n_channels, readout_hidden if last else 0))
            irreps_node = irreps_out
        self.n_channels = n_channels
        if dtype is not None:
            self.to(dtype)

    def _atom_energies(
        self, species: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        dtype = self.atomic_energies.dtype
        vectors = vectors.to(dtype)
        one_hot = torch.nn.functional.one_hot(species, self.n_elements).to(dtype)
        lengths = torch.linalg.norm(vectors, dim=-1)
        radial = self.radial_embedding(lengths)
        sh = self.spherical_harmonics(vectors)
        node = self.embedding(one_hot)
        energy = torch.zeros(species.shape[0], dtype=dtype, device=vectors.device)
        for layer, readout in zip(self.layers, self.readouts, strict=True):
            node = layer(node, one_hot, species, edge_index, sh, radial, self.avg_num_neighbors)
            energy = energy + readout(node[:, : self.n_channels])
        return energy
