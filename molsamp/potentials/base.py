"""The :class:`Potential` interface every energy model in molsamp implements."""

from __future__ import annotations

import torch


class Potential(torch.nn.Module):
    """Potential energy of B walkers of one system, on the caller's device and dtype.

    Subclasses implement ``_energy`` (and may override ``_energy_and_forces`` when they know
    forces analytically or get them from an engine). The public methods validate input and
    then call those hooks.

    Attributes
    ----------
    n_atoms : number of atoms the potential is defined for, or ``None`` for any.
    requires_cell : whether a periodic cell must be given.
    accepts_cell : whether a cell, when given, is used (periodic images); implied by
        ``requires_cell``. Graph networks accept a cell or none.
    """

    n_atoms: int | None = None
    requires_cell: bool = False
    accepts_cell: bool = False
    __jit_unused_properties__ = ["uses_cell"]  # Python-side only (TorchForce export scripts the module)

    @property
    def uses_cell(self) -> bool:
        """True when the potential reads a cell passed to it."""
        return self.requires_cell or self.accepts_cell

    def energy(self, positions: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        """Potential energy, differentiable w.r.t. positions.

        Parameters
        ----------
        positions : (B, N, 3) tensor, nm
        cell : (3, 3) tensor, nm (box vectors as rows), or None

        Returns
        -------
        (B,) tensor, kJ/mol
        """
        self._check_input(positions, cell)
        return self._energy(positions, cell)

    def forward(self, positions: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        return self.energy(positions, cell)

    def energy_and_forces(
        self,
        positions: torch.Tensor,
        cell: torch.Tensor | None = None,
        *,
        create_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy (B,) in kJ/mol and forces (B, N, 3) in kJ/mol/nm.

        With ``create_graph=True`` both stay attached to the autograd graph (for training on
        forces); otherwise they are detached.
        """
        self._check_input(positions, cell)
        if create_graph:
            return self._autograd_energy_and_forces(positions, cell, create_graph=True)
        return self._energy_and_forces(positions, cell)

    def _energy(self, positions: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _energy")

    def _energy_and_forces(
        self, positions: torch.Tensor, cell: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._autograd_energy_and_forces(positions, cell, create_graph=False)

    def _autograd_energy_and_forces(
        self, positions: torch.Tensor, cell: torch.Tensor | None, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = (
                positions
                if create_graph and positions.requires_grad
                else positions.detach().requires_grad_(True)
            )
            energy = self._energy(x, cell)
            (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
        if create_graph:
            return energy, -grad
        return energy.detach(), -grad.detach()

    def _check_input(self, positions: torch.Tensor, cell: torch.Tensor | None) -> None:
        if not isinstance(positions, torch.Tensor) or positions.ndim != 3 or positions.shape[-1] != 3:
            shape = (
                tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
            )
            raise ValueError(
                f"positions must be a (B, N, 3) tensor in nm, got {shape}; add a batch axis with [None]"
            )
        if self.n_atoms is not None and positions.shape[1] != self.n_atoms:
            raise ValueError(
                f"positions have {positions.shape[1]} atoms but {type(self).__name__} "
                f"was built for {self.n_atoms}"
            )
        if cell is not None and tuple(cell.shape) != (3, 3):
            raise ValueError(
                f"cell must have shape (3, 3) (box vectors as rows, nm), got {tuple(cell.shape)}"
            )
        if self.requires_cell and cell is None:
            raise ValueError(f"{type(self).__name__} is periodic: pass cell (3, 3) in nm")
