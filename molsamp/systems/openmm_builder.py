"""Systems from a PDB file and OpenMM force-field files, with clear errors."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch

from molsamp.potentials.openmm import OpenMMPotential
from molsamp.system import State, System
from molsamp.thermo import maxwell_boltzmann_velocities

SOLVENT_FORCEFIELDS = {
    "vacuum": ("amber99sbildn.xml",),
    "implicit": ("amber99sbildn.xml", "amber99_obc.xml"),
}


def shipped_pdb(name: str) -> Path:
    """Path of a PDB file shipped inside molsamp (``molsamp/systems/data``)."""
    path = Path(str(resources.files("molsamp.systems") / "data" / f"{name}.pdb"))
    if not path.is_file():
        raise FileNotFoundError(f"molsamp ships no {name}.pdb (looked in {path.parent})")
    return path


def from_pdb(
    pdb: str | Path,
    forcefield: Sequence[str] = ("amber99sbildn.xml",),
    temperature: float = 300.0,
    n_walkers: int = 1,
    seed: int = 0,
    platform: str = "Reference",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[System, State, OpenMMPotential]:
    """Build a system from a PDB and OpenMM force-field XML files (no cutoff, no constraints).

    Starting velocities are Maxwell–Boltzmann at ``temperature`` (K), seeded by ``seed``.
    """
    from openmm import app

    pdb = Path(pdb)
    if not pdb.is_file():
        raise FileNotFoundError(f"PDB file not found: {pdb}; check the path")
    if isinstance(forcefield, str):
        forcefield = (forcefield,)
    try:
        ff = app.ForceField(*forcefield)
    except (ValueError, OSError) as error:
        raise ValueError(
            f"unknown force field {list(forcefield)}: {error}. Give OpenMM force-field XML files "
            "such as amber99sbildn.xml, amber14-all.xml or amber99_obc.xml, or paths to your own"
        ) from error
    structure = app.PDBFile(str(pdb))
    periodic = structure.topology.getPeriodicBoxVectors() is not None
    openmm_system = ff.createSystem(
        structure.topology,
        nonbondedMethod=app.CutoffPeriodic if periodic else app.NoCutoff,
        constraints=None,
        rigidWater=False,
        removeCMMotion=False,  # Langevin samples all 3N degrees of freedom
    )
    system = System.from_openmm(structure.topology, openmm_system)
    positions = (
        torch.tensor([[v.x, v.y, v.z] for v in structure.getPositions()], dtype=dtype, device=device)
        .expand(n_walkers, -1, -1)
        .clone()
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    velocities = maxwell_boltzmann_velocities(system.masses, temperature, n_walkers, generator, dtype=dtype)
    state = State(positions, velocities, system.cell)
    return system, state, OpenMMPotential(openmm_system, platform)


def alanine_dipeptide(
    solvent: str = "vacuum",
    temperature: float = 300.0,
    n_walkers: int = 1,
    seed: int = 0,
    platform: str = "Reference",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[System, State, OpenMMPotential]:
    """ACE-ALA-NME (22 atoms), Amber ff99SB-ILDN, no cutoff, no bond constraints.

    ``solvent="implicit"`` adds OBC1 generalised-Born solvent (amber99_obc.xml). All 66
    Cartesian degrees of freedom move, as Boltzmann-generator work requires.
    """
    if solvent not in SOLVENT_FORCEFIELDS:
        raise ValueError(f"solvent must be one of {list(SOLVENT_FORCEFIELDS)}, got {solvent!r}")
    return from_pdb(
        shipped_pdb("alanine_dipeptide"),
        SOLVENT_FORCEFIELDS[solvent],
        temperature,
        n_walkers,
        seed,
        platform,
        dtype,
        device,
    )
