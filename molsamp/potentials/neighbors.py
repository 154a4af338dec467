"""Neighbour lists for message-passing potentials: pairs within a cutoff, with periodic images.

A pair list is found without gradients (it is piecewise constant in the positions), as
``edge_index`` (2, E) = (i, j) and integer ``shifts`` (E, 3) in units of the box vectors.
Edge vectors are then rebuilt with gradients, ``r_ij = x_j − x_i + shifts @ cell``, so forces
(∂E/∂x) and stress (∂E/∂cell) come from autograd through them.

Choice of algorithm
-------------------
* CPU tensors use `vesin <https://github.com/Luthaf/vesin>`_ (cell lists, O(N), any triclinic
  cell, cutoffs longer than the box, unwrapped positions; a small, maintained C++ library with
  numpy bindings and wheels on PyPI). It is the fastest option we measured on CPU and needs no
  compilation.
* Other devices (and CPU when vesin is not installed) use a pure-torch all-pairs search over
  the periodic images that can lie within the cutoff: O(N² · images), exact, runs on the
  tensors' device, fine for the small systems and batches it is meant for.

Both give the same pairs (tests check this), in different orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

try:  # optional fast path, see the module docstring
    import vesin as _vesin
except ImportError:  # pragma: no cover - exercised only without vesin
    _vesin = None


_BATCHED_PAIR_BUDGET = 2**24  # candidate pairs searched at once (memory ~ 16 bytes each)
# vesin 0.x kills the process (SIGFPE, an integer division by zero) on isolated structures
# whose bounding box is wide and flat, e.g. 400 × 400 × 0.5 nm at a 0.5 nm cutoff: the states
# of an exploding rollout. Isolated structures wider than this many cutoffs use the torch search.
_VESIN_ISOLATED_SPAN_CUTOFFS = 100.0


@dataclass(frozen=True)
class PairList:
    """Pairs of a batch of structures, flattened over all their atoms.

    Attributes
    ----------
    edge_index : (2, E) int64; row 0 the centre atom i, row 1 the neighbour j (flat indices)
    shifts : (E, 3) float, whole numbers of box vectors added to x_j (zeros without a cell)
    """

    edge_index: torch.Tensor
    shifts: torch.Tensor


def edge_vectors(
    positions: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
    cell: torch.Tensor | None,
    batch: torch.Tensor,
) -> torch.Tensor:
    """Differentiable edge vectors r_ij = x_j − x_i + shifts · cell.

    Parameters
    ----------
    positions : (M, 3) tensor, nm, all atoms of all structures
    edge_index : (2, E) int64 flat atom indices (i, j)
    shifts : (E, 3) tensor of whole numbers of box vectors
    cell : (S, 3, 3) tensor, nm, box vectors as rows, one per structure, or None
    batch : (M,) int64 structure index of every atom

    Returns
    -------
    (E, 3) tensor, nm
    """
    i, j = edge_index
    vectors = positions[j] - positions[i]
    if cell is not None:
        vectors = vectors + torch.einsum("ek,ekl->el", shifts.to(cell.dtype), cell[batch[i]])
    return vectors


def neighbor_pairs(
    positions: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor,
    n_structures: int,
    cell: torch.Tensor | None = None,
    pbc: tuple[bool, bool, bool] = (True, True, True),
    *,
    backend: str = "auto",
) -> PairList:
    """All ordered pairs (i, j), i ≠ j or a non-zero image, with |r_ij| < cutoff.

    Parameters
    ----------
    positions : (M, 3) tensor, nm (need not be wrapped into the box)
    cutoff : nm, > 0
    batch : (M,) int64 structure index per atom, sorted (atoms of a structure contiguous)
    n_structures : S, the number of structures
    cell : (S, 3, 3) tensor, nm, box vectors as rows, or None for isolated structures
    pbc : periodic along each box vector (used only with a cell)
    backend : "auto" (vesin on CPU if installed, else torch), "vesin" or "torch"

    Returns
    -------
    PairList on the positions' device; no gradients flow through it.
    """
    if not cutoff > 0:
        raise ValueError(f"cutoff must be > 0 nm, got {cutoff}")
    if backend not in ("auto", "vesin", "torch"):
        raise ValueError(f"backend must be 'auto', 'vesin' or 'torch', got {backend!r}")
    if cell is not None and tuple(cell.shape) != (n_structures, 3, 3):
        raise ValueError(f"cell must have shape (S, 3, 3) = ({n_structures}, 3, 3), got {tuple(cell.shape)}")
    use_vesin = backend == "vesin" or (
        backend == "auto" and _vesin is not None and positions.device.type == "cpu"
    )
    if use_vesin and _vesin is None:
        raise ImportError("backend='vesin' needs the vesin package: pip install vesin")
    counts = torch.bincount(batch, minlength=n_structures).tolist()
    if (
        not use_vesin
        and (cell is None or not any(pbc))
        and len(set(counts)) == 1
        and n_structures * counts[0] ** 2 <= _BATCHED_PAIR_BUDGET
    ):  # B walkers of one molecule (the MD path on a GPU): one search for all of them
        return _torch_pairs_same_size(positions, cutoff, n_structures)
    starts = [0]
    for count in counts[:-1]:
        starts.append(starts[-1] + count)
    isolated = cell is None or not any(pbc)
    edges, shifts = [], []
    with torch.no_grad():
        for s, (start, count) in enumerate(zip(starts, counts, strict=True)):
            x = positions[start : start + count].detach()
            box = None if cell is None else cell[s].detach()
            search = _vesin_pairs if use_vesin else _torch_pairs
            if use_vesin and isolated and count > 0:
                span = float((x.amax(0) - x.amin(0)).max())
                if span > _VESIN_ISOLATED_SPAN_CUTOFFS * cutoff:
                    search = _torch_pairs
            i, j, shift = search(x, cutoff, box, pbc)
            edges.append(torch.stack([i, j]) + start)
            shifts.append(shift)
    return PairList(torch.cat(edges, dim=1), torch.cat(shifts).to(positions.dtype))


def _vesin_pairs(x, cutoff, box, pbc):
    import numpy as np

    xyz = x.to("cpu", torch.float64).numpy()
    periodic = box is not None and any(pbc)
    box_np = np.zeros((3, 3)) if box is None else box.to("cpu", torch.float64).numpy()
    finder = _vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s = finder.compute(xyz, box_np, list(pbc) if periodic else False, "ijS")
    device = x.device
    return (
        torch.from_numpy(i.astype(np.int64)).to(device),
        torch.from_numpy(j.astype(np.int64)).to(device),
        torch.from_numpy(s.astype(np.float64)).to(device),
    )


def _torch_pairs_same_size(positions: torch.Tensor, cutoff: float, n_structures: int) -> PairList:
    """Isolated structures of equal size, searched together: (S, n, n) distances, one
    ``nonzero``. Same pairs in the same order as searching each structure in turn."""
    with torch.no_grad():
        x = positions.detach().reshape(n_structures, -1, 3)
        n = x.shape[1]
        within = (x[:, None, :, :] - x[:, :, None, :]).square().sum(-1) < cutoff * cutoff
        within &= ~torch.eye(n, dtype=torch.bool, device=x.device)
        s, i, j = torch.nonzero(within, as_tuple=True)
        edge_index = torch.stack([i, j]) + s * n
    return PairList(edge_index, torch.zeros(edge_index.shape[1], 3, dtype=positions.dtype, device=x.device))


def _torch_pairs(x, cutoff, box, pbc):
    n = x.shape[0]
    device = x.device
    if box is None or not any(pbc):
        images = torch.zeros(1, 3, dtype=x.dtype, device=device)
        offset = torch.zeros_like(x)
        wrapped = x
    else:
        inverse = torch.linalg.inv(box)
        fractional = x @ inverse
        floor = torch.where(
            torch.tensor(pbc, device=device), torch.floor(fractional), torch.zeros_like(fractional)
        )
        offset = floor  # x = wrapped + floor @ box
        wrapped = x - floor @ box
        # plane spacing along box vector k is 1 / |column k of inv(box)|
        spacing = 1.0 / torch.linalg.norm(inverse, dim=0)
        reach = [math.ceil(cutoff / float(d)) if p else 0 for d, p in zip(spacing, pbc, strict=True)]
        ranges = [torch.arange(-r, r + 1, device=device, dtype=x.dtype) for r in reach]
        images = torch.cartesian_prod(*ranges)
    image_vectors = images @ box if box is not None and any(pbc) else images
    delta = wrapped[None, :, None, :] - wrapped[:, None, None, :] + image_vectors[None, None]
    within = (delta * delta).sum(-1) < cutoff * cutoff  # (n, n, K)
    zero_image = (images == 0).all(-1)
    within &= ~(torch.eye(n, dtype=torch.bool, device=device)[:, :, None] & zero_image)
    i, j, k = torch.nonzero(within, as_tuple=True)
    shifts = images[k] - offset[j] + offset[i]
    return i, j, shifts


class NeighborCache:
    """Verlet-skin cache of a pair list for MD: rebuilt only when needed.

    Pairs are searched out to ``cutoff + skin`` and reused while no atom has moved more than
    ``skin / 2`` since the last search and the cell, atom count and device are unchanged;
    callers drop pairs longer than ``cutoff`` from the edge vectors they compute.

    Parameters
    ----------
    cutoff : nm
    skin : nm, >= 0 (0 rebuilds on every call). ``math.inf`` keeps *all* pairs of each
        isolated structure, found once and never rebuilt: no per-step check (a host sync on a
        GPU) and fixed shapes, at the price of computing the pairs beyond the cutoff; meant
        for small molecules on a GPU. Periodic cells need a finite skin.
    """

    def __init__(self, cutoff: float, skin: float):
        if not skin >= 0:
            raise ValueError(f"skin must be >= 0 nm, got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.n_builds = 0
        self._reference: torch.Tensor | None = None
        self._cell: torch.Tensor | None = None
        self._pairs: PairList | None = None

    def pairs(
        self,
        positions: torch.Tensor,
        batch: torch.Tensor,
        n_structures: int,
        cell: torch.Tensor | None,
        pbc: tuple[bool, bool, bool],
    ) -> PairList:
        """Pairs within ``cutoff + skin`` of the (M, 3) positions; arguments as in
        :func:`neighbor_pairs`."""
        x = positions.detach()
        if self._stale(x, cell):
            if math.isinf(self.skin) and cell is not None:
                raise ValueError(
                    "skin=inf (all pairs) is for isolated structures; give a finite skin with a cell"
                )
            backend = "torch" if math.isinf(self.skin) else "auto"  # vesin needs a finite cutoff
            self._pairs = neighbor_pairs(
                x, self.cutoff + self.skin, batch, n_structures, cell, pbc, backend=backend
            )
            self._reference = x.clone()
            self._cell = None if cell is None else cell.detach().clone()
            self.n_builds += 1
        return self._pairs

    def _stale(self, x: torch.Tensor, cell: torch.Tensor | None) -> bool:
        ref = self._reference
        if ref is None or ref.shape != x.shape or ref.device != x.device or ref.dtype != x.dtype:
            return True
        if (cell is None) != (self._cell is None):
            return True
        if cell is not None and (
            cell.shape != self._cell.shape or not torch.equal(cell.detach(), self._cell)
        ):
            return True
        if self.skin == 0:
            return True
        if math.isinf(self.skin):  # all pairs: valid wherever the atoms go
            return False
        moved = (x - ref).square().sum(-1).max()
        return bool(moved > (0.5 * self.skin) ** 2)
