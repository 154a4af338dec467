"""Position-space integrators and the MD driver."""

from molsamp.integrators.base import Integrator
from molsamp.integrators.guard import ExplosionGuard, SimulationExploded
from molsamp.integrators.langevin import LangevinBAOAB
from molsamp.integrators.openmm_engine import OpenMMLangevinEngine
from molsamp.integrators.simulate import simulate
from molsamp.integrators.thermo import (
    kinetic_energy,
    kinetic_temperature,
    maxwell_boltzmann_velocities,
    remove_center_of_mass_velocity,
)
from molsamp.integrators.verlet import VelocityVerlet

__all__ = [
    "Integrator",
    "LangevinBAOAB",
    "VelocityVerlet",
    "OpenMMLangevinEngine",
    "simulate",
    "ExplosionGuard",
    "SimulationExploded",
    "kinetic_energy",
    "kinetic_temperature",
    "maxwell_boltzmann_velocities",
    "remove_center_of_mass_velocity",
]
