"""The TrajCast acceptance example and speed benchmark end to end, on a smoke budget."""

import json
import math

import pytest

from .test_examples_slow import load


@pytest.mark.slow
def test_trajcast_example_and_benchmark_smoke(tmp_path):
    out = tmp_path / "tc"
    report = load("examples/trajcast_forecast.py").main(["--output", str(out), "--quick"])
    lj, alanine = report["lennard_jones"], report["alanine_dipeptide"]
    assert lj["rollout"]["requested_steps"] == 200 and lj["interval_multiple"] == 10
    assert math.isfinite(lj["rdf_distance"]) and math.isfinite(alanine["phi_psi_js"])
    c5 = alanine["fraction_c5"]
    assert 0 <= c5["md"] <= 1 and len(c5["forecast_per_walker"]) == alanine["rollout"]["walkers"] == 16
    assert len(c5["md_same_starts_per_walker"]) == 16 and math.isfinite(
        alanine["phi_psi_js_md_same_starts_and_length"]
    )
    assert json.loads((out / "report.json").read_text())["alanine_dipeptide"]["interval_multiple"] == 10
    for path in lj["plots"] + alanine["plots"]:
        assert path.endswith(".png")
    rows = load("benchmarks/trajcast_speed.py").main(
        ["--models", str(out), "--forecast-steps", "10", "--repeats", "1"]
    )
    for name in ("lennard_jones_fluid", "alanine_dipeptide"):
        assert all(rate > 0 for rate in rows[name]["ps_per_s"].values())


def test_speed_benchmark_reports_an_exploded_rollout_instead_of_failing():
    temperature = load("benchmarks/trajcast_speed.py")._temperature
    assert temperature({"kinetic_forecast": {"temperature_mean_K": 299.94}}) == "299.9 K"
    skipped = {"kinetic_forecast": {"skipped": "3 forecast frames: too few"}}
    assert temperature(skipped) == "not measured (3 forecast frames: too few)"
