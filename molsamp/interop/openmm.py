"""A molsamp potential as an OpenMM force, alone or beside classical forces (ML/MM).

Use::

    from molsamp.interop.openmm import openmm_force, openmm_system_from

    omm_system = openmm_system_from(system, potential)        # masses, box and the force
    simulation = openmm.app.Simulation(topology, omm_system, integrator)

    amber_system.addForce(openmm_force(potential, particles=ligand_atoms))   # ML/MM

:func:`openmm_force` is built on ``openmm.PythonForce`` and works on every OpenMM platform
from PyPI. Units are OpenMM's and molsamp's alike (nm, kJ/mol, kJ/mol/nm): nothing converts.
Where ``openmmtorch`` imports (CUDA machines), :func:`torch_force` runs a TorchScript export of
the potential (:func:`torchscript_module`) inside OpenMM instead.

Saving and restoring a simulation
---------------------------------
OpenMM's ``XmlSerializer`` saves a ``PythonForce`` by pickling its Python function, and
loading such XML unpickles it: **loading runs whatever code the file names**. molsamp's
force therefore refuses to be pickled, so ``XmlSerializer.serialize`` (and ``copy.deepcopy``)
of a System holding it raises "could not be pickled". To save and re-create a simulation:

1. save the molsamp model: its ``state_dict()`` with ``torch.save`` beside a JSON config of
   how to build it (load with ``torch.load(..., weights_only=True)``);
2. save the OpenMM state with ``simulation.saveState(path)`` or
   ``simulation.saveCheckpoint(path)`` (positions, velocities, box; no forces), and the
   classical part of the System, *before* adding the molsamp force, with ``XmlSerializer``;
3. to resume: rebuild the potential from config and weights, load the classical System
   with :func:`load_openmm_xml`, add ``openmm_force(potential, particles)`` again, make the
   Simulation and ``loadState``/``loadCheckpoint``.

OpenMM 8.6 has no switch to refuse unpickling: its serialization proxies live in one
process-wide registry that only C++ code can extend. :func:`load_openmm_xml` is molsamp's way
to read OpenMM XML: it refuses any file holding a ``PythonForce`` before OpenMM parses it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import openmm
import torch

from molsamp.devices import usable_device
from molsamp.potentials.base import Potential
from molsamp.system import System


class _PotentialComputation:
    """The function a ``PythonForce`` calls: OpenMM State → (energy kJ/mol, forces (n, 3))."""

    def __init__(self, potential: Potential, periodic: bool, device: torch.device, dtype: torch.dtype):
        self.potential = potential
        self.periodic = periodic
        self.device = device
        self.dtype = dtype

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        positions = torch.as_tensor(np.asarray(state.getPositions(asNumpy=True)._value), dtype=self.dtype).to(
            self.device
        )[None]
        cell = None
        if self.periodic:
            box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value)
            cell = torch.as_tensor(box, dtype=self.dtype).to(self.device)
        energy, forces = self.potential.energy_and_forces(positions, cell)
        return energy[0].item(), forces[0].detach().to("cpu", torch.float64).numpy()

    def __reduce__(self) -> Any:
        raise TypeError(
            "molsamp's OpenMM force cannot be pickled or saved to XML (loading pickles runs "
            "code from the file); save the model weights and the OpenMM state and rebuild the "
            "force, as molsamp.interop.openmm's documentation describes"
        )


def _check_particles(particles: Sequence[int] | None, potential: Potential) -> list[int] | None:
    if particles is None:
        return None
    indices = [int(i) for i in particles]
    if not indices or min(indices) < 0 or len(set(indices)) != len(indices):
        raise ValueError(
            "particles must be distinct atom indices >= 0 (None for all atoms), got "
            f"{indices[:10]}{'...' if len(indices) > 10 else ''}"
        )
    if potential.n_atoms is not None and len(indices) != potential.n_atoms:
        raise ValueError(
            f"particles has {len(indices)} atoms but {type(potential).__name__} was built for "
            f"{potential.n_atoms}; pass exactly the atoms the potential describes"
        )
    return indices


def openmm_force(
    potential: Potential,
    particles: Sequence[int] | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    periodic: bool | None = None,
) -> openmm.PythonForce:
    """An OpenMM force whose energy and forces come from a molsamp potential.

    Parameters
    ----------
    potential : molsamp Potential, already on ``device``. If ``potential.requires_cell``, the
        force is periodic: OpenMM passes the box vectors (nm) as the cell and may wrap
        positions into the box, which a periodic potential must accept (minimum image).
    particles : indices of the atoms the potential describes (ML/MM); the potential sees
        only their positions, in this order, and forces go only to them. ``None``: all atoms.
    device, dtype : where and in what precision positions are handed to the potential
    periodic : pass OpenMM's box to the potential; defaults to ``potential.requires_cell``
        (set it for potentials that accept a cell but do not require one, e.g. MACE)

    Returns
    -------
    ``openmm.PythonForce`` adding E (kJ/mol) and F (kJ/mol/nm). It refuses pickling, so it
    cannot be saved to XML; see this module's documentation for saving a simulation.
    """
    if not isinstance(potential, Potential):
        raise TypeError(f"potential must be a molsamp Potential, got {type(potential).__name__}")
    indices = _check_particles(particles, potential)
    periodic = bool(potential.requires_cell) if periodic is None else bool(periodic)
    if periodic and not potential.uses_cell:
        raise ValueError(f"periodic=True but {type(potential).__name__} does not use a cell")
    computation = _PotentialComputation(potential, periodic, usable_device(device), dtype)
    force = openmm.PythonForce(computation)
    force.setUsesPeriodicBoundaryConditions(periodic)
    if indices is not None:
        force.setParticles(indices)
    force.setName(f"molsamp {type(potential).__name__}")
    return force


def openmm_system_from(
    system: System,
    potential: Potential,
    particles: Sequence[int] | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> openmm.System:
    """An ``openmm.System`` with ``system``'s masses and box and :func:`openmm_force` added.

    Add classical forces to the result for ML/MM; ``openmm.app.Simulation`` runs it as is.

    Parameters
    ----------
    system : molsamp System (masses in amu, cell in nm; a periodic system needs pbc all True
        and a reduced box: a along x, b in the xy plane)
    potential, particles, device, dtype : as for :func:`openmm_force`
    """
    if not isinstance(system, System):
        raise TypeError(f"system must be a molsamp System, got {type(system).__name__}")
    n = system.n_atoms
    if particles is None and potential.n_atoms is not None and potential.n_atoms != n:
        raise ValueError(
            f"system has {n} atoms but {type(potential).__name__} was built for "
            f"{potential.n_atoms}; pass particles= for the atoms it describes"
        )
    if particles is not None and any(not 0 <= int(i) < n for i in particles):
        raise ValueError(f"particles must be atom indices in [0, {n}), got {list(particles)[:10]}")
    if potential.requires_cell and not system.periodic:
        raise ValueError(
            f"{type(potential).__name__} is periodic but the system has no periodic cell; "
            "give System a cell (nm) and pbc=(True, True, True)"
        )
    if system.periodic and not all(system.pbc):
        raise ValueError(
            f"OpenMM boxes are periodic along all three vectors but system.pbc is {system.pbc}; "
            "set pbc=(True, True, True)"
        )
    omm = openmm.System()
    for mass in system.masses.tolist():
        omm.addParticle(mass)
    if system.periodic:
        omm.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in system.cell.tolist()))
    periodic = system.periodic and potential.uses_cell
    omm.addForce(openmm_force(potential, particles, device=device, dtype=dtype, periodic=periodic))
    return omm


def load_openmm_xml(path: str | Path) -> Any:
    """Read an OpenMM XML file (System, Force, Integrator or State), refusing ``PythonForce``.

    ``openmm.XmlSerializer.deserialize`` unpickles a ``PythonForce``'s function, which runs
    code named in the file. This loader refuses such files before OpenMM parses them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OpenMM XML file not found: {path}; check the path")
    text = path.read_text()
    python_forces = [
        element.get("name", "PythonForce")
        for element in ElementTree.fromstring(text).iter()
        if element.get("type") == "PythonForce"
    ]
    if python_forces:
        raise ValueError(
            f"{path} holds {len(python_forces)} PythonForce(s) {python_forces}, whose pickled "
            "functions would run code from the file when loaded; remove them from the XML and "
            "re-create them in Python (for molsamp potentials: openmm_force(potential))"
        )
    return openmm.XmlSerializer.deserialize(text)


