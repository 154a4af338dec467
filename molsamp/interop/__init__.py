"""molsamp potentials in other engines: an ASE calculator and OpenMM forces.

- ``from molsamp.interop.ase import MolsampCalculator`` — energy, forces and stress (eV, Å).
- ``from molsamp.interop.openmm import openmm_force, openmm_system_from`` — a
  ``PythonForce`` for ``openmm.app.Simulation``, alone or beside classical forces (ML/MM);
  ``torch_force`` where ``openmmtorch`` imports; ``load_openmm_xml`` reads OpenMM XML but
  refuses pickled ``PythonForce`` functions.
"""

from molsamp.interop.ase import MolsampCalculator
from molsamp.interop.openmm import (
    load_openmm_xml,
    openmm_force,
    openmm_system_from,
    torch_force,
    torchscript_module,
)

__all__ = [
    "MolsampCalculator",
    "openmm_force",
    "openmm_system_from",
    "torch_force",
    "torchscript_module",
    "load_openmm_xml",
]
