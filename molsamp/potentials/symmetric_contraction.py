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
    """(n_monomials, ν) int64: the sorted index tuples m1 ≤ … ≤ mν of range(dim)."""
    return torch.tensor(
        list(itertools.combinations_with_replacement(range(dim), nu)), dtype=torch.int64
    ).reshape(-1, nu)


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

    def __init__(
        self, irreps_in: str, irreps_out: str, channels: int, n_elements: int, correlation: int
    ):
        super().__init__()
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        if any(mul != 1 for mul, _ in self.irreps_in) or any(
            mul != 1 for mul, _ in self.irreps_out
        ):
            raise ValueError(
                f"irreps_in {irreps_in} and irreps_out {irreps_out} must hold each irrep once; "
                "channels are given separately"
            )
        self.correlation = int(correlation)
        dim = self.irreps_in.dim
        dtype = torch.get_default_dtype()
        for nu in range(1, correlation + 1):
            self.register_buffer(
                f"monomials_{nu}", monomial_indices(dim, nu).clone(), persistent=False
            )
            if nu > 1:
                lookup = {tuple(m): k for k, m in enumerate(monomial_indices(dim, nu - 1).tolist())}
                prefix = [lookup[tuple(m[:-1])] for m in monomial_indices(dim, nu).tolist()]
                self.register_buffer(
                    f"prefix_{nu}", torch.tensor(prefix, dtype=torch.int64), persistent=False
                )
        self.weights = torch.nn.ParameterDict()
        self._couplings: dict[str, tuple[int, str]] = {}
        for _, ir in self.irreps_out:
            for nu in range(1, correlation + 1):
                u = symmetric_coupling(str(self.irreps_in), nu, str(ir)).to(dtype)
                self.register_buffer(f"u_{ir}_{nu}", u)
                self._couplings[f"u_{ir}_{nu}"] = (nu, str(ir))
                n_paths = u.shape[-1]
                w = torch.randn(n_elements, n_paths, channels, dtype=dtype)
                self.weights[f"{ir}_{nu}"] = torch.nn.Parameter(w / max(n_paths, 1) ** 0.5)

    def exact_buffers(self) -> dict[str, torch.Tensor]:
        """The coupling buffers in float64, to restore full precision after a dtype change."""
        return {
            name: symmetric_coupling(str(self.irreps_in), nu, ir)
            for name, (nu, ir) in self._couplings.items()
        }

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        products = [features]
        for nu in range(2, self.correlation + 1):
            # monomial (m1 … mν) = monomial (m1 … mν−1) of order ν−1 times feature mν
            prefix = getattr(self, f"prefix_{nu}")
            last = getattr(self, f"monomials_{nu}")[:, -1]
            products.append(
                products[-1].index_select(2, prefix) * features.index_select(2, last)
            )  # (M, C, n_monomials)
        outputs = []
        for _, ir in self.irreps_out:
            total = 0.0
            for nu, p in enumerate(products, start=1):
                u = getattr(self, f"u_{ir}_{nu}")
                if u.shape[-1] == 0:
                    continue
                w = self.weights[f"{ir}_{nu}"][species]  # (M, K, C)
                paths = torch.einsum("mck,Mkp->mcMp", p, u)
                total = total + torch.einsum("mcMp,mpc->mcM", paths, w)
            if isinstance(total, float):
                raise ValueError(
                    f"no symmetric product of {self.irreps_in} up to ν={self.correlation} "
                    f"gives {ir}; drop it from irreps_out"
                )
            outputs.append(total)
        return torch.cat(outputs, dim=-1)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}"


def channel_layout(x: torch.Tensor, irreps: o3.Irreps, channels: int) -> torch.Tensor:
    """e3nn layout (M, Σ mul·dim) with every mul == channels → (M, channels, Σ dim)."""
    blocks = [
        x[:, sl].reshape(-1, channels, ir.dim)
        for (mul, ir), sl in zip(irreps, irreps.slices(), strict=True)
    ]
    return torch.cat(blocks, dim=-1)


def e3nn_layout(x: torch.Tensor, irreps_per_channel: o3.Irreps) -> torch.Tensor:
    """(M, channels, Σ dim) → e3nn layout (M, channels·Σ dim) of "channels x ir + …"."""
    blocks = [x[:, :, sl].reshape(x.shape[0], -1) for sl in irreps_per_channel.slices()]
    return torch.cat(blocks, dim=-1)
