"""The two potential-training examples end to end, on smoke budgets."""

import json
import math

import pytest

from ..flows.test_examples_slow import load


@pytest.mark.slow
def test_mace_acceptance_example_reports_an_undertrained_model_instead_of_crashing(tmp_path):
    """Seconds of training give a model whose MD blows up: the example still evaluates it on
    the held-out frames, saves it and writes its report, with the explosion as the MD result."""
    out = tmp_path / "mace"
    arguments = ["--frames", "20", "--test-frames", "10", "--minutes", "0.05", "--md-ps", "0.1"]
    report = load("examples/train_alanine_mace.py").main([*arguments, "--output", str(out), "--quiet"])
    assert report["epochs"] >= 1 and math.isfinite(report["test"]["forces_mae"])
    md = report["md"]  # 100 MD steps, a frame every 100: it blows up, or writes one frame
    assert md["ps"] == 0.1 and (md.get("exploded") or md["frames"] == 1)
    assert report["passed"] is False  # 3 s of training are far from 5 % of the mean force
    assert json.loads((out / "report.json").read_text())["passed"] is False
    assert (out / "mace-alanine.pt").is_file()


@pytest.mark.slow
def test_data_parallel_example_runs_in_one_process(tmp_path):
    out = tmp_path / "ddp"
    report = load("examples/train_distributed.py").main(
        ["--frames", "16", "--epochs", "2", "--hidden-irreps", "4x0e+4x1o", "--output", str(out), "--quiet"]
    )
    assert report["ranks"] == 1 and report["epochs"] == 2 and math.isfinite(report["forces_mae"])
    assert len(report["later_epoch_seconds"]) == 1 and (out / "model.pt").is_file()
