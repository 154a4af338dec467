"""How far to trust a simulation: calibration of force and energy uncertainty, credible intervals."""

from molsamp.uncertainty.calibration import (
    Calibration,
    calibrate,
    calibrate_relative_energies,
    plot_calibration,
    recalibration_factor,
)
from molsamp.uncertainty.propagation import (
    CredibleInterval,
    credible_interval,
    member_weights,
    observable_per_member,
    plot_credible_band,
    reweighted_observable,
    simultaneous_band,
    widen_member_spread,
)

__all__ = [
    "Calibration",
    "calibrate",
    "calibrate_relative_energies",
    "plot_calibration",
    "recalibration_factor",
    "CredibleInterval",
    "credible_interval",
    "member_weights",
    "observable_per_member",
    "reweighted_observable",
    "plot_credible_band",
    "simultaneous_band",
    "widen_member_spread",
]
