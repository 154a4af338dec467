import numpy as np
import pytest
import torch

from molsamp.uncertainty import (
    calibrate,
    calibrate_relative_energies,
    plot_calibration,
    recalibration_factor,
    widen_member_spread,
)


def _synthetic(sigma_scale: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    sigma = 5.0 + 20.0 * torch.rand(400, 10, generator=generator, dtype=torch.float64)
    reference = 100.0 * torch.randn(400, 10, 3, generator=generator, dtype=torch.float64)
    error = (sigma / np.sqrt(3))[..., None] * torch.randn(
        400, 10, 3, generator=generator, dtype=torch.float64
    )
    return reference + error, reference, sigma * sigma_scale


def test_well_calibrated_uncertainty_has_nominal_coverage(tmp_path):
    calibration = calibrate(*_synthetic(1.0))
    assert calibration.miscalibration_area < 0.01
    assert calibration.coverage(0.68) == pytest.approx(0.68, abs=0.015)
    assert calibration.coverage(0.95) == pytest.approx(0.95, abs=0.01)
    png = plot_calibration(calibration, tmp_path / "calibration.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_overconfident_uncertainty_is_detected():
    calibration = calibrate(*_synthetic(0.5))  # σ reported half as large as the real error
    assert calibration.coverage(0.68) < 0.45
    assert calibration.miscalibration_area > 0.15


def test_calibrate_rejects_mismatched_shapes():
    predicted, reference, sigma = _synthetic(1.0)
    with pytest.raises(ValueError, match=r"sigma \(M, N\)"):
        calibrate(predicted, reference, sigma[:, :5])


def test_recalibration_factor_restores_coverage():
    predicted, reference, sigma = _synthetic(0.5, seed=1)
    factor = recalibration_factor(predicted, reference, sigma)
    assert factor == pytest.approx(2.0, rel=0.03)
    test_predicted, test_reference, test_sigma = _synthetic(0.5, seed=2)  # fitted on other data
    assert calibrate(test_predicted, test_reference, factor * test_sigma).coverage(0.68) == pytest.approx(
        0.68, abs=0.02
    )


def _ensemble_energies(spread_scale: float, seed: int, members: int = 200, frames: int = 600):
    """Members Uₖ = U + e + sₖ·ε (posterior-predictive draws whose centre errs by e ~ N(0, σ²),
    σ varying per frame) with a member spread of ``spread_scale``·σ, each member shifted by its
    own arbitrary constant; reference U. kJ/mol."""
    generator = torch.Generator().manual_seed(seed)
    reference = 50.0 * torch.randn(frames, generator=generator, dtype=torch.float64)
    sigma = 1.0 + 4.0 * torch.rand(frames, generator=generator, dtype=torch.float64)
    centre = reference + sigma * torch.randn(frames, generator=generator, dtype=torch.float64)
    spread = spread_scale * sigma * torch.randn(members, frames, generator=generator, dtype=torch.float64)
    offsets = 1000.0 * torch.randn(members, 1, generator=generator, dtype=torch.float64)
    return centre + spread + offsets, reference


def test_relative_energy_calibration_ignores_offsets_and_finds_overconfidence():
    calibrated = calibrate_relative_energies(*_ensemble_energies(1.0, seed=3))
    assert calibrated.coverage(0.68) == pytest.approx(0.68, abs=0.04)
    assert calibrated.coverage(0.95) == pytest.approx(0.95, abs=0.025)
    assert calibrated.scale == pytest.approx(1.0, abs=0.07)
    overconfident = calibrate_relative_energies(*_ensemble_energies(0.5, seed=4))
    assert overconfident.coverage(0.68) < 0.45 and overconfident.scale == pytest.approx(2.0, rel=0.08)


def test_widened_members_are_calibrated_on_new_frames():
    """The scale fitted on validation frames, applied to the members on other frames, gives
    nominal coverage there; the members' mean is unchanged."""
    members, reference = _ensemble_energies(0.5, seed=5)
    scale = calibrate_relative_energies(members, reference).scale
    test_members, test_reference = _ensemble_energies(0.5, seed=6)
    widened = widen_member_spread(test_members, scale)
    torch.testing.assert_close(widened.mean(0), test_members.mean(0))
    torch.testing.assert_close(widened.std(0), scale * test_members.std(0))
    assert calibrate_relative_energies(widened, test_reference).coverage(0.68) == pytest.approx(
        0.68, abs=0.04
    )
    with pytest.raises(ValueError, match="member_energies must be"):
        calibrate_relative_energies(members[:1], reference)
