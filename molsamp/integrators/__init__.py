"""Position-space integrators and the MD driver."""

from molsamp.integrators.base import Integrator
from molsamp.integrators.guard import ExplosionGuard, SimulationExploded
from molsamp.integrators.langevin import LangevinBAOAB
from molsamp.integrators.openmm_engine import OpenMMLangevinEngine
from molsamp.integrators.sgmcmc import (
    SGHMC,
    SGLD,
    SGMCMC,
    ConstantSchedule,
    CyclicalSchedule,
    PreconditionedSGLD,
)
from molsamp.integrators.simulate import simulate
from molsamp.integrators.verlet import VelocityVerlet
from molsamp.thermo import (
    kinetic_energy,
    kinetic_temperature,
    maxwell_boltzmann_velocities,
    remove_center_of_mass_velocity,
)

__all__ = [
    "Integrator",
    "LangevinBAOAB",
    "VelocityVerlet",
    "OpenMMLangevinEngine",
    "simulate",
    "SGMCMC",
    "SGLD",
    "PreconditionedSGLD",
    "SGHMC",
    "ConstantSchedule",
    "CyclicalSchedule",
    "ExplosionGuard",
    "SimulationExploded",
    "kinetic_energy",
    "kinetic_temperature",
    "maxwell_boltzmann_velocities",
    "remove_center_of_mass_velocity",
]
