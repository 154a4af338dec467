"""Files: checkpoints and the reporters that write trajectories and energies."""

from molsamp.io.checkpoint import load_checkpoint, save_checkpoint
from molsamp.io.reporters import (
    CSVReporter,
    Reporter,
    TrajectoryReporter,
    UncertaintyExceeded,
    UncertaintyReporter,
)

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "Reporter",
    "CSVReporter",
    "TrajectoryReporter",
    "UncertaintyReporter",
    "UncertaintyExceeded",
]
