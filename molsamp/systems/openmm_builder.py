"""Systems from a PDB file and OpenMM force-field files, with clear errors."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch

from molsamp.potentials.openmm import OpenMMPotential
from molsamp.system import State, System, check_walker_count
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
    structure = app.PDBFile(str(pdb))
    return from_topology(
        structure.topology,
        structure.getPositions(),
        forcefield,
        temperature,
        n_walkers,
        seed,
        platform,
        dtype,
        device,
    )


def _force_field(forcefield: Sequence[str]):
    from openmm import app

    if isinstance(forcefield, str):
        forcefield = (forcefield,)
    try:
        return app.ForceField(*forcefield)
    except (ValueError, OSError) as error:
        raise ValueError(
            f"unknown force field {list(forcefield)}: {error}. Give OpenMM force-field XML files "
            "such as amber99sbildn.xml, amber14-all.xml or amber99_obc.xml, or paths to your own"
        ) from error


def from_topology(
    topology,
    positions,
    forcefield: Sequence[str] = ("amber99sbildn.xml",),
    temperature: float = 300.0,
    n_walkers: int = 1,
    seed: int = 0,
    platform: str = "Reference",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[System, State, OpenMMPotential]:
    """:func:`from_pdb` for an OpenMM topology and positions already in memory (e.g. a Modeller's)."""
    from openmm import app, unit

    check_walker_count(n_walkers)

    ff = _force_field(forcefield)
    periodic = topology.getPeriodicBoxVectors() is not None
    openmm_system = ff.createSystem(
        topology,
        nonbondedMethod=app.CutoffPeriodic if periodic else app.NoCutoff,
        constraints=None,
        rigidWater=False,
        removeCMMotion=False,  # Langevin samples all 3N degrees of freedom
    )
    system = System.from_openmm(topology, openmm_system)
    nm = [(v.x, v.y, v.z) for v in positions.value_in_unit(unit.nanometer)]
    positions = torch.tensor(nm, dtype=dtype, device=device).expand(n_walkers, -1, -1).clone()
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


def glycine_dipeptide(
    solvent: str = "vacuum",
    temperature: float = 300.0,
    n_walkers: int = 1,
    seed: int = 0,
    platform: str = "Reference",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[System, State, OpenMMPotential]:
    """ACE-GLY-NME (19 atoms), built from the shipped alanine dipeptide with OpenMM's Modeller
    (side chain CB/HB* deleted, HA renamed HA2, HA3 added by ``addHydrogens``); force field as
    :func:`alanine_dipeptide`. A second capped amino acid for transferability checks; its
    start geometry is not minimised (run a little MD first)."""
    from openmm import app

    if solvent not in SOLVENT_FORCEFIELDS:
        raise ValueError(f"solvent must be one of {list(SOLVENT_FORCEFIELDS)}, got {solvent!r}")
    alanine = app.PDBFile(str(shipped_pdb("alanine_dipeptide")))
    modeller = app.Modeller(alanine.topology, alanine.positions)
    side_chain = [
        a
        for a in modeller.topology.atoms()
        if a.residue.name == "ALA" and a.name in ("CB", "HB1", "HB2", "HB3")
    ]
    modeller.delete(side_chain)
    for residue in modeller.topology.residues():
        if residue.name == "ALA":
            residue.name = "GLY"
            for atom in residue.atoms():
                if atom.name == "HA":
                    atom.name = "HA2"
    ff = _force_field(SOLVENT_FORCEFIELDS[solvent])
    modeller.addHydrogens(ff)
    return from_topology(
        modeller.topology,
        modeller.positions,
        SOLVENT_FORCEFIELDS[solvent],
        temperature,
        n_walkers,
        seed,
        platform,
        dtype,
        device,
    )
