"""How far to trust a simulation: calibration of force uncertainty, credible intervals."""

from molsamp.uncertainty.calibration import Calibration, calibrate, plot_calibration, recalibration_factor
from molsamp.uncertainty.propagation import (
    CredibleInterval,
    credible_interval,
    member_weights,
    observable_per_member,
    plot_credible_band,
    reweighted_observable,
    simultaneous_band,
)

__all__ = [
    "Calibration",
    "calibrate",
    "plot_calibration",
    "recalibration_factor",
    "CredibleInterval",
    "credible_interval",
    "member_weights",
    "observable_per_member",
    "reweighted_observable",
    "plot_credible_band",
    "simultaneous_band",
]
