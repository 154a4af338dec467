"""Builders returning ``(System, State, reference Potential)`` for systems with known answers."""

from molsamp.systems.openmm_builder import (
    alanine_dipeptide,
    from_pdb,
    from_topology,
    glycine_dipeptide,
    shipped_pdb,
)
from molsamp.systems.toy import double_well, harmonic_oscillator, lennard_jones_fluid

BUILDERS = {
    "harmonic_oscillator": harmonic_oscillator,
    "double_well": double_well,
    "lennard_jones_fluid": lennard_jones_fluid,
    "alanine_dipeptide": alanine_dipeptide,
}

__all__ = [
    "BUILDERS",
    "harmonic_oscillator",
    "double_well",
    "lennard_jones_fluid",
    "alanine_dipeptide",
    "from_pdb",
    "from_topology",
    "glycine_dipeptide",
    "shipped_pdb",
]
