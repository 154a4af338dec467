"""Build the shipped alanine-dipeptide PDB (ACE-ALA-NME, 22 atoms) from standard geometry.

Places atoms from a Z-matrix of textbook bond lengths, angles and dihedrals (C7eq backbone,
L-chirality), minimises with Amber ff99SB-ILDN in OpenMM and writes
``molsamp/systems/data/alanine_dipeptide.pdb``. Run once: ``python scripts/build_alanine_dipeptide_pdb.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

PHI, PSI = -80.0, 75.0
# name: residue, element, (bond partner, length Å), (angle atom, deg), (dihedral atom, deg)
Z_MATRIX = [
    ("CH3", "ACE", "C", None, None, None),
    ("C", "ACE", "C", ("CH3", 1.52), None, None),
    ("O", "ACE", "O", ("C", 1.23), ("CH3", 121.0), None),
    ("N", "ALA", "N", ("C", 1.335), ("CH3", 116.6), ("O", 180.0)),
    ("H", "ALA", "H", ("N", 1.01), ("C", 119.0), ("O", 180.0)),
    ("CA", "ALA", "C", ("N", 1.458), ("C", 121.9), ("CH3", 180.0)),
    ("C'", "ALA", "C", ("CA", 1.525), ("N", 111.0), ("C", PHI)),
    ("CB", "ALA", "C", ("CA", 1.53), ("N", 110.5), ("C", PHI - 120.0)),
    ("HA", "ALA", "H", ("CA", 1.09), ("N", 109.5), ("C", PHI + 120.0)),
    ("O'", "ALA", "O", ("C'", 1.23), ("CA", 120.5), ("N", PSI + 180.0)),
    ("N'", "NME", "N", ("C'", 1.335), ("CA", 116.2), ("N", PSI)),
    ("H'", "NME", "H", ("N'", 1.01), ("C'", 119.8), ("O'", 180.0)),
    ("C''", "NME", "C", ("N'", 1.449), ("C'", 121.9), ("CA", 180.0)),
]
METHYLS = [  # (carbon, bonded atom, dihedral reference, residue, hydrogen names, first dihedral)
    ("CH3", "C", "O", "ACE", ("HH31", "HH32", "HH33"), 0.0),
    ("CB", "CA", "N", "ALA", ("HB1", "HB2", "HB3"), 60.0),
    ("C''", "N'", "C'", "NME", ("HH31", "HH32", "HH33"), 60.0),
]
PDB_ORDER = [
    ("ACE", "HH31"),
    ("ACE", "CH3"),
    ("ACE", "HH32"),
    ("ACE", "HH33"),
    ("ACE", "C"),
    ("ACE", "O"),
    ("ALA", "N"),
    ("ALA", "H"),
    ("ALA", "CA"),
    ("ALA", "HA"),
    ("ALA", "CB"),
    ("ALA", "HB1"),
    ("ALA", "HB2"),
    ("ALA", "HB3"),
    ("ALA", "C'"),
    ("ALA", "O'"),
    ("NME", "N'"),
    ("NME", "H'"),
    ("NME", "C''"),
    ("NME", "HH31"),
    ("NME", "HH32"),
    ("NME", "HH33"),
]


def place(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, length: float, angle: float, dihedral: float
) -> np.ndarray:
    """Natural-extension reference frame: the atom d bonded to c with the given geometry."""
    angle, dihedral = np.radians(angle), np.radians(dihedral)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d = np.array(
        [
            -length * np.cos(angle),
            length * np.sin(angle) * np.cos(dihedral),
            length * np.sin(angle) * np.sin(dihedral),
        ]
    )
    return c + d[0] * bc + d[1] * m + d[2] * n


def build() -> dict[tuple[str, str], np.ndarray]:
    xyz: dict[str, np.ndarray] = {}
    for name, _, _, bond, angle, dihedral in Z_MATRIX:
        if bond is None:
            xyz[name] = np.zeros(3)
        elif angle is None:
            xyz[name] = xyz[bond[0]] + np.array([bond[1], 0.0, 0.0])
        elif dihedral is None:
            c, b = xyz[bond[0]], xyz[angle[0]]  # first three atoms lie in the xy plane
            u, t = (b - c) / np.linalg.norm(b - c), np.radians(angle[1])
            xyz[name] = c + bond[1] * (np.cos(t) * u + np.sin(t) * np.array([0.0, 1.0, 0.0]))
        else:
            xyz[name] = place(xyz[dihedral[0]], xyz[angle[0]], xyz[bond[0]], bond[1], angle[1], dihedral[1])
    named = {(res, name): xyz[name] for name, res, *_ in Z_MATRIX}
    for carbon, partner, ref, res, hydrogens, start in METHYLS:
        for k, h in enumerate(hydrogens):
            named[(res, h)] = place(xyz[ref], xyz[partner], xyz[carbon], 1.09, 109.5, start + 120.0 * k)
    return named


def is_l_chirality(named: dict[tuple[str, str], np.ndarray]) -> bool:
    """CORN rule: seen from HA, CO → CB → N runs clockwise."""
    ca = named[("ALA", "CA")]
    co, cb, h = named[("ALA", "C'")] - ca, named[("ALA", "CB")] - ca, named[("ALA", "HA")] - ca
    return float(np.dot(np.cross(co, cb), h)) < 0


def main() -> None:
    named = build()
    if not is_l_chirality(named):
        raise RuntimeError("built D-alanine; swap the CB and HA dihedrals")
    topology = app.Topology()
    chain = topology.addChain()
    positions = []
    residues = {}
    for res, name in PDB_ORDER:
        if res not in residues:
            residues[res] = topology.addResidue(res, chain)
        element = app.Element.getBySymbol(name.rstrip("'")[0])
        topology.addAtom(
            name.replace("''", "").replace("'", "") if res != "NME" or name != "C''" else "CH3",
            element,
            residues[res],
        )
        positions.append(named[(res, name)] / 10.0)
    out = Path(__file__).resolve().parents[1] / "molsamp" / "systems" / "data" / "alanine_dipeptide.pdb"
    with open(out, "w") as handle:  # write once, re-read so OpenMM maps PDB names and adds bonds
        app.PDBFile.writeFile(topology, np.array(positions) * unit.nanometer, handle)
    pdb = app.PDBFile(str(out))
    system = app.ForceField("amber99sbildn.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None
    )
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(pdb.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    state = context.getState(getPositions=True, getEnergy=True)
    print("minimised energy:", state.getPotentialEnergy())
    with open(out, "w") as handle:
        app.PDBFile.writeFile(pdb.topology, state.getPositions(), handle)
    print("wrote", out)


if __name__ == "__main__":
    main()