class _TorchForceModule(torch.nn.Module):
    """positions (N_all, 3) nm [, box (3, 3) nm] → energy () kJ/mol, for ``TorchForce``."""

    def __init__(self, potential: Potential, particles: list[int] | None):
        super().__init__()
        self.potential = potential
        self.use_subset = particles is not None
        self.register_buffer(
            "particles", torch.tensor([] if particles is None else particles, dtype=torch.int64)
        )

    def forward(self, positions: torch.Tensor, boxvectors: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_subset:
            positions = positions[self.particles]
        return self.potential._energy(positions[None], boxvectors)[0]


def torchscript_module(
    potential: Potential, particles: Sequence[int] | None = None
) -> torch.jit.ScriptModule:
    """The potential as the TorchScript module ``openmmtorch.TorchForce`` runs.

    ``module(positions (N_all, 3) nm[, boxvectors (3, 3) nm]) -> energy () kJ/mol``, the
    ML atoms picked by ``particles`` inside. Save it with ``module.save(path)`` to run on a
    machine with ``openmmtorch``. The potential's ``forward`` and ``_energy`` must compile
    with ``torch.jit.script``; input checks are skipped (OpenMM's input is well formed).
    """
    if not isinstance(potential, Potential):
        raise TypeError(f"potential must be a molsamp Potential, got {type(potential).__name__}")
    indices = _check_particles(particles, potential)
    try:
        return torch.jit.script(_TorchForceModule(potential, indices))
    except Exception as error:  # TorchScript raises many types; all mean "not scriptable"
        raise TypeError(
            f"{type(potential).__name__} does not compile with torch.jit.script, which "
            f"TorchForce needs ({type(error).__name__}: {str(error).splitlines()[0]}); use "
            "openmm_force (PythonForce) for it instead"
        ) from error


def torch_force(potential: Potential, particles: Sequence[int] | None = None) -> openmm.Force:
    """An ``openmmtorch.TorchForce`` running :func:`torchscript_module` of the potential.

    Needs ``openmmtorch`` (its PyPI wheels need CUDA libraries to import). Periodic when
    ``potential.requires_cell``; the same ``particles`` convention as :func:`openmm_force`.
    """
    if importlib.util.find_spec("openmmtorch") is None:
        raise ImportError(
            "torch_force needs openmmtorch, which is not installed; install openmm-torch on a "
            "CUDA machine, or use openmm_force (PythonForce), which works everywhere"
        )
    import openmmtorch

    force = openmmtorch.TorchForce(torchscript_module(potential, particles))
    force.setUsesPeriodicBoundaryConditions(bool(potential.requires_cell))
    return force
