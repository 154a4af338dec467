"""Stop a simulation that produced NaN/inf or whose energy exploded."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from molsamp.system import State


class SimulationExploded(RuntimeError):
    """Raised when a simulation produced non-finite numbers or an absurd energy.

    Attributes: ``step`` (where it was detected), ``last_good_step``, ``checkpoint`` (path of
    the last good checkpoint, or None).
    """

    def __init__(self, message: str, step: int, last_good_step: int, checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.last_good_step = last_good_step
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class ExplosionGuard:
    """Limits a healthy simulation stays within.

    Parameters
    ----------
    max_potential_energy_per_atom : |E_pot − E_pot(start)| / N above this (kJ/mol) counts as an
        explosion; a change, so models with large absolute (e.g. DFT) energies are fine.
    max_kinetic_energy_per_atom : E_kin / N above this (kJ/mol, ~ 8000 K) counts too.
    """

    max_potential_energy_per_atom: float = 1.0e4
    max_kinetic_energy_per_atom: float = 1.0e2

    def problem(
        self, state: State, masses: torch.Tensor, start_energy: torch.Tensor | None = None
    ) -> str | None:
        """A description of what is wrong with ``state``, or None if it looks healthy.

        ``start_energy`` (B,) kJ/mol is the potential energy the run started from.
        """
        n = state.n_atoms
        energy = state.potential_energy
        kinetic = 0.5 * (masses.to(state.velocities)[:, None] * state.velocities.square()).sum((-2, -1))
        checks = torch.stack(
            [
                ~torch.isfinite(state.positions).all(),
                ~torch.isfinite(state.velocities).all(),
                torch.tensor(False, device=state.positions.device)
                if energy is None
                else ~torch.isfinite(energy).all()
                | (
                    (energy - (0.0 if start_energy is None else start_energy)).abs().max() / n
                    > self.max_potential_energy_per_atom
                ),
                kinetic.max() / n > self.max_kinetic_energy_per_atom,
            ]
        ).tolist()  # one host sync per check
        reasons = [
            "positions are not finite",
            "velocities are not finite",
            f"potential energy is not finite or moved more than {self.max_potential_energy_per_atom:g} kJ/mol per atom from the start",
            f"kinetic energy exceeds {self.max_kinetic_energy_per_atom:g} kJ/mol per atom",
        ]
        found = [reason for reason, bad in zip(reasons, checks, strict=True) if bad]
        return "; ".join(found) if found else None
