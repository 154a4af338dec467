"""The TrajCast acceptance example and speed benchmark end to end, on a smoke budget."""

import json
import math

import numpy as np
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
    contraction = alanine["phase_space_log_volume_change_per_step"]  # 22 atoms, γ = 0.2/ps, Δt = 10 fs
    assert math.isfinite(contraction["mean"]) and contraction["states"] == 4  # 32 outside --quick
    assert contraction["md_data_friction"] == pytest.approx(-3 * 22 * 0.2 * 0.01)
    for run, basins in alanine["basins"].items():  # every frame in one basin; C5 as counted above
        assert sum(b["share"] for b in basins.values()) == pytest.approx(1.0)
        assert basins["C5"]["share"] == pytest.approx(
            c5["forecast" if run == "forecast" else "md_same_starts"]
        )
    assert json.loads((out / "report.json").read_text())["alanine_dipeptide"]["interval_multiple"] == 10
    for path in lj["plots"] + alanine["plots"]:
        assert path.endswith(".png")
    rows = load("benchmarks/trajcast_speed.py").main(
        ["--models", str(out), "--forecast-steps", "10", "--repeats", "1"]
    )
    for name in ("lennard_jones_fluid", "alanine_dipeptide"):
        assert all(rate > 0 for rate in rows[name]["ps_per_s"].values())


def test_basin_table_assigns_every_frame_to_one_basin():
    example = load("examples/trajcast_forecast.py")
    degrees = np.array(
        [
            [-150, 155],
            [-80, 116],
            [-80, -151],
            [-80, 70],
            [-80, 114],
            [-80, 31],
            [-75, -20],
            [-80, -149],
            [60, 40],
        ]
    )  # C5 ×3, C7eq ×3, αR ×2, φ > 0; near the edges
    energies = np.arange(len(degrees), dtype=float)
    table = example._basin_table({"run": np.radians(degrees)}, {"run": energies})["run"]
    assert {name: b["share"] * len(degrees) for name, b in table.items()} == pytest.approx(
        {"C5": 3, "C7eq": 3, "alpha_R": 2, "phi_positive": 1}
    )
    assert table["C5"]["mean_energy_kJ_per_mol"] == pytest.approx(1.0)  # frames 0, 1, 2
    assert table["alpha_R"]["mean_energy_kJ_per_mol"] == pytest.approx(6.5)
    empty = example._basin_table({"run": np.radians(degrees[:1])}, {"run": energies[:1]})["run"]
    assert empty["C7eq"] == {"share": 0.0, "mean_energy_kJ_per_mol": None}


def test_speed_benchmark_reports_an_exploded_rollout_instead_of_failing():
    temperature = load("benchmarks/trajcast_speed.py")._temperature
    assert temperature({"kinetic_forecast": {"temperature_mean_K": 299.94}}) == "299.9 K"
    skipped = {"kinetic_forecast": {"skipped": "3 forecast frames: too few"}}
    assert temperature(skipped) == "not measured (3 forecast frames: too few)"
