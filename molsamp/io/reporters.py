"""Reporters: what ``simulate`` writes while it runs (OpenMM's two-part protocol).

A reporter has an ``interval`` in steps and receives the state at every multiple of it.
It also says how far its file got (``progress``), so that a checkpoint can record it, and a
resumed run truncates the file back to that point and appends (no lost or doubled frames).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from molsamp.system import State
from molsamp.thermo import kinetic_energy, kinetic_temperature

if TYPE_CHECKING:
    import mdtraj

    from molsamp.integrators.base import Integrator


class Reporter:
    """Base reporter: subclasses implement ``_open``, ``_write`` and ``_truncate``.

    Parameters
    ----------
    path : output file
    interval : report every this many steps (> 0)
    """

    def __init__(self, path: str | Path, interval: int):
        if not isinstance(interval, int) or interval <= 0:
            raise ValueError(f"interval must be a positive number of steps, got {interval!r}")
        self.path = Path(path)
        self.interval = interval
        self.count = 0
        self._is_open = False

    def start(self) -> None:
        """Begin a new file, replacing any old one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._open(fresh=True)
        self._is_open = True

    def resume(self, progress: dict[str, Any]) -> None:
        """Truncate the file back to what a checkpoint recorded, then append to it."""
        count = int(progress["count"])
        if count and not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path} is missing but the checkpoint says it held {count} records; "
                "restore the file or start the run again without resume"
            )
        if count:
            self._truncate(count)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.count = count
        self._open(fresh=count == 0)
        self._is_open = True

    def progress(self) -> dict[str, Any]:
        return {"path": str(self.path), "count": self.count}

    def report(self, state: State, integrator: Integrator) -> None:
        if not self._is_open:
            self.start()
        self._write(state, integrator)
        self.count += 1

    def flush(self) -> None:
        """Make everything reported so far durable on disk."""

    def close(self) -> None:
        self._is_open = False

    def _open(self, fresh: bool) -> None:
        raise NotImplementedError

    def _write(self, state: State, integrator: Integrator) -> None:
        raise NotImplementedError

    def _truncate(self, count: int) -> None:
        raise NotImplementedError


class CSVReporter(Reporter):
    """Scalars per report: step, time, potential/kinetic/total energy, temperature.

    With B > 1 walkers every column is the mean over walkers. Temperature uses the
    integrator's kinetic degrees of freedom (3N, or 3N − 3 with momentum conserved).
    """

    HEADER = (
        "step,time (ps),potential energy (kJ/mol),kinetic energy (kJ/mol),"
        "total energy (kJ/mol),temperature (K)"
    )

    def _open(self, fresh: bool) -> None:
        self._file = open(self.path, "w" if fresh else "a", encoding="utf-8")  # noqa: SIM115
        if fresh:
            self._file.write(self.HEADER + "\n")

    def _write(self, state: State, integrator: Integrator) -> None:
        potential = state.potential_energy
        if potential is None:
            with torch.no_grad():
                potential = integrator.potential.energy(state.positions, state.cell)
        kinetic = kinetic_energy(state.velocities, integrator.masses)
        temperature = kinetic_temperature(kinetic, integrator.degrees_of_freedom(state.n_atoms))
        values = torch.stack(
            [potential.mean(), kinetic.mean(), (potential + kinetic).mean(), temperature.mean()]
        )
        epot, ekin, etot, temp = values.tolist()
        self._file.write(f"{state.step},{state.time:.6f},{epot:.6f},{ekin:.6f},{etot:.6f},{temp:.4f}\n")

    def _truncate(self, count: int) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        if len(lines) < count + 1:
            raise ValueError(f"{self.path} has {len(lines) - 1} rows, fewer than the checkpoint's {count}")
        _atomic_write_text(self.path, "".join(lines[: count + 1]))

    def flush(self) -> None:
        if self._is_open:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._is_open:
            self._file.close()
        super().close()


