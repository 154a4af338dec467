"""Invertible internal coordinates (a Z-matrix) with exact log|det J|.

Positions x (B, N, 3) map to bonds (N−1), angles (N−2) and torsions (N−3) — the 3N − 6
internal coordinates — plus 6 external ones: the root atom's position (3), the polar and
azimuthal angles of the first bond (2) and the rotation γ of the third atom about that bond
(1). Atoms are placed by NeRF (Parsons et al., J. Comput. Chem. 2005); the volume element is

    d³ᴺx = ∏_{i≥1} d_i² · ∏_{i≥2} sin a_i · sin θ · dθ dφ dγ d³x₀ · ∏ dd da dτ,

so log|det ∂x/∂(int, ext)| = Σ 2 log d_i + Σ log sin a_i + log sin θ. A flow models only the
internal block; the energy does not depend on the external one, whose measure integrates to a
constant (8π² × volume), so densities over internal coordinates use the internal part only
(:meth:`InternalCoordinates.internal_log_det`), as in Noé et al., Science 2019.

:class:`NormalizedInternal` adds data statistics: bonds and angles standardised, torsions
shifted by their circular mean and kept on the circle [−π, π).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import mdtraj


@dataclass(frozen=True)
class ZMatrix:
    """Placement order of a molecule.

    Attributes
    ----------
    root : (atom0, atom1, atom2, parent2, other2): atom1 is bonded to atom0; atom2 is bonded
        to ``parent2`` ∈ {atom0, atom1} with its angle measured against ``other2``.
    rows : (N−3) tuples (i, j, k, l): atom i at bond |x_i − x_j|, angle ∠(i, j, k) and torsion
        dihedral(i, j, k, l); j, k, l placed before i.
    """

    root: tuple[int, int, int, int, int]
    rows: tuple[tuple[int, int, int, int], ...]

    @property
    def n_atoms(self) -> int:
        return 3 + len(self.rows)

    def __post_init__(self) -> None:
        a0, a1, a2, p2, o2 = self.root
        if len({a0, a1, a2}) != 3 or {p2, o2} != {a0, a1}:
            raise ValueError(
                f"root must be (a0, a1, a2, parent2, other2) with {{parent2, other2}} = {{a0, a1}}, got {self.root}"
            )
        placed = {a0, a1, a2}
        for row in self.rows:
            i, *refs = row
            if i in placed or len(set(row)) != 4 or not set(refs) <= placed:
                raise ValueError(
                    f"Z-matrix row {row}: atom {i} must be new and its references placed before it"
                )
            placed.add(i)
        if placed != set(range(len(placed))):
            raise ValueError(f"Z-matrix must place atoms 0..{len(placed) - 1} exactly once")

    @classmethod
    def from_topology(cls, topology: mdtraj.Topology, root: int | None = None) -> ZMatrix:
        """Breadth-first Z-matrix from the bond graph, heavy atoms as references.

        The root is the heavy atom nearest the graph centre unless given; heavy, branched atoms
        are placed first. The first child of an atom gets a proper torsion (so a peptide's
        backbone φ and ψ are coordinates); later children are placed relative to their first
        sibling (torsions near ±120°, easy to learn).
        """
        n = topology.n_atoms
        neighbours: list[list[int]] = [[] for _ in range(n)]
        for bond in topology.bonds:
            a, b = bond[0].index, bond[1].index
            neighbours[a].append(b)
            neighbours[b].append(a)
        heavy = [atom.element is None or atom.element.symbol != "H" for atom in topology.atoms]
        if n < 3:
            raise ValueError(f"internal coordinates need >= 3 atoms, the topology has {n}")
        if root is None:
            candidates = [a for a in range(n) if heavy[a] and len(neighbours[a]) >= 2] or list(range(n))
            root = min(candidates, key=lambda a: (max(_graph_distances(neighbours, a)), a))
        if max(_graph_distances(neighbours, root)) >= n:
            raise ValueError(
                "the topology's bond graph is not connected; internal coordinates need one molecule"
            )

        heavy_degree = [sum(heavy[b] for b in neighbours[a]) for a in range(n)]

        def ranked(atoms: list[int]) -> list[int]:  # heavy, branched atoms first (backbone)
            return sorted(atoms, key=lambda a: (not heavy[a], -heavy_degree[a], a))

        first = ranked(neighbours[root])
        a1 = first[0]
        if len(first) > 1:
            a2, p2, o2 = first[1], root, a1
        else:
            a2, p2, o2 = ranked([a for a in neighbours[a1] if a != root])[0], a1, root
        parent = {root: None, a1: root, a2: p2}
        children: dict[int, list[int]] = {a: [] for a in range(n)}
        children[root].append(a1)
        children[p2].append(a2)
        order = [root, a1, a2]
        queue = deque([root, a1, a2])
        rows = []
        while queue:
            j = queue.popleft()
            for i in ranked(neighbours[j]):
                if i in parent:
                    continue
                parent[i] = j
                k = (
                    parent[j]
                    if parent[j] is not None
                    else next(a for a in ranked(neighbours[j]) if a in parent and a != i)
                )
                own = [c for c in children[j] if c != k]
                if own:
                    m = own[0]
                else:
                    options = [a for a in ranked(neighbours[k]) if a in parent and a not in (j, i)]
                    options += [a for a in ranked(neighbours[j]) if a in parent and a not in (k, i)]
                    options += [a for a in order if a not in (i, j, k)]
                    m = options[0]
                rows.append((i, j, k, m))
                children[j].append(i)
                order.append(i)
                queue.append(i)
        return cls((root, a1, a2, p2, o2), tuple(rows))


def _graph_distances(neighbours: list[list[int]], start: int) -> list[int]:
    n = len(neighbours)
    distance = [n] * n
    distance[start] = 0
    queue = deque([start])
    while queue:
        a = queue.popleft()
        for b in neighbours[a]:
            if distance[b] == n:
                distance[b] = distance[a] + 1
                queue.append(b)
    return distance


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def bond_angle(xi: torch.Tensor, xj: torch.Tensor, xk: torch.Tensor) -> torch.Tensor:
    """Angle ∠(i, j, k) at j in radians, (...,) from (..., 3) positions (atan2: stable near 0, π)."""
    u, v = xi - xj, xk - xj
    return torch.atan2(torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=-1), (u * v).sum(-1))


def dihedral(xi: torch.Tensor, xj: torch.Tensor, xk: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
    """IUPAC dihedral of i–j–k–l in (−π, π], equal to that of l–k–j–i (mdtraj's convention)."""
    b0, b1, b2 = xj - xi, xk - xj, xl - xk
    n1, n2 = torch.linalg.cross(b0, b1), torch.linalg.cross(b1, b2)
    m1 = torch.linalg.cross(n1, _unit(b1))
    return torch.atan2(-(m1 * n2).sum(-1), (n1 * n2).sum(-1))


def place(
    xj: torch.Tensor,
    xk: torch.Tensor,
    xl: torch.Tensor,
    bond: torch.Tensor,
    angle: torch.Tensor,
    torsion: torch.Tensor,
) -> torch.Tensor:
    """NeRF: the position of i with |x_i − x_j| = bond, ∠(i, j, k) = angle, dihedral(i, j, k, l) = torsion."""
    kj = _unit(xj - xk)
    normal = _unit(torch.linalg.cross(xk - xl, kj))
    in_plane = torch.linalg.cross(normal, kj)
    offset = (
        -torch.cos(angle)[..., None] * kj
        + (torch.sin(angle) * torch.cos(torsion))[..., None] * in_plane
        + (torch.sin(angle) * torch.sin(torsion))[..., None] * normal
    )
    return xj + bond[..., None] * offset


class InternalCoordinates(torch.nn.Module):
    """Cartesian ↔ (bonds, angles, torsions) + 6 external coordinates, batched.

    Parameters
    ----------
    zmatrix : placement order, e.g. ``ZMatrix.from_topology(system.topology)``

    Notes
    -----
    Layout of the internal vector (B, 3N − 6): bonds (N − 1, nm), angles (N − 2, rad, in
    (0, π)), torsions (N − 3, rad, in (−π, π]). External (B, 6): x₀ (3, nm), θ, φ of the first
    bond (rad), γ (rad). Works in the input's dtype and device; no parameters are learnt.
    """

    def __init__(self, zmatrix: ZMatrix):
        super().__init__()
        self.zmatrix = zmatrix
        n = zmatrix.n_atoms
        rows = torch.tensor(zmatrix.rows, dtype=torch.long).reshape(-1, 4)
        self.register_buffer("rows", rows, persistent=False)
        self.n_atoms = n
        self.n_internal = 3 * n - 6
        # atoms placed together: each level depends only on earlier levels
        level = {a: 0 for a in zmatrix.root[:3]}
        for i, j, k, m in zmatrix.rows:
            level[i] = 1 + max(level[j], level[k], level[m])
        self._levels = []
        for depth in range(1, max(level.values()) + 1):
            members = [r for r, row in enumerate(zmatrix.rows) if level[row[0]] == depth]
            columns = tuple(list(column) for column in zip(*(zmatrix.rows[r] for r in members), strict=True))
            self._levels.append((torch.tensor(members, dtype=torch.long), *columns))

    @property
    def torsion_slice(self) -> slice:
        """Columns of the internal vector that are torsions (periodic)."""
        return slice(2 * self.n_atoms - 3, self.n_internal)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cartesian → internal.

        Parameters
        ----------
        positions : (B, N, 3) nm

        Returns
        -------
        internal (B, 3N − 6), external (B, 6), log|det ∂(int, ext)/∂x| (B,)
        """
        if positions.ndim != 3 or positions.shape[1:] != (self.n_atoms, 3):
            raise ValueError(
                f"positions must have shape (B, {self.n_atoms}, 3) in nm, got {tuple(positions.shape)}"
            )
        x = positions
        a0, a1, a2, p2, o2 = self.zmatrix.root
        i, j, k, m = self.rows.T
        bonds = torch.cat(
            [
                torch.linalg.vector_norm(x[:, [a1, a2]] - x[:, [a0, p2]], dim=-1),
                torch.linalg.vector_norm(x[:, i] - x[:, j], dim=-1),
            ],
            dim=1,
        )
        angles = torch.cat(
            [bond_angle(x[:, [a2]], x[:, [p2]], x[:, [o2]]), bond_angle(x[:, i], x[:, j], x[:, k])], dim=1
        )
        torsions = dihedral(x[:, i], x[:, j], x[:, k], x[:, m])
        first = x[:, a1] - x[:, a0]
        theta = torch.atan2(torch.linalg.vector_norm(first[:, :2], dim=-1), first[:, 2])
        phi = torch.atan2(first[:, 1], first[:, 0])
        gamma = dihedral(x[:, a2], x[:, p2], x[:, o2], self._virtual(x[:, a0]))
        internal = torch.cat([bonds, angles, torsions], dim=1)
        external = torch.cat([x[:, a0], theta[:, None], phi[:, None], gamma[:, None]], dim=1)
        return internal, external, -self._log_volume(internal, external)

    def inverse(
        self, internal: torch.Tensor, external: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Internal (+ external) → Cartesian.

        Parameters
        ----------
        internal : (B, 3N − 6) as in :meth:`forward`
        external : (B, 6) or None for the canonical frame (x₀ = 0, first bond along z, γ = 0)

        Returns
        -------
        positions (B, N, 3) nm and log|det ∂x/∂(int, ext)| (B,). With ``external=None`` the
        returned log-det is :meth:`internal_log_det` (the external factor is a constant).
        """
        if internal.ndim != 2 or internal.shape[1] != self.n_internal:
            raise ValueError(f"internal must have shape (B, {self.n_internal}), got {tuple(internal.shape)}")
        batch, n = internal.shape[0], self.n_atoms
        if external is None:
            external = torch.zeros(batch, 6, dtype=internal.dtype, device=internal.device)
            external[:, 3] = 0.5 * math.pi  # θ = π/2 keeps the frame away from the pole
            log_det = self.internal_log_det(internal)
        else:
            log_det = self._log_volume(internal, external)
        bonds, angles, torsions = internal.split([n - 1, n - 2, n - 3], dim=1)
        a0, a1, a2, p2, o2 = self.zmatrix.root
        x0 = external[:, :3]
        theta, phi, gamma = external[:, 3], external[:, 4], external[:, 5]
        direction = torch.stack(
            [torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), torch.cos(theta)], -1
        )
        atoms: list[torch.Tensor | None] = [None] * n  # built out of place: autograd-safe
        atoms[a0] = x0
        atoms[a1] = x0 + bonds[:, :1] * direction
        atoms[a2] = place(atoms[p2], atoms[o2], self._virtual(x0), bonds[:, 1], angles[:, 0], gamma)
        for rows, i, j, k, m in self._levels:
            rows = rows.to(internal.device)
            new = place(
                torch.stack([atoms[a] for a in j], 1),
                torch.stack([atoms[a] for a in k], 1),
                torch.stack([atoms[a] for a in m], 1),
                bonds[:, rows + 2],
                angles[:, rows + 1],
                torsions[:, rows],
            )
            for column, atom in enumerate(i):
                atoms[atom] = new[:, column]
        x = torch.stack(atoms, 1)
        return x, log_det

    def internal_log_det(self, internal: torch.Tensor) -> torch.Tensor:
        """(B,) Σ 2 log d_i + Σ log sin a_i: the internal part of log|det ∂x/∂(int, ext)|."""
        n = self.n_atoms
        bonds, angles = internal[:, : n - 1], internal[:, n - 1 : 2 * n - 3]
        return 2 * torch.log(bonds.abs()).sum(1) + torch.log(torch.sin(angles).abs()).sum(1)

    def _log_volume(self, internal: torch.Tensor, external: torch.Tensor) -> torch.Tensor:
        return self.internal_log_det(internal) + torch.log(torch.sin(external[:, 3]).abs())

    @staticmethod
    def _virtual(x0: torch.Tensor) -> torch.Tensor:
        """A reference point fixed to the root (x₀ + ẑ + x̂/2) that defines γ."""
        return x0 + x0.new_tensor([0.5, 0.0, 1.0])


