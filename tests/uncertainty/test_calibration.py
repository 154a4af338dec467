import numpy as np
import pytest
import torch

from molsamp.uncertainty import calibrate, plot_calibration, recalibration_factor


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
