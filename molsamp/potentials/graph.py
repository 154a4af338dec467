"""Base class of the message-passing potentials: graphs, element bookkeeping, energy heads.

A :class:`GraphPotential` evaluates either

* B walkers of one system through the :class:`~molsamp.potentials.Potential` interface,
  once :meth:`GraphPotential.bind` has told it the atomic numbers (MD, sampling), or
* a batch of different structures through :meth:`GraphPotential.predict` (training).

The total energy of a structure is Σ_i [E0(Z_i) + shift + scale · ε_i], where ε_i is the
model's per-atom output and E0 are per-element reference energies (kJ/mol).

On a GPU the bound (MD) path keeps host round-trips out of the step: the walkers' element
indices are cached on the device, and edges the Verlet skin adds beyond r_max are kept and
contribute exactly zero (the radial envelope vanishes there) instead of being dropped with a
data-dependent ``nonzero``. What remains is one small sync per step for the skin check of the
neighbour cache, and none with ``skin=math.inf`` (all pairs; isolated molecules).

``use_compile()`` (:class:`~molsamp.compilation.LazyCompile`) runs the network through
``torch.compile`` where no second derivative is needed: MD, sampling and inference
(``energy_and_forces``, ``energy_forces_stress``, ``predict`` without ``create_graph``).
Training (forces in the loss) stays eager, since compiled graphs do not support double
backward.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from e3nn import o3

from molsamp.compilation import LazyCompile
from molsamp.potentials.base import Potential
from molsamp.potentials.blocks import scatter_sum
from molsamp.potentials.neighbors import NeighborCache, PairList, edge_vectors, neighbor_pairs

_MAX_Z = 118
_W3J_BUFFER = re.compile(r"_w3j_(\d+)_(\d+)_(\d+)$")  # e3nn tensor-product constants


def refresh_exact_constants(root: torch.nn.Module) -> None:
    """Rewrite Clebsch–Gordan constants of ``root``'s modules from float64 originals in the
    buffers' dtype.

    e3nn modules build them in the default dtype (float32); casting those to float64 would
    leave 1e-7 errors and break exact equivariance in float64. Call after changing dtype
    or loading a state dict (every e3nn-based model in molsamp does).
    """
    with torch.no_grad():
        for module in root.modules():
            exact = module.exact_buffers() if hasattr(module, "exact_buffers") else {}
            for name, buffer in module.named_buffers(recurse=False):
                match = _W3J_BUFFER.match(name)
                if match:
                    value = o3.wigner_3j(*map(int, match.groups()), dtype=torch.float64)
                elif name in exact:
                    value = exact[name]
                else:
                    continue
                buffer.copy_(value.to(buffer.dtype))


def element_lookup(elements: Sequence[int]) -> torch.Tensor:
    """(119,) int64 table: atomic number → index in the sorted ``elements``, −1 elsewhere."""
    lookup = torch.full((_MAX_Z + 1,), -1, dtype=torch.int64)
    lookup[list(elements)] = torch.arange(len(elements))
    return lookup


def element_indices(lookup: torch.Tensor, elements: Sequence[int], atomic_numbers) -> torch.Tensor:
    """Element index 0…len(elements)−1 of each atom by ``lookup`` (:func:`element_lookup`);
    raises for atomic numbers not among ``elements``."""
    z = torch.as_tensor(atomic_numbers, dtype=torch.int64, device=lookup.device)
    if z.numel() and (z.min() < 0 or z.max() > _MAX_Z):
        raise ValueError(f"atomic numbers must be 0…{_MAX_Z}, got {z.unique().tolist()}")
    s = lookup[z]
    if (s < 0).any():
        unknown = sorted(set(z[s < 0].tolist()))
        raise ValueError(
            f"atomic numbers {unknown} are not among the model's elements "
            f"{list(elements)}; build the model with elements that include them"
        )
    return s


class GraphPotential(LazyCompile, Potential):
    """Shared machinery of MACE and TensorNet; subclasses implement ``_atom_energies``.

    Periodic or not: a cell passed to ``energy`` is used (``accepts_cell``), None means an
    isolated structure.

    Parameters
    ----------
    elements : atomic numbers the model knows (its ``supported_atomic_numbers``)
    r_max : cutoff radius, nm
    skin : Verlet skin, nm, for the neighbour cache used by the bound (MD) path

    Buffers (saved in the state dict)
    ---------------------------------
    atomic_energies : (n_elements,) E0 per element, kJ/mol
    scale, shift : kJ/mol, applied to the per-atom outputs
    avg_num_neighbors : messages are divided by it (set from data before training)
    """

    accepts_cell = True
    # messages of edges longer than r_max are exactly zero (subclasses with a smooth cutoff
    # envelope and bias-free radial paths); lets the GPU path skip dropping them
    zero_beyond_cutoff = False

    def __init__(self, elements: Sequence[int], r_max: float, skin: float = 0.05):
        super().__init__()
        elements = [int(z) for z in elements]
        if not elements or len(set(elements)) != len(elements):
            raise ValueError(f"elements must be distinct atomic numbers, got {elements}")
        if min(elements) < 1 or max(elements) > _MAX_Z:
            raise ValueError(f"elements must be atomic numbers 1…{_MAX_Z}, got {elements}")
        if not r_max > 0:
            raise ValueError(f"r_max must be > 0 nm, got {r_max}")
        self.elements = sorted(elements)
        self.r_max = float(r_max)
        self.register_buffer("_species_of_z", element_lookup(self.elements), persistent=False)
        dtype = torch.get_default_dtype()
        self.register_buffer("atomic_energies", torch.zeros(len(self.elements), dtype=dtype))
        self.register_buffer("scale", torch.ones((), dtype=dtype))
        self.register_buffer("shift", torch.zeros((), dtype=dtype))
        self.register_buffer("avg_num_neighbors", torch.ones((), dtype=dtype))
        self._cache = NeighborCache(self.r_max, skin)
        self._bound: torch.Tensor | None = None
        self._pbc: tuple[bool, bool, bool] = (True, True, True)
        self._walker_cache: dict = {}
        self.register_load_state_dict_post_hook(lambda module, _: module._refresh_constants())

    def __getstate__(self):
        state = super().__getstate__()  # without the compiled network
        state["_walker_cache"] = {}
        return state

    def _network(self, create_graph: bool):
        # compiled graphs do not support double backward: training (forces in the loss) runs eager
        return self._atom_energies if create_graph else self._compiled_or_eager(self._atom_energies)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._refresh_constants()
        return out

    def _refresh_constants(self) -> None:
        refresh_exact_constants(self)

    # ----------------------------------------------------------------- bookkeeping
    @property
    def supported_atomic_numbers(self) -> list[int]:
        """The atomic numbers the model was built for, sorted."""
        return list(self.elements)

    @property
    def n_elements(self) -> int:
        return len(self.elements)

    def hyperparameters(self) -> dict:
        """JSON-able constructor arguments (what :func:`load_potential` rebuilds from);
        subclasses record them in ``self._hyper``."""
        return dict(self._hyper)

    def species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Element index 0…n_elements−1 of each atom; raises for unknown elements."""
        return element_indices(self._species_of_z, self.elements, atomic_numbers)

    def bind(
        self, atomic_numbers: Sequence[int] | torch.Tensor, pbc: Sequence[bool] = (True,) * 3
    ) -> GraphPotential:
        """Fix the atoms for the ``energy(positions (B, N, 3), cell)`` interface; returns self.

        ``pbc`` says which box vectors are periodic when a cell is passed.
        """
        z = torch.as_tensor(atomic_numbers, dtype=torch.int64)
        self.species(z)  # validates
        self._bound = z
        self._walker_cache = {}
        self.n_atoms = int(z.numel())
        self._pbc = tuple(bool(p) for p in pbc)
        return self

    # ----------------------------------------------------------------- evaluation
    def _atom_energies(
        self, species: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        """Per-atom model outputs ε_i (M,) from element indices (M,), edges (2, E) and edge
        vectors (E, 3) in nm (all shorter than r_max)."""
        raise NotImplementedError

    def predict(
        self,
        atomic_numbers: torch.Tensor,
        positions: torch.Tensor,
        batch: torch.Tensor | None = None,
        cell: torch.Tensor | None = None,
        *,
        pbc: Sequence[bool] = (True,) * 3,
        forces: bool = True,
        stress: bool = False,
        create_graph: bool = False,
        pairs: PairList | None = None,
    ) -> dict[str, torch.Tensor]:
        """Energies (and forces, stress) of a batch of S structures, atoms flattened.

        Parameters
        ----------
        atomic_numbers : (M,) int64
        positions : (M, 3) tensor, nm
        batch : (M,) int64 structure index per atom, sorted; None for one structure
        cell : (S, 3, 3) tensor, nm (box vectors as rows), or None for isolated structures
        pbc : periodic along each box vector (with a cell)
        forces, stress : what to compute besides the energy (stress needs a cell)
        create_graph : keep the graph of forces/stress (to train on them)
        pairs : a precomputed pair list within r_max (else one is searched)

        Returns
        -------
        dict with "energy" (S,) kJ/mol, "forces" (M, 3) kJ/mol/nm, "stress" (S, 3, 3)
        kJ/mol/nm³ (σ = (1/V) ∂E/∂ε, positive under tension) and "virial" (S, 3, 3) kJ/mol
        (−∂E/∂ε).
        """
        n_atoms = positions.shape[0]
        if batch is None:
            batch = torch.zeros(n_atoms, dtype=torch.int64, device=positions.device)
        n_structures = int(batch.max()) + 1 if n_atoms else 0
        if cell is not None and cell.ndim == 2:
            cell = cell.expand(n_structures, 3, 3)
        if stress and cell is None:
            raise ValueError("stress needs a periodic cell; pass cell (S, 3, 3) in nm")
        pbc = tuple(bool(p) for p in pbc)
        if pairs is None:
            pairs = neighbor_pairs(positions, self.r_max, batch, n_structures, cell, pbc)
        return self._evaluate(
            self.species(atomic_numbers).to(positions.device),
            positions,
            batch,
            n_structures,
            cell,
            pairs,
            forces=forces,
            stress=stress,
            create_graph=create_graph,
        )

    def _evaluate(
        self, species, positions, batch, n_structures, cell, pairs, *, forces, stress, create_graph
    ) -> dict[str, torch.Tensor]:
        want_grad = forces or stress
        with torch.set_grad_enabled(want_grad or torch.is_grad_enabled()):
            all_vectors = edge_vectors(positions, pairs.edge_index, pairs.shifts, cell, batch)
            if self._keep_long_edges(positions.device):
                # no data-dependent shape (a host sync): long edges give zero messages
                edge_index, vectors = pairs.edge_index, all_vectors
            else:  # on the CPU dropping them is free and saves their work
                keep = (all_vectors.detach().square().sum(-1) < self.r_max**2).nonzero().squeeze(-1)
                edge_index = pairs.edge_index[:, keep]
                vectors = all_vectors[keep]
            if want_grad and not vectors.requires_grad:
                vectors.requires_grad_(True)
            outputs = self._network(create_graph)(species, edge_index, vectors)
            atom_energy = (self.atomic_energies[species] + self.shift + self.scale * outputs).to(
                positions.dtype
            )
            energy = scatter_sum(atom_energy, batch, n_structures)
            result = {"energy": energy}
            if want_grad:
                (dE_dr,) = torch.autograd.grad(
                    energy.sum(), vectors, create_graph=create_graph, allow_unused=True
                )
                if dE_dr is None:  # no edges: no forces, no virial
                    dE_dr = torch.zeros_like(vectors)
                i, j = edge_index
                if forces:
                    result["forces"] = scatter_sum(dE_dr, i, positions.shape[0]) - scatter_sum(
                        dE_dr, j, positions.shape[0]
                    )
                if stress:
                    per_edge = vectors[:, :, None] * dE_dr[:, None, :]
                    dE_deps = scatter_sum(per_edge, batch[i], n_structures)
                    volume = torch.linalg.det(cell).abs()
                    result["virial"] = -dE_deps
                    result["stress"] = dE_deps / volume[:, None, None]
        if not create_graph:
            result = {k: v.detach() for k, v in result.items()}
        return result

    def _keep_long_edges(self, device: torch.device) -> bool:
        return self.zero_beyond_cutoff and device.type != "cpu"

    def _walker_graph(self, positions: torch.Tensor, cell: torch.Tensor | None):
        if self._bound is None:
            raise ValueError(
                f"{type(self).__name__} does not know the atoms: call "
                ".bind(system.atomic_numbers) first (or use predict() for mixed structures)"
            )
        n_walkers, n_atoms, _ = positions.shape
        flat = positions.reshape(-1, 3)
        key = (positions.device, n_walkers)
        if key not in self._walker_cache:  # built once per device and walker count, not per step
            self._walker_cache = {
                key: (
                    self.species(self._bound).to(positions.device).repeat(n_walkers),
                    torch.arange(n_walkers, device=positions.device).repeat_interleave(n_atoms),
                )
            }
        species, batch = self._walker_cache[key]
        cells = None if cell is None else cell.to(positions).expand(n_walkers, 3, 3)
        pairs = self._cache.pairs(flat, batch, n_walkers, cells, self._pbc)
        return species, flat, batch, n_walkers, cells, pairs

    def _energy(self, positions: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
        species, flat, batch, n_walkers, cells, pairs = self._walker_graph(positions, cell)
        result = self._evaluate(
            species, flat, batch, n_walkers, cells, pairs,
            forces=False, stress=False, create_graph=True,
        )  # fmt: skip
        return result["energy"]

    def _energy_and_forces(self, positions, cell):
        energy, forces, _ = self.energy_forces_stress(positions, cell, stress=False)
        return energy, forces

    def energy_forces_stress(
        self, positions: torch.Tensor, cell: torch.Tensor | None = None, *, stress: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Energy (B,) kJ/mol, forces (B, N, 3) kJ/mol/nm and, when ``stress`` and a cell is
        given, stress (B, 3, 3) kJ/mol/nm³ (σ = (1/V) ∂E/∂ε) of B walkers; all detached."""
        self._check_input(positions, cell)
        stress = stress and cell is not None
        species, flat, batch, n_walkers, cells, pairs = self._walker_graph(positions, cell)
        result = self._evaluate(
            species, flat, batch, n_walkers, cells, pairs,
            forces=True, stress=stress, create_graph=False,
        )  # fmt: skip
        return (
            result["energy"],
            result["forces"].reshape(positions.shape),
            result.get("stress"),
        )
