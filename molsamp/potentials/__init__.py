"""Potential energy models: analytic test beds, OpenMM force fields and (later) neural networks."""

from molsamp.potentials.analytic import DoubleWell, HarmonicPotential, LennardJones
from molsamp.potentials.base import Potential
from molsamp.potentials.ensemble import EnsemblePotential
from molsamp.potentials.openmm import OpenMMPotential

__all__ = [
    "Potential",
    "HarmonicPotential",
    "DoubleWell",
    "LennardJones",
    "OpenMMPotential",
    "EnsemblePotential",
]
