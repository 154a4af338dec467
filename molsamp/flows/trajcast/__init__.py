"""TrajCast-style force-free MD: an E(3)-equivariant network forecasts positions and velocities
over intervals of many MD steps, with conserved momenta, a canonical thermostat and periodic
wrapping (Thiemann et al., "Force-free molecular dynamics through autoregressive equivariant
networks", 2025).

* :class:`TrajCast` — the forecaster (``forecast`` → Δx, v'), :func:`save_forecaster`,
  :func:`load_forecaster`.
* :mod:`~molsamp.flows.trajcast.physics` — conservation layer, wrapping,
  :class:`StochasticVelocityRescaling` (Bussi–Donadio–Parrinello) and the per-atom
  :class:`LocalLangevinThermostat`.
* :func:`train_forecaster` on :class:`TrajectoryData` (MD pairs at lag k·δt, multi-step loss);
  :func:`with_share` sets the share of training windows drawn from extra (restarted) segments.
* :func:`rollout` — the driver, with molsamp reporters, checkpoints and guard.
* :func:`calibrate_velocity_noise` — the rollout's velocity noise, set on its own rollouts so
  that a weak per-atom thermostat holds every element at the temperature.
* :func:`forecast_log_volume_change` — log|det J| of a forecast step (0 for Hamiltonian flow):
  how much the learned map contracts phase space.
"""

from molsamp.flows.trajcast.calibration import NoiseCalibration, calibrate_velocity_noise
from molsamp.flows.trajcast.driver import ForecastIntegrator, FrameRecorder, UnknownEnergy, rollout
from molsamp.flows.trajcast.liouville import forecast_log_volume_change, log_volume_change
from molsamp.flows.trajcast.model import TrajCast, load_forecaster, save_forecaster
from molsamp.flows.trajcast.physics import (
    LocalLangevinThermostat,
    StochasticVelocityRescaling,
    angular_momentum,
    center_of_mass,
    conserve,
    minimum_image,
    split_motion,
    wrap_positions,
)
from molsamp.flows.trajcast.training import (
    ForecastTrainingConfig,
    ForecastTrainingResult,
    TrajectoryData,
    fit_scales,
    fit_velocity_noise,
    join,
    perturbed_restarts,
    record_trajectory,
    rollout_restarts,
    train_forecaster,
    window_loss,
    with_share,
)

__all__ = [
    "ForecastIntegrator",
    "ForecastTrainingConfig",
    "ForecastTrainingResult",
    "FrameRecorder",
    "LocalLangevinThermostat",
    "NoiseCalibration",
    "StochasticVelocityRescaling",
    "TrajCast",
    "TrajectoryData",
    "UnknownEnergy",
    "angular_momentum",
    "calibrate_velocity_noise",
    "center_of_mass",
    "conserve",
    "fit_scales",
    "fit_velocity_noise",
    "forecast_log_volume_change",
    "join",
    "load_forecaster",
    "log_volume_change",
    "minimum_image",
    "perturbed_restarts",
    "record_trajectory",
    "rollout",
    "rollout_restarts",
    "save_forecaster",
    "split_motion",
    "train_forecaster",
    "window_loss",
    "with_share",
    "wrap_positions",
]