def is_valid_internal(internal: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """(B,) True where bonds > 0, angles in (0, π) and every entry is finite."""
    bonds, angles = internal[:, : n_atoms - 1], internal[:, n_atoms - 1 : 2 * n_atoms - 3]
    return torch.isfinite(internal).all(1) & (bonds > 0).all(1) & ((angles > 0) & (angles < math.pi)).all(1)


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Map angles to [−π, π)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


class NormalizedInternal(torch.nn.Module):
    """Internal coordinates standardised from data: what a flow sees.

    Bonds and angles (the real block v) become L⁻¹(v − mean), with L the Cholesky factor of
    their covariance (``whiten=True``: linear bond/angle correlations removed, so a Gaussian
    base already matches their second moments) or diag(std); torsions become
    wrap(τ − circular mean) on [−π, π). The statistics are buffers (saved in the state dict).

    Parameters
    ----------
    internal : the :class:`InternalCoordinates` transform
    positions : (S, N, 3) nm, data frames to take the statistics from
    whiten : full Cholesky whitening (True) or per-coordinate scaling (False)
    statistics : (mean (D,), L (R, R)) instead of ``positions`` (R bonds and angles), e.g. a
        saved model's buffers
    """

    def __init__(
        self,
        internal: InternalCoordinates,
        positions: torch.Tensor | None = None,
        whiten: bool = True,
        *,
        statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.internal = internal
        if (positions is None) == (statistics is None):
            raise ValueError("give either positions (data frames) or statistics (mean, cholesky), not both")
        mean, factor = self._statistics(positions, whiten) if statistics is None else statistics
        n_real = internal.torsion_slice.start
        if tuple(mean.shape) != (internal.n_internal,) or tuple(factor.shape) != (n_real, n_real):
            raise ValueError(
                f"statistics must be mean ({internal.n_internal},) and cholesky ({n_real}, {n_real}), "
                f"got {tuple(mean.shape)} and {tuple(factor.shape)}"
            )
        self.register_buffer("mean", mean.clone())
        self.register_buffer("cholesky", factor.clone())

    def _statistics(self, positions: torch.Tensor, whiten: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            values, _, _ = self.internal(positions.to(torch.float64))
        torsion = self.internal.torsion_slice
        real = values[:, : torsion.start]
        std = real.std(0)
        if not (std > 0).all():
            raise ValueError(
                "a bond or angle has zero variance in positions; give thermal data (several frames)"
            )
        if whiten:
            if real.shape[0] <= real.shape[1]:
                raise ValueError(
                    f"whitening {real.shape[1]} bonds and angles needs more than {real.shape[1]} frames, "
                    f"got {real.shape[0]}; give more data or whiten=False"
                )
            covariance = torch.cov(real.T)
            factor = torch.linalg.cholesky(covariance + 1e-6 * torch.diag(covariance.diagonal()))
        else:
            factor = torch.diag(std)
        circular = torch.atan2(torch.sin(values[:, torsion]).mean(0), torch.cos(values[:, torsion]).mean(0))
        return torch.cat([real.mean(0), circular]), factor

    @property
    def dim(self) -> int:
        return self.internal.n_internal

    @property
    def circular(self) -> torch.Tensor:
        """(D,) bool: which coordinates are angles on [−π, π)."""
        mask = torch.zeros(self.dim, dtype=torch.bool)
        mask[self.internal.torsion_slice] = True
        return mask

    def _log_scale(self) -> torch.Tensor:
        return self.cholesky.diagonal().log().sum()

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (B, N, 3) nm → normalised coordinates (B, 3N − 6) and the log-density
        correction (B,): log q_x(x) = log q_z(z) + correction, where the correction is
        −log|det ∂x/∂z| restricted to the internal block (external measure dropped)."""
        values, _, _ = self.internal(positions)
        z = self._normalize(values)
        return z, -(self.internal.internal_log_det(values) + self._log_scale())

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised coordinates (B, D) → positions (B, N, 3) nm in the canonical frame, and
        log|det ∂x/∂z| (B,) of the internal block (the same quantity :meth:`forward` negates)."""
        values = self._denormalize(z)
        positions, log_det = self.internal.inverse(values)
        return positions, log_det + self._log_scale()

    def valid(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) True where z maps to a proper geometry (positive bonds, angles in (0, π))."""
        return is_valid_internal(self._denormalize(z), self.internal.n_atoms)

    def _normalize(self, values: torch.Tensor) -> torch.Tensor:
        t = self.internal.torsion_slice.start
        shifted = values - self.mean.to(values)
        real = torch.linalg.solve_triangular(self.cholesky.to(values), shifted[:, :t].T, upper=False).T
        return torch.cat([real, wrap_angle(shifted[:, t:])], dim=1)

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:
        t = self.internal.torsion_slice.start
        real = z[:, :t] @ self.cholesky.to(z).T
        return torch.cat([real, z[:, t:]], dim=1) + self.mean.to(z)


def chirality(positions: torch.Tensor, centre: int, a: int, b: int, c: int) -> torch.Tensor:
    """Sign (B,) of the volume (x_a − x_o)·[(x_b − x_o) × (x_c − x_o)] around atom o = centre."""
    x = positions
    o = x[:, centre]
    return torch.sign(((x[:, a] - o) * torch.linalg.cross(x[:, b] - o, x[:, c] - o)).sum(-1))


def alpha_carbon_centres(topology: mdtraj.Topology) -> list[tuple[int, int, int, int]]:
    """(CA, N, C, CB) atom indices of every residue that has all four (chiral Cα)."""
    centres = []
    for residue in topology.residues:
        names = {atom.name: atom.index for atom in residue.atoms}
        if all(name in names for name in ("CA", "N", "C", "CB")):
            centres.append((names["CA"], names["N"], names["C"], names["CB"]))
    return centres
