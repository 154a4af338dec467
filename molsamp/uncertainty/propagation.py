"""Carry parameter uncertainty through to MD observables.

Two routes: run MD with every posterior sample (exact, K simulations), or run MD once with
the ensemble mean and reweight its frames for each member k with
wₖ ∝ exp(−β[Uₖ(x) − Ū(x)]) (one simulation; good while members agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from molsamp.potentials.base import Potential
from molsamp.units import kT


@dataclass(frozen=True)
class CredibleInterval:
    """Posterior summary of an observable: per-sample values and the central interval."""

    values: np.ndarray
    level: float
    lower: np.ndarray
    upper: np.ndarray
    median: np.ndarray

    def contains(self, value) -> np.ndarray:
        return (self.lower <= value) & (value <= self.upper)


def credible_interval(values: Sequence, level: float = 0.95) -> CredibleInterval:
    """Central credible interval over posterior samples (axis 0) of a scalar or array observable."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] < 2:
        raise ValueError(f"need at least 2 posterior samples, got {values.shape[0]}")
    lower, median, upper = np.quantile(values, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
    return CredibleInterval(values, level, lower, upper, median)


def simultaneous_band(values: Sequence, level: float = 0.95) -> CredibleInterval:
    """Credible band over a whole profile (samples on axis 0, bins on axis 1): the envelope of
    the ``level`` fraction of samples whose largest deviation from the median, in units of each
    bin's central-interval half-width, is smallest. A profile drawn from the posterior lies
    inside it in every bin with probability ``level``, where a pointwise interval holds each
    bin alone with that probability (and misses some bin of a long profile most of the time).
    Bins where any sample is NaN are NaN."""
    pointwise = credible_interval(values, level)
    values = pointwise.values
    half_width = 0.5 * (pointwise.upper - pointwise.lower)
    half_width = np.where(half_width > 0, half_width, np.inf)  # a bin all samples agree on
    with np.errstate(invalid="ignore"):
        deviation = np.nanmax(np.abs(values - pointwise.median) / half_width, axis=1)
    kept = values[deviation <= np.quantile(deviation, level)]
    return CredibleInterval(values, level, kept.min(0), kept.max(0), pointwise.median)


def widen_member_spread(member_values: torch.Tensor, factor: float) -> torch.Tensor:
    """Members' values (K, …) moved away from their mean by ``factor``: Ū + s·(Uₖ − Ū).

    Applies a recalibration scale s (fitted on validation data, e.g.
    ``calibrate_relative_energies(...).scale``) to the members themselves, so anything computed
    from them (reweighted profiles, credible bands) carries the calibrated spread. The mean
    is unchanged and every member's deviation from it is s times larger."""
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    mean = member_values.mean(0, keepdim=True)
    return mean + factor * (member_values - mean)


def observable_per_member(
    members: Sequence[Potential],
    simulate_observable: Callable[[Potential], np.ndarray],
    level: float = 0.95,
) -> CredibleInterval:
    """Run ``simulate_observable(potential)`` (MD + analysis) for each member; the interval
    over members is the posterior credible interval of the observable."""
    return credible_interval([simulate_observable(member) for member in members], level)


def member_weights(
    member_energies: torch.Tensor, mean_energy: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Normalised weights (K, F) turning frames sampled with the mean potential into samples
    of each member: wₖ(x) ∝ exp(−[Uₖ(x) − Ū(x)]/kT). Energies in kJ/mol: (K, F) and (F,)."""
    log_weights = -(member_energies - mean_energy) / kT(temperature)
    return torch.softmax(log_weights, dim=-1)


def reweighted_observable(
    observable: np.ndarray, weights: torch.Tensor, level: float = 0.95
) -> CredibleInterval:
    """Credible interval of ⟨A⟩ from per-frame values A (F,) or (F, …) and member weights (K, F)."""
    w = weights.detach().cpu().numpy()
    a = np.asarray(observable, dtype=np.float64)
    return credible_interval(np.tensordot(w, a, axes=(1, 0)), level)


def plot_credible_band(
    x: np.ndarray,
    interval: CredibleInterval,
    path: str | Path,
    reference: np.ndarray | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
) -> Path:
    """PNG of a profile's posterior median and credible band, optionally with a reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=110)
    axes.fill_between(x, interval.lower, interval.upper, alpha=0.3, label=f"{interval.level:.0%} credible")
    axes.plot(x, interval.median, lw=2, label="posterior median")
    if reference is not None:
        axes.plot(x, reference, "k--", lw=1.5, label="reference")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
