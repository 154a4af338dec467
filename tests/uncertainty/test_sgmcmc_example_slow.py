"""The SG-MCMC alanine study end to end on a smoke budget, then again on the first run's
reference MD and posterior samples."""

import json
import math

import pytest

from ..flows.test_examples_slow import load


@pytest.mark.slow
def test_sgmcmc_example_smoke_then_reuse_of_reference_and_samples(tmp_path):
    example = load("examples/sgmcmc_alanine.py")
    tiny = ["--frames", "160", "--test-frames", "20", "--map-minutes", "0.05", "--energy-minutes", "0.02"]
    tiny += ["--samples-per-chain", "2"]
    tiny += ["--cycle-steps", "3", "--ensemble-minutes", "0.02", "--quiet"]
    tiny += ["--posterior-temperature", "1", "--lr", "1e-4"]  # the default T is for a trained MAP
    first = example.main(
        tiny + ["--ensemble-members", "2", "--reference-frames", "60", "--output", str(tmp_path / "a")]
    )
    for name in ("sgmcmc", "deep_ensemble"):
        report = first[name]
        assert report["members"] == (4 if name == "sgmcmc" else 2)
        assert 0 <= report["energy_coverage_95_raw"] <= 1 and report["energy_recalibration_factor"] > 0
        assert math.isfinite(report["coverage_68"])
        for torsion in ("phi", "psi"):
            profile = report[torsion]
            assert profile["energy_scale"] == report["energy_recalibration_factor"]
            assert 0 <= profile["bins_inside_simultaneous_band"] <= profile["bins"]
            assert 0 <= profile["raw"]["bins_inside_simultaneous_band"] <= profile["raw"]["bins"]
            # a 3-second MAP can leave no bin with weight in every resample: then no plot
            assert (tmp_path / "a" / f"{torsion}_profile_{name}.png").is_file() == (profile["bins"] > 0)
        for png in (f"calibration_{name}.png", f"energy_calibration_{name}.png"):
            assert (tmp_path / "a" / png).read_bytes()[:4] == b"\x89PNG"
    again = ["--ensemble-members", "0", "--reference-md", str(tmp_path / "a" / "reference_md.npz")]
    again += ["--posterior-from", str(tmp_path / "a"), "--output", str(tmp_path / "b")]
    second = example.main(tiny + again)
    assert not (tmp_path / "b" / "reference_md.npz").exists()  # read, not re-run
    saved = json.loads((tmp_path / "b" / "report.json").read_text())["sgmcmc"]
    assert saved["samples"] == 4 and saved["samples_from"] == str(tmp_path / "a")
    # the same samples on the same frames: identical predictions
    assert second["sgmcmc"]["test_force_mae"] == first["sgmcmc"]["test_force_mae"]
    assert second["sgmcmc"]["phi"]["bins_inside_band"] == first["sgmcmc"]["phi"]["bins_inside_band"]


def test_torsion_profile_band_holds_a_reference_the_members_scatter_around(tmp_path):
    """Members = reference energies + frame noise: the reweighted profiles scatter around the
    reference, so the (widened) simultaneous band holds it in every populated bin; the plot
    and the arrays are written."""
    import numpy as np
    import torch

    example = load("examples/sgmcmc_alanine.py")
    generator = np.random.default_rng(0)
    angles = np.concatenate([generator.normal(-150, 15, 3000), generator.normal(-75, 10, 3000)])
    angles = (angles + 180) % 360 - 180
    amber = generator.normal(0, 5, len(angles))
    members = torch.from_numpy(amber[None] + generator.normal(0, 0.3, (8, len(angles))))
    report = example.torsion_profile("phi", angles, members, amber, tmp_path, "synthetic", 1.5)
    assert report["bins"] >= 6 and report["inside_simultaneous_band"]
    assert report["raw"]["bins"] == report["bins"] and min(report["kish_ess_fraction_per_member"]) > 0.5
    assert (tmp_path / "phi_profile_synthetic.png").read_bytes()[:4] == b"\x89PNG"
    assert np.load(tmp_path / "phi_profiles_synthetic.npz")["members"].shape == (8, 18)
