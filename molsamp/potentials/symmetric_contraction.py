"""MACE's product basis: symmetric ν-fold products of atomic features, projected on irreps.

For each channel c and atom of element z, the output irrep (L, M) is

    B_{c,LM} = Σ_{ν=1..n} Σ_k W^{ν,L}_{z,k,c} Σ_{m1 ≤ … ≤ mν} U^{ν,L}_{M,(m1…mν),k} A_{c,m1} ⋯ A_{c,mν}

(Batatia et al., NeurIPS 2022, eq. 10). U are generalised Clebsch–Gordan coefficients: the
equivariant maps from the symmetric power Sym^ν(irreps_in) onto L, found with
``e3nn.o3.ReducedTensorProducts``. We sum each U over the permutations of its indices once, so
the contraction runs over the distinct monomials A_{m1}⋯A_{mν} (16 + 136 + 816 for ν ≤ 3 and
0e+1o+2e+3o features) instead of the full 16^ν tensor: memory O(atoms · channels · monomials).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
from e3nn import o3


@functools.lru_cache(maxsize=16)
def symmetric_coupling(irreps_in: str, nu: int, irrep_out: str) -> torch.Tensor:
    """U^{ν,L} summed over index permutations, float64 on CPU, orthonormal paths.

    Built from e3nn's float64 Wigner 3j symbols by coupling one input irrep at a time
    (((ir1 ⊗ ir2) → λ) ⊗ ir3) → … → L; every coupled tensor is equivariant, and so is its
    projection on the symmetric monomials. Linear dependences between paths are removed by
    an SVD over the path index only (which keeps equivariance exact).

    Parameters
    ----------
    irreps_in : irreps of one channel's features, each irrep once (e.g. "0e+1o+2e+3o")
    nu : correlation order ν >= 1
    irrep_out : the output irrep L (e.g. "1o")

    Returns
    -------
    (2L+1, n_monomials, n_paths) tensor; monomials are the sorted index tuples of
    :func:`monomial_indices`. n_paths may be 0.
    """
    irreps_in = o3.Irreps(irreps_in)
    ir_out = o3.Irrep(irrep_out)
    dim = irreps_in.dim
    blocks = [(ir, sl) for (_, ir), sl in zip(irreps_in, irreps_in.slices(), strict=True)]
    # partial couplings: (irrep, tensor of shape (dim,)*k + (ir.dim,))
    partial = []
    for ir, sl in blocks:
        t = torch.zeros(dim, ir.dim, dtype=torch.float64)
        t[sl] = torch.eye(ir.dim, dtype=torch.float64)
        partial.append((ir, t))
    for _ in range(nu - 1):
        coupled = []
        for ir1, t in partial:
            for ir2, sl in blocks:
                for ir in ir1 * ir2:
                    w3j = o3.wigner_3j(ir1.l, ir2.l, ir.l, dtype=torch.float64)
                    expanded = torch.zeros(dim, ir1.dim, ir.dim, dtype=torch.float64)
                    expanded[sl] = w3j.transpose(0, 1)  # (ir2.dim, ir1.dim, ir.dim)
                    coupled.append((ir, torch.einsum("...a,cab->...cb", t, expanded)))
        partial = coupled
    tensors = [t for ir, t in partial if ir == ir_out]
    monomials = monomial_indices(dim, nu)
    if not tensors:
        return torch.zeros(ir_out.dim, len(monomials), 0, dtype=torch.float64)
    u = torch.stack(tensors, dim=-1)  # (dim,)*ν + (2L+1, K)
    symmetric = sum(
        u.permute(*perm, nu, nu + 1) for perm in itertools.permutations(range(nu))
    ) / math.factorial(nu)
    distinct = torch.tensor(
        [len(set(itertools.permutations(m))) for m in monomials.tolist()], dtype=torch.float64
    )
    on_monomials = symmetric[tuple(monomials.T)] * distinct[:, None, None]  # (n_mono, 2L+1, K)
    matrix = on_monomials.permute(1, 0, 2).reshape(-1, u.shape[-1])
    left, singular, _ = torch.linalg.svd(matrix, full_matrices=False)
    rank = int((singular > 1e-9 * singular[0]).sum())
    return left[:, :rank].reshape(ir_out.dim, len(monomials), rank).contiguous()


@functools.lru_cache(maxsize=16)
def monomial_indices(dim: int, nu: int) -> torch.Tensor:
    """(n_monomials, ν) int64: index tuples m1 ≤ … ≤ mν of range(dim) in colexicographic
    order, so the monomials whose largest index is ≤ c come first (see ``_products``)."""
    combos = itertools.combinations_with_replacement(range(dim), nu)
    return torch.tensor(sorted(combos, key=lambda t: t[::-1]), dtype=torch.int64).reshape(-1, nu)


def _path_values(features: torch.Tensor, couplings: list[torch.Tensor]) -> list[torch.Tensor]:
    """Σ_monomials U^ν[monomial, x] · monomial(features) for ν = 1 … len(couplings).

    features : (…, D); couplings[ν−1] : (n_monomials(D, ν), X_ν) in :func:`monomial_indices`
    order. Returns [(…, X_ν)]. In colex order the degree-ν monomials ending in index c are
    (the degree-(ν−1) monomials with largest index ≤ c, a prefix) × feature c, so each block
    is a slice times a column and is contracted at once: no gathers and no full-size
    concatenation of the top degree, whose backward-of-backward (force training) dominated.
    """
    dim = features.shape[-1]
    values = [features @ couplings[0]]
    previous = features
    for nu in range(2, len(couplings) + 1):
        u = couplings[nu - 1]
        total, blocks, start = 0.0, [], 0
        for c in range(dim):
            size = math.comb(c + nu - 1, nu - 1)
            block = previous[..., :size] * features[..., c : c + 1]
            total = total + block @ u[start : start + size]
            start += size
            if nu < len(couplings):
                blocks.append(block)
        values.append(total)
        if blocks:
            previous = torch.cat(blocks, dim=-1)
    return values


class SymmetricContraction(torch.nn.Module):
    """Species-dependent symmetric contraction (MACE product basis) up to correlation ν.

    Parameters
    ----------
    irreps_in : one channel's feature irreps, each irrep once, e.g. "0e+1o+2e+3o"
    irreps_out : output irreps per channel, each once, e.g. "0e+1o"
    channels : number of channels (features are (M, channels, irreps_in.dim))
    n_elements : number of elements (weights W_{z,k,c} per element)
    correlation : maximum ν

    Input ``features`` (M, channels, dim_in) and ``species`` (M,) int64; output
    (M, channels, irreps_out.dim).
    """

    def __init__(self, irreps_in: str, irreps_out: str, channels: int, n_elements: int, correlation: int):
        super().__init__()
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        if any(mul != 1 for mul, _ in self.irreps_in) or any(mul != 1 for mul, _ in self.irreps_out):
            raise ValueError(
                f"irreps_in {irreps_in} and irreps_out {irreps_out} must hold each irrep once; "
                "channels are given separately"
            )
        self.correlation = int(correlation)
        self._output_names = tuple(str(ir) for _, ir in self.irreps_out)  # plain strings: compilable
        dtype = torch.get_default_dtype()
        self.weights = torch.nn.ParameterDict()
        # per ν one coupling matrix (n_monomials, X_ν), the outputs' (2L+1)·paths side by side
        self._layout: dict[int, list[tuple[str, int, int, int]]] = {}
        for nu in range(1, correlation + 1):
            columns, layout, offset = [], [], 0
            for _, ir in self.irreps_out:
                u = symmetric_coupling(str(self.irreps_in), nu, str(ir))  # (2L+1, n_mono, K)
                n_paths = u.shape[-1]
                if n_paths:
                    columns.append(u.permute(1, 0, 2).reshape(u.shape[1], -1))
                    layout.append((str(ir), offset, ir.dim, n_paths))
                    offset += ir.dim * n_paths
                    w = torch.randn(n_elements, n_paths, channels, dtype=dtype)
                    self.weights[f"{ir}_{nu}"] = torch.nn.Parameter(w / n_paths**0.5)
            self._layout[nu] = layout
            self.register_buffer(f"u_{nu}", torch.cat(columns, dim=1).to(dtype))
        for _, ir in self.irreps_out:
            if not any(name == str(ir) for layout in self._layout.values() for name, *_ in layout):
                raise ValueError(
                    f"no symmetric product of {self.irreps_in} up to ν={correlation} "
                    f"gives {ir}; drop it from irreps_out"
                )

    def exact_buffers(self) -> dict[str, torch.Tensor]:
        """The coupling buffers in float64, to restore full precision after a dtype change."""
        exact = {}
        for nu, layout in self._layout.items():
            columns = []
            for name, *_ in layout:
                u = symmetric_coupling(str(self.irreps_in), nu, name)
                columns.append(u.permute(1, 0, 2).reshape(u.shape[1], -1))
            exact[f"u_{nu}"] = torch.cat(columns, dim=1)
        return exact

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        couplings = [getattr(self, f"u_{nu}") for nu in range(1, self.correlation + 1)]
        values = _path_values(features, couplings)  # [(M, C, X_ν)]
        outputs = dict.fromkeys(self._output_names, 0.0)
        for nu, layout in self._layout.items():
            for name, offset, dim, n_paths in layout:
                paths = values[nu - 1][..., offset : offset + dim * n_paths]
                paths = paths.unflatten(-1, (dim, n_paths))
                w = self.weights[f"{name}_{nu}"][species]  # (M, K, C)
                outputs[name] = outputs[name] + torch.einsum("mcdp,mpc->mcd", paths, w)
        return torch.cat(list(outputs.values()), dim=-1)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}"


def irrep_blocks(irreps: o3.Irreps) -> tuple[tuple[int, int, int], ...]:
    """(start, stop, irrep dim) of each block of ``irreps`` in e3nn's layout: plain integers,
    which ``torch.compile`` can guard on (e3nn's ``Irrep`` cannot be measured by dynamo)."""
    return tuple((sl.start, sl.stop, ir.dim) for (_, ir), sl in zip(irreps, irreps.slices(), strict=True))


def channel_layout(x: torch.Tensor, blocks: Sequence[tuple[int, int, int]], channels: int) -> torch.Tensor:
    """e3nn layout (M, Σ mul·dim) with every mul == channels → (M, channels, Σ dim);
    ``blocks`` from :func:`irrep_blocks`."""
    return torch.cat([x[:, start:stop].reshape(-1, channels, dim) for start, stop, dim in blocks], dim=-1)


def e3nn_layout(x: torch.Tensor, blocks_per_channel: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """(M, channels, Σ dim) → e3nn layout (M, channels·Σ dim) of "channels x ir + …";
    ``blocks_per_channel`` from :func:`irrep_blocks` of one channel's irreps."""
    return torch.cat(
        [x[:, :, start:stop].reshape(x.shape[0], -1) for start, stop, _ in blocks_per_channel], dim=-1
    )
