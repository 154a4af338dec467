"""A real force field as a molsamp potential: energies and forces from OpenMM.

Forces come from OpenMM, and a custom autograd function hands them back as −∂E/∂x, so a
flow or any other torch model can be trained on the force field's energy.
"""

from __future__ import annotations

import numpy as np
import openmm
import torch

from molsamp.potentials.base import Potential

_KNOWN_PLATFORMS = ("Reference", "CPU", "CUDA", "OpenCL")


class _OpenMMEnergy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, positions: torch.Tensor, cell: torch.Tensor | None, potential: OpenMMPotential):
        energy, forces = potential._evaluate(positions, cell)
        ctx.save_for_backward(forces)
        return energy

    @staticmethod
    def backward(ctx, grad_energy: torch.Tensor):
        (forces,) = ctx.saved_tensors
        return -forces * grad_energy[:, None, None], None, None


class OpenMMPotential(Potential):
    """Energy and forces of an ``openmm.System`` (a force field) for B walkers.

    Parameters
    ----------
    openmm_system : the force field applied to the atoms, in OpenMM units (nm, kJ/mol).
    platform : OpenMM platform name; "Reference" (double precision) is the fastest for small
        molecules on a CPU, "CUDA" on a GPU.

    Notes
    -----
    Every walker is evaluated by OpenMM in turn: positions go to the host once per call.
    Energy is double precision on the Reference platform and returned in the positions' dtype.
    """

    def __init__(self, openmm_system: openmm.System, platform: str = "Reference"):
        super().__init__()
        if not isinstance(openmm_system, openmm.System):
            raise TypeError(f"openmm_system must be an openmm.System, got {type(openmm_system).__name__}")
        if platform not in _KNOWN_PLATFORMS:
            raise ValueError(f"platform must be one of {_KNOWN_PLATFORMS}, got {platform!r}")
        self.openmm_system = openmm_system
        self.platform = platform
        self.n_atoms = openmm_system.getNumParticles()
        self.requires_cell = openmm_system.usesPeriodicBoundaryConditions()
        integrator = openmm.VerletIntegrator(0.001)
        self._context = openmm.Context(openmm_system, integrator, openmm.Platform.getPlatformByName(platform))

    def _evaluate(
        self, positions: torch.Tensor, cell: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        coordinates = positions.detach().to("cpu", torch.float64).numpy()
        if cell is not None:
            a, b, c = cell.detach().to("cpu", torch.float64).numpy()
            self._context.setPeriodicBoxVectors(a, b, c)
        energies = np.empty(coordinates.shape[0])
        forces = np.empty_like(coordinates)
        for walker, xyz in enumerate(coordinates):
            self._context.setPositions(xyz)
            state = self._context.getState(getEnergy=True, getForces=True)
            energies[walker] = state.getPotentialEnergy()._value
            forces[walker] = state.getForces(asNumpy=True)._value
        return (
            torch.from_numpy(energies).to(positions),
            torch.from_numpy(forces).to(positions),
        )

    def _energy(self, positions, cell):
        return _OpenMMEnergy.apply(positions, cell, self)

    def _energy_and_forces(self, positions, cell):
        return self._evaluate(positions, cell)
