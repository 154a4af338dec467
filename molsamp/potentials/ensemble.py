"""Ensembles of potentials: deep ensembles or SG-MCMC posterior samples, with uncertainty."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from molsamp.potentials.base import Potential


class EnsemblePotential(Potential):
    """Mean energy and forces of K member potentials, with their spread as uncertainty.

    Parameters
    ----------
    members : K potentials of the same system (e.g. posterior samples of one architecture)
    batched : evaluate all members in one vectorised pass (``torch.func.vmap`` over stacked
        parameters); needs members of one architecture written in pure torch. "auto" uses it
        when the members allow it and falls back to a loop otherwise.
    """

    def __init__(self, members: Sequence[Potential], batched: bool | str = "auto"):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        if not all(isinstance(m, Potential) for m in members):
            raise TypeError("every ensemble member must be a molsamp Potential")
        self.members = torch.nn.ModuleList(members)
        first = members[0]
        self.n_atoms = first.n_atoms
        self.requires_cell = first.requires_cell
        self.accepts_cell = first.accepts_cell
        if hasattr(first, "supported_atomic_numbers"):
            self.supported_atomic_numbers = first.supported_atomic_numbers
        same_architecture = all(
            type(m) is type(first)
            and [n for n, _ in m.named_parameters()] == [n for n, _ in first.named_parameters()]
            for m in members
        ) and any(True for _ in first.parameters())
        if batched is True and not same_architecture:
            raise ValueError(
                "batched=True needs members of one architecture with parameters; use batched='auto'"
            )
        self.batched = same_architecture if batched == "auto" else bool(batched)
        self._stack_cache: tuple | None = None

    @classmethod
    def from_state_dicts(cls, template: Potential, state_dicts: Sequence[dict], batched: bool | str = "auto"):
        """One member per state dict (e.g. SG-MCMC samples), each a copy of ``template``."""
        members = []
        for state in state_dicts:
            member = copy.deepcopy(template)
            member.load_state_dict(state)
            members.append(member)
        return cls(members, batched)

    def member_energies_and_forces(
        self, positions: torch.Tensor, cell: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's energy (K, B) in kJ/mol and forces (K, B, N, 3) in kJ/mol/nm."""
        self._check_input(positions, cell)
        if self.batched:
            return self._vectorised(positions, cell)
        results = [member.energy_and_forces(positions, cell) for member in self.members]
        return torch.stack([e for e, _ in results]), torch.stack([f for _, f in results])

    def _vectorised(self, positions, cell):
        parameters, buffers, buffer_dims, base = self._stacked_members()

        def energy_sum(params, bufs, x):
            return functional_call(base, (params, bufs), (x, cell)).sum()

        def one_member(params, bufs, x):
            energy = functional_call(base, (params, bufs), (x, cell))
            return energy, -grad(energy_sum, argnums=2)(params, bufs, x)

        with torch.no_grad():
            return vmap(one_member, in_dims=(0, buffer_dims, None))(parameters, buffers, positions.detach())

    def _apply(self, fn, recurse=True):
        self._stack_cache = None  # stacked copies would stay on the old device/dtype
        return super()._apply(fn, recurse)

    def _stacked_members(self):
        """Stacked weights, buffers and a weightless copy of a member for ``functional_call``,
        rebuilt only when a member's tensors changed (copying a graph model costs more than
        evaluating it)."""
        versions = tuple(t._version for m in self.members for t in (*m.parameters(), *m.buffers()))
        if self._stack_cache is None or self._stack_cache[0] != versions:
            parameters, _ = stack_module_state(list(self.members))
            buffers, buffer_dims = self._member_buffers()
            base = copy.deepcopy(self.members[0]).to("meta")
            self._stack_cache = (versions, parameters, buffers, buffer_dims, base)
        return self._stack_cache[1:]

    def _member_buffers(self) -> tuple[dict[str, torch.Tensor], dict[str, int | None]]:
        """Buffers for the vectorised pass: stacked (vmapped over) where members differ, one
        shared copy where they agree. Lookup tables such as a graph model's element index
        must stay unbatched: vmap cannot branch on their values."""
        buffers, dims = {}, {}
        per_member = [dict(m.named_buffers()) for m in self.members]
        for name, first in per_member[0].items():
            values = [b[name] for b in per_member]
            if all(v.shape == first.shape and torch.equal(v, first) for v in values[1:]):
                buffers[name], dims[name] = first, None
            else:
                buffers[name], dims[name] = torch.stack(values), 0
        return buffers, dims

    def _energy(self, positions, cell):
        return torch.stack([member.energy(positions, cell) for member in self.members]).mean(0)

    def _energy_and_forces(self, positions, cell):
        energies, forces = self.member_energies_and_forces(positions, cell)
        return energies.mean(0), forces.mean(0)

    def force_uncertainty(self, positions: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        """Per-atom force standard deviation over members, (B, N) in kJ/mol/nm:
        σᵢ = √(mean_k |F_k,i − F̄_i|²)."""
        _, forces = self.member_energies_and_forces(positions, cell)
        return (forces - forces.mean(0)).square().sum(-1).mean(0).sqrt()
