"""Potential energy models: analytic test beds, OpenMM force fields and neural networks."""

from molsamp.potentials.analytic import DoubleWell, HarmonicPotential, LennardJones
from molsamp.potentials.base import Potential
from molsamp.potentials.ensemble import EnsemblePotential
from molsamp.potentials.graph import GraphPotential
from molsamp.potentials.mace import MACE
from molsamp.potentials.openmm import OpenMMPotential
from molsamp.potentials.serialization import load_potential, save_potential
from molsamp.potentials.tensornet import TensorNet

__all__ = [
    "Potential",
    "HarmonicPotential",
    "DoubleWell",
    "LennardJones",
    "OpenMMPotential",
    "EnsemblePotential",
    "GraphPotential",
    "MACE",
    "TensorNet",
    "save_potential",
    "load_potential",
]
