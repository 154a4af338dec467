"""``molsamp sample --method timewarp``, the glycine builder, and the Timewarp example and
benchmark end to end on tiny budgets (slow)."""

import json
import math

import numpy as np
import pytest
import torch

from molsamp.cli import main

from .test_examples_slow import load


def test_sample_method_timewarp_writes_results(tmp_path, alanine_frames, capsys):
    _, frames = alanine_frames
    trajectory = tmp_path / "frames.npy"
    np.save(trajectory, frames.numpy())
    out = tmp_path / "timewarp"
    arguments = ["sample", "--method", "timewarp", "--trajectory", str(trajectory), "--output", str(out)]
    options = ["--flow-minutes", "0.05", "--chain-minutes", "0.05", "--walkers", "4", "--proposals", "2"]
    assert main([*arguments, *options]) == 0
    captured = capsys.readouterr()
    assert "timewarp acceptance" in captured.out and "reference half vs half" in captured.out
    assert "timewarp training:" in captured.err and "timewarp chain:" in captured.err  # progress bars
    results = json.loads((out / "timewarp_results.json").read_text())
    assert 0.0 <= results["chain"]["acceptance_rate"] <= 1.0 and not results["chain"]["biased"]
    assert 0.0 <= results["comparison"]["js_chain_vs_reference"] <= math.log(2)
    assert (out / "ramachandran_chain_vs_md.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "timewarp.pt").is_file() and (out / "timewarp.pt.json").is_file()
    assert np.load(out / "timewarp_chain_phi_psi.npy").shape[1:] == (4, 2)
    # both phases ran: likelihood, then 40 % of the budget with the acceptance loss
    assert results["training_steps"]["likelihood"] > 0 and results["training_steps"]["fine_tune"] > 0
    capsys.readouterr()
    assert main([*arguments, *options, "--fine-tune-fraction", "1.0"]) == 2
    assert "--fine-tune-fraction must be in [0, 1)" in capsys.readouterr().err


def test_sample_timewarp_explore_is_labelled_biased(tmp_path, alanine_frames, capsys):
    _, frames = alanine_frames
    trajectory = tmp_path / "frames.npy"
    np.save(trajectory, frames.numpy())
    arguments = ["sample", "--method", "timewarp", "--trajectory", str(trajectory), "--explore"]
    options = ["--flow-minutes", "0.02", "--chain-minutes", "0.02", "--walkers", "2", "--proposals", "2"]
    assert main([*arguments, *options, "--output", str(tmp_path / "explore")]) == 0
    assert "BIASED" in capsys.readouterr().out


def test_glycine_dipeptide_is_a_capped_glycine():
    from molsamp.systems import glycine_dipeptide

    system, state, potential = glycine_dipeptide()
    names = [(a.residue.name, a.name) for a in system.topology.atoms]
    assert system.n_atoms == 19 and ("GLY", "HA3") in names and ("GLY", "HA2") in names
    assert not any(name.startswith("HB") or name == "CB" for _, name in names)
    assert torch.isfinite(potential.energy(state.positions)).all()


@pytest.mark.slow
def test_timewarp_example_and_benchmark_run_end_to_end(tmp_path):
    out = tmp_path / "tw"
    report = load("examples/timewarp_alanine.py").main(
        [
            "--output", str(out), "--data-ns", "0.1", "--reference-ns", "0.1", "--train-minutes", "0.3", "--fine-tune-minutes", "0.1",
            "--chain-minutes", "0.1", "--transfer-minutes", "0.1", "--walkers", "4", "--proposals", "2",
        ]
    )  # fmt: skip
    assert 0.0 <= report["alanine"]["chain"]["acceptance_rate"] <= 1.0
    assert "acceptance_rate" in report["glycine_transfer"]["chain"]
    assert (out / "results.json").is_file() and (out / "ramachandran_chain_vs_md.png").is_file()
    rows = load("benchmarks/timewarp_sampling.py").main(
        [
            "--run",
            str(out),
            "--md-ns",
            "0.02",
            "--torch-md-ps",
            "2",
            "--chain-seconds",
            "5",
            "--walkers",
            "4",
        ]
    )
    assert [r["method"] for r in rows] == [
        "Langevin MD (openmm)",
        "Langevin MD (torch)",
        "molsamp Langevin, 4 walkers (no flow)",
        "Timewarp MH chain + 100 Langevin",
    ]
    assert report["alanine"]["comparison"]["reference_matched_floor"]["windows"] >= 2
    # a saved flow samples again without training
    again = load("examples/timewarp_alanine.py").main(
        [
            "--output", str(tmp_path / "again"), "--flow", str(out / "timewarp.pt"), "--data-ns", "0.1",
            "--reference-ns", "0.1", "--chain-minutes", "0.1", "--transfer-minutes", "0", "--walkers", "2",
            "--proposals", "2", "--langevin-steps", "10",
        ]
    )  # fmt: skip
    assert again["flow_file"] == str(out / "timewarp.pt") and "training_s" not in again
    assert again["alanine"]["chain"]["walkers"] == 2
    assert json.loads((out / "benchmark.json").read_text())["rows"]
