"""The alanine Boltzmann-generator example and flow benchmark end to end, on tiny budgets."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_and_benchmark_run_end_to_end(tmp_path):
    out = tmp_path / "bg"
    results = load("examples/boltzmann_alanine.py").main(
        # seed ≠ 0: the benchmark must rebuild the flow's coupling masks with the run's own seed
        # a short αL run as well: two training runs, the second started from with_phi_psi
        ["--output", str(out), "--md-ns", "0.2", "--alpha-l-ns", "0.05", "--train-minutes", "0.25"]
        + ["--samples", "2000", "--seed", "3"]
    )
    assert results["n_samples"] == 2000 and 1.0 <= results["kish_ess"] <= 2000
    assert results["training_frames"] == 200 + 10 and len(results["ess_percent_batches"]) == 5
    assert math.isfinite(results["js_reweighted_vs_reference"])
    assert (out / "boltzmann_generator.pt").is_file() and (out / "results.json").is_file()
    samples = np.load(out / "samples.npz")
    assert not np.isnan(samples["log_weights"]).any()
    # the benchmark reloads the flow (weights_only) from the frames it was trained on
    frames = out / "training_frames.npy"
    rows = load("benchmarks/flow_sampling.py").main(
        [
            "--run",
            str(out),
            "--training-frames",
            str(frames),
            "--md-ns",
            "0.02",
            "--torch-md-steps",
            "4000",
            "--flow-samples",
            "500",
            "--walkers",
            "4",
            "--mcmc-iterations",
            "20",
        ]
    )
    assert [r["method"] for r in rows][:2] == ["Langevin MD (openmm)", "Langevin MD (torch)"]
    assert all(r["ess"] >= 0 and r["energy_evaluations"] > 0 for r in rows)
    # 20 ps of MD may never cross, and a 30-second flow's MH chain may never accept (ESS 0 for both);
    # the Kish ESS of reweighting counts at least the heaviest sample
    reweighting, mcmc = rows[2], rows[3]
    assert 1.0 <= reweighting["ess"] <= 500
    assert 0.0 <= mcmc["acceptance_rate"] <= 1.0 and mcmc["energy_evaluations"] == 4 * (20 + 1)
    assert json.loads((out / "benchmark.json").read_text())["rows"]
