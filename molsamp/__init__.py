"""molsamp: molecular dynamics and Boltzmann sampling with machine-learned potentials.

Units everywhere inside are OpenMM's: nm, ps, kJ/mol, amu, K, e (see :mod:`molsamp.units`).
"""

from molsamp.system import State, System

__version__ = "0.1.0"

__all__ = ["System", "State", "__version__"]
