"""Observables people look at: backbone dihedrals, Ramachandran free-energy maps, the
energies and temperature of a run, and training curves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from molsamp.units import kT

if TYPE_CHECKING:
    import mdtraj


def backbone_dihedrals(trajectory: mdtraj.Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """φ and ψ (radians) of the first residue that has both, shape (F,) each."""
    import mdtraj

    _, phi = mdtraj.compute_phi(trajectory)
    _, psi = mdtraj.compute_psi(trajectory)
    if phi.shape[1] == 0 or psi.shape[1] == 0:
        raise ValueError("the topology has no backbone φ/ψ dihedral (needs a capped amino acid or peptide)")
    return phi[:, 0], psi[:, -1] if psi.shape[1] == 1 else psi[:, 0]


def free_energy_2d(
    phi: np.ndarray,
    psi: np.ndarray,
    temperature: float,
    bins: int = 60,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """F(φ, ψ) = −kT ln p in kJ/mol (minimum 0, empty bins inf) and the bin edges (radians)."""
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    histogram, _, _ = np.histogram2d(phi, psi, bins=[edges, edges], weights=weights, density=True)
    with np.errstate(divide="ignore"):
        free_energy = -kT(temperature) * np.log(histogram)
    return free_energy - free_energy[np.isfinite(free_energy)].min(), edges


def plot_ramachandran(
    phi: np.ndarray,
    psi: np.ndarray,
    temperature: float,
    path: str | Path,
    title: str = "Ramachandran free energy",
    weights: np.ndarray | None = None,
) -> Path:
    """Write a PNG of F(φ, ψ) in kJ/mol; returns its path."""
    plt = _pyplot()
    free_energy, edges = free_energy_2d(phi, psi, temperature, weights=weights)
    degrees = np.degrees(edges)
    figure, axes = plt.subplots(figsize=(5.2, 4.4), dpi=120)
    mesh = axes.pcolormesh(degrees, degrees, free_energy.T, cmap="viridis", vmax=30.0)
    figure.colorbar(mesh, ax=axes, label="free energy (kJ/mol)")
    axes.set(xlabel="φ (degrees)", ylabel="ψ (degrees)", title=title, xlim=(-180, 180), ylim=(-180, 180))
    axes.set_xticks(range(-180, 181, 90))
    axes.set_yticks(range(-180, 181, 90))
    return _save(figure, path)


def read_energies(energies_csv: str | Path) -> np.ndarray:
    """(R, 6) rows of a :class:`~molsamp.io.CSVReporter` file: step, time (ps), potential,
    kinetic and total energy (kJ/mol), temperature (K); shape (0, 6) before its first row."""
    lines = Path(energies_csv).read_text(encoding="utf-8").splitlines()[1:]
    return np.array([[float(value) for value in line.split(",")] for line in lines], dtype=float).reshape(
        -1, 6
    )


def plot_energies(energies_csv: str | Path, path: str | Path, temperature: float | None = None) -> Path:
    """Write a PNG of a :class:`~molsamp.io.CSVReporter` file: potential and total energy
    (kJ/mol) and temperature (K, with the thermostat's ``temperature`` as a line) against time
    (ps); returns its path. A file with no rows yet gives empty panels."""
    plt = _pyplot()
    rows = read_energies(energies_csv)
    time, potential, total, kinetic_temperature = rows[:, 1], rows[:, 2], rows[:, 4], rows[:, 5]
    figure, (energy_axes, temperature_axes) = plt.subplots(2, 1, figsize=(6.0, 5.0), dpi=120, sharex=True)
    energy_axes.plot(time, potential, lw=0.8, label="potential")
    energy_axes.plot(time, total, lw=0.8, label="total")
    energy_axes.set(ylabel="energy (kJ/mol)")
    energy_axes.legend(loc="best", fontsize="small")
    temperature_axes.plot(time, kinetic_temperature, lw=0.8, color="tab:red")
    if temperature is not None:
        temperature_axes.axhline(temperature, color="black", lw=0.8, ls="--", label=f"{temperature:g} K")
        temperature_axes.legend(loc="best", fontsize="small")
    temperature_axes.set(xlabel="time (ps)", ylabel="temperature (K)")
    return _save(figure, path)


def plot_training_curves(
    history: list[dict], x: str, curves: dict[str, str], path: str | Path, title: str = "training"
) -> Path:
    """Write a PNG of training history rows: one panel per ``curves`` entry (row key → panel
    title, units included), against the rows' ``x`` (e.g. "epoch" or "step"), log scale for
    positive values; rows without a key are skipped. Returns the path."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(curves), 1, figsize=(6.0, 2.2 * len(curves) + 0.6), dpi=120, sharex=True)
    axes = np.atleast_1d(axes)
    for panel, (key, label) in zip(axes, curves.items(), strict=True):
        rows = [row for row in history if row.get(key) is not None and x in row]
        values = np.array([float(row[key]) for row in rows])
        panel.plot([row[x] for row in rows], values, marker="." if len(rows) < 50 else None, lw=0.9)
        if len(values) and np.all(values > 0):
            panel.set_yscale("log")
        panel.set_title(label, fontsize="medium", loc="left")
    figure.suptitle(title)
    axes[-1].set(xlabel=x)
    return _save(figure, path)


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | Path) -> Path:
    """Lay out, write and close ``figure``; returns the PNG's path."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
