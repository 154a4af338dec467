"""Is the predicted uncertainty right? Calibration diagnostics on held-out data, for forces
and for relative energies.

For Gaussian predictive errors, the standardised error z = (F_pred − F_true)/σ is N(0, 1):
the fraction of |z| ≤ z_q must equal the nominal level q. The miscalibration area is the
mean |observed − nominal| coverage over levels in (0, 1) (Tran et al., 2020).

Forces and energies need not be calibrated together: a posterior tempered so that its force
σ is right can be too sure of energy differences, and populations and free-energy profiles
depend on energy differences alone. Check both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm


@dataclass(frozen=True)
class Calibration:
    """Coverage of nominal central intervals and the standardised errors behind it."""

    levels: np.ndarray
    observed: np.ndarray
    standardized_errors: np.ndarray
    miscalibration_area: float

    def coverage(self, level: float) -> float:
        """Observed fraction of errors inside the central interval of nominal ``level``."""
        return float(np.mean(np.abs(self.standardized_errors) <= norm.ppf(0.5 + level / 2)))

    @property
    def scale(self) -> float:
        """√⟨z²⟩: the factor s that makes s·σ calibrated on these data (fit it on validation
        data and apply it to test data, never fit it on the test set)."""
        return float(np.sqrt(np.mean(self.standardized_errors**2)))


def calibrate(
    predicted: torch.Tensor, reference: torch.Tensor, sigma: torch.Tensor, n_levels: int = 99
) -> Calibration:
    """Calibration of per-atom force uncertainties.

    Parameters
    ----------
    predicted, reference : (M, N, 3) forces, kJ/mol/nm (ensemble mean and truth)
    sigma : (M, N) per-atom force σ, kJ/mol/nm, as from ``EnsemblePotential.force_uncertainty``
        (the norm over components; each component's σ is taken as σ/√3)
    """
    if predicted.shape != reference.shape or predicted.shape[:-1] != sigma.shape:
        raise ValueError(
            f"predicted/reference must be (M, N, 3) and sigma (M, N); got {tuple(predicted.shape)}, "
            f"{tuple(reference.shape)}, {tuple(sigma.shape)}"
        )
    component_sigma = (sigma / np.sqrt(3.0)).clamp_min(1e-12)[..., None]
    return _calibration(((predicted - reference) / component_sigma).detach().cpu().numpy().ravel(), n_levels)


def calibrate_relative_energies(
    member_energies: torch.Tensor, reference: torch.Tensor, n_levels: int = 99
) -> Calibration:
    """Calibration of energy differences between frames, from an ensemble's members.

    Each member's energies and the reference are taken relative to their own mean over the
    frames (a constant offset changes no population), then z = (mean over members −
    reference)/σ with σ the members' standard deviation, per frame.

    Parameters
    ----------
    member_energies : (K, S) kJ/mol, K ≥ 2 members (posterior samples) on S frames
    reference : (S,) kJ/mol, the true energies of the same frames
    """
    if (
        member_energies.ndim != 2
        or member_energies.shape[0] < 2
        or reference.shape != member_energies.shape[1:]
    ):
        raise ValueError(
            f"member_energies must be (K ≥ 2, S) and reference (S,); got {tuple(member_energies.shape)}, "
            f"{tuple(reference.shape)}"
        )
    relative = member_energies - member_energies.mean(1, keepdim=True)
    target = reference.to(relative)
    target = target - target.mean()
    sigma = relative.std(0).clamp_min(1e-12)
    return _calibration(((relative.mean(0) - target) / sigma).detach().cpu().numpy(), n_levels)


def _calibration(z: np.ndarray, n_levels: int) -> Calibration:
    levels = np.linspace(0.0, 1.0, n_levels + 2)[1:-1]
    observed = np.array([np.mean(np.abs(z) <= norm.ppf(0.5 + q / 2)) for q in levels])
    return Calibration(levels, observed, z, float(np.mean(np.abs(observed - levels))))


def plot_calibration(
    calibration: Calibration,
    path: str | Path,
    title: str = "Force-uncertainty calibration",
    label: str = "(F_pred − F_ref)/σ",
) -> Path:
    """PNG: observed vs nominal coverage, and the histogram of z against N(0, 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4), dpi=110)
    left.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    left.plot(calibration.levels, calibration.observed, lw=2, label="observed")
    left.fill_between(calibration.levels, calibration.levels, calibration.observed, alpha=0.2)
    left.set(
        xlabel="nominal coverage",
        ylabel="observed coverage",
        title=f"miscalibration area {calibration.miscalibration_area:.3f}",
    )
    left.legend()
    z = np.clip(calibration.standardized_errors, -6, 6)
    right.hist(z, bins=80, density=True, alpha=0.6, label=label)
    grid = np.linspace(-6, 6, 300)
    right.plot(grid, norm.pdf(grid), "k", lw=1.5, label="N(0, 1)")
    right.set(xlabel="standardised error", title=title)
    right.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path


def recalibration_factor(predicted: torch.Tensor, reference: torch.Tensor, sigma: torch.Tensor) -> float:
    """Scalar s making s·σ calibrated on these (validation) data: s = √⟨z²⟩ for z = error/σ
    per component. Apply it to test-set σ, never fit it on the test set."""
    return calibrate(predicted, reference, sigma).scale