class TrajectoryReporter(Reporter):
    """Frames of one walker in an mdtraj format chosen by suffix: .dcd, .xtc or .h5.

    Parameters
    ----------
    path : output file (.dcd, .xtc or .h5)
    interval : steps between frames
    topology : mdtraj.Topology of the system
    walker : which of the B walkers to write
    """

    FORMATS = (".dcd", ".xtc", ".h5")

    def __init__(self, path: str | Path, interval: int, topology: mdtraj.Topology, walker: int = 0):
        super().__init__(path, interval)
        if self.path.suffix not in self.FORMATS:
            raise ValueError(f"trajectory path must end in one of {self.FORMATS}, got {self.path.name!r}")
        if topology is None:
            raise ValueError("topology is required to write a trajectory (System.topology)")
        self.topology = topology
        self.walker = walker

    def _open(self, fresh: bool) -> None:
        from mdtraj.formats import DCDTrajectoryFile, HDF5TrajectoryFile, XTCTrajectoryFile

        kept = None if fresh else self._kept_frames
        opener = {".dcd": DCDTrajectoryFile, ".xtc": XTCTrajectoryFile, ".h5": HDF5TrajectoryFile}
        self._file = opener[self.path.suffix](str(self.path), "w")
        if self.path.suffix == ".h5":
            self._file.topology = self.topology
        if kept is not None:
            self._write_frames(kept.xyz, kept.unitcell_vectors, kept.time)
        self._kept_frames = None

    def _write(self, state: State, integrator: Integrator) -> None:
        if not 0 <= self.walker < state.n_walkers:
            raise ValueError(f"walker {self.walker} does not exist; the state has {state.n_walkers} walkers")
        xyz = state.positions[self.walker].detach().to("cpu", torch.float32).numpy()[None]
        box = None if state.cell is None else state.cell.detach().to("cpu", torch.float32).numpy()[None]
        self._write_frames(xyz, box, np.array([state.time], dtype=np.float32))

    def _write_frames(self, xyz: np.ndarray, boxes: np.ndarray | None, time: np.ndarray) -> None:
        """xyz (F, N, 3) nm; boxes (F, 3, 3) nm or None; time (F,) ps."""
        from mdtraj.utils import box_vectors_to_lengths_and_angles

        lengths = angles = None
        if boxes is not None:
            a, b, c, alpha, beta, gamma = box_vectors_to_lengths_and_angles(
                boxes[:, 0], boxes[:, 1], boxes[:, 2]
            )
            lengths, angles = np.stack([a, b, c], -1), np.stack([alpha, beta, gamma], -1)
        if self.path.suffix == ".dcd":
            self._file.write(xyz * 10.0, None if lengths is None else lengths * 10.0, angles)
        elif self.path.suffix == ".xtc":
            self._file.write(xyz, time=time, box=boxes)
        else:
            self._file.write(xyz, time=time, cell_lengths=lengths, cell_angles=angles)

    def _truncate(self, count: int) -> None:
        import mdtraj

        topology = None if self.path.suffix == ".h5" else self.topology  # HDF5 stores its own
        traj = mdtraj.load(str(self.path), top=topology)
        if traj.n_frames < count:
            raise ValueError(f"{self.path} has {traj.n_frames} frames, fewer than the checkpoint's {count}")
        self._kept_frames = traj[:count]

    def flush(self) -> None:
        if self._is_open and hasattr(self._file, "flush"):
            self._file.flush()

    def close(self) -> None:
        if self._is_open:
            self._file.close()
        super().close()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class UncertaintyExceeded(RuntimeError):
    """Raised by :class:`UncertaintyReporter` when the force uncertainty passes its threshold."""


class UncertaintyReporter(CSVReporter):
    """Largest and mean per-atom force σ of an ensemble potential along the run.

    Parameters
    ----------
    path, interval : CSV file and steps between rows
    threshold : kJ/mol/nm; when the largest σ over atoms and walkers exceeds it the row is
        flagged, and with ``stop=True`` the run stops with :class:`UncertaintyExceeded`
        (the last checkpoint stays the last trusted state)
    """

    HEADER = "step,time (ps),max force sigma (kJ/mol/nm),mean force sigma (kJ/mol/nm),exceeded"

    def __init__(self, path: str | Path, interval: int, threshold: float | None = None, stop: bool = False):
        super().__init__(path, interval)
        if threshold is not None and not threshold > 0:
            raise ValueError(f"threshold must be > 0 kJ/mol/nm or None, got {threshold}")
        if stop and threshold is None:
            raise ValueError("stop=True needs a threshold (kJ/mol/nm)")
        self.threshold, self.stop = threshold, stop

    def _write(self, state: State, integrator: Integrator) -> None:
        potential = integrator.potential
        if not hasattr(potential, "force_uncertainty"):
            raise TypeError(
                f"UncertaintyReporter needs a potential with force_uncertainty (an EnsemblePotential), "
                f"got {type(potential).__name__}"
            )
        sigma = potential.force_uncertainty(state.positions, state.cell)
        largest, mean = torch.stack([sigma.max(), sigma.mean()]).tolist()
        exceeded = self.threshold is not None and largest > self.threshold
        self._file.write(f"{state.step},{state.time:.6f},{largest:.6f},{mean:.6f},{int(exceeded)}\n")
        if exceeded and self.stop:
            self._file.flush()
            raise UncertaintyExceeded(
                f"force uncertainty {largest:.3g} kJ/mol/nm exceeds the threshold {self.threshold:g} at step "
                f"{state.step}: the potential is extrapolating; add training data near this state"
            )
