"""``molsamp sample`` and the flow section of ``molsamp demo`` (short runs)."""

import json

import numpy as np

from molsamp.cli import main


def test_sample_trains_draws_and_writes_results(tmp_path, alanine_frames, capsys):
    _, frames = alanine_frames
    trajectory = tmp_path / "frames.npy"
    np.save(trajectory, frames.numpy())
    out = tmp_path / "sample"
    arguments = ["sample", "--trajectory", str(trajectory), "--output", str(out)]
    assert main([*arguments, "--flow-minutes", "0.03", "--flow-samples", "300", "--ml-fraction", "0.5"]) == 0
    captured = capsys.readouterr()
    assert "Kish ESS" in captured.out and "MD half vs half" in captured.out
    assert "flow training:" in captured.err  # the progress bar over the training budget
    results = json.loads((out / "flow_results.json").read_text())
    assert results["n_samples"] == 300 and 1.0 <= results["kish_ess"] <= 300
    assert 0.0 <= results["js_reweighted_vs_reference"] <= np.log(2)
    assert "F(alphaR) - F(beta)" in results["delta_f_kJ_per_mol"]
    stored = np.load(out / "flow_samples.npz")
    assert stored["phi_psi"].shape == (300, 2) and not np.isnan(stored["log_weights"]).any()
    assert (out / "ramachandran_flow_vs_md.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "boltzmann_generator.pt").is_file() and (out / "flow_training.json").is_file()


def test_sample_draws_again_from_a_saved_generator_without_training(tmp_path, alanine_frames, capsys):
    _, frames = alanine_frames
    trajectory = tmp_path / "frames.npy"
    np.save(trajectory, frames.numpy())
    first, again = tmp_path / "first", tmp_path / "again"
    common = ["sample", "--trajectory", str(trajectory), "--flow-samples", "200", "--seed", "4"]
    options = ["--flow-minutes", "0.02", "--ml-fraction", "0.5", "--quiet"]
    assert main([*common, "--output", str(first), *options]) == 0
    assert "flow training:" not in capsys.readouterr().err
    saved = first / "boltzmann_generator.pt"
    assert main([*common, "--output", str(again), "--flow-from", str(saved)]) == 0
    assert f"flow loaded from {saved}" in capsys.readouterr().out
    drawn = [np.load(folder / "flow_samples.npz") for folder in (first, again)]
    np.testing.assert_array_equal(drawn[1]["phi_psi"], drawn[0]["phi_psi"])
    np.testing.assert_array_equal(drawn[1]["log_weights"], drawn[0]["log_weights"])
    results = json.loads((again / "flow_results.json").read_text())
    assert results["loaded_from"] == str(saved) and results["training_steps"] == 0
    assert not (again / "flow_training.json").exists()


def test_demo_adds_the_flow_report(tmp_path, capsys):
    out = tmp_path / "demo"
    arguments = ["demo", "--steps", "4000", "--report-interval", "100", "--output", str(out), "--quiet"]
    assert main([*arguments, "--flow-minutes", "0.03", "--flow-samples", "300"]) == 0
    printed = capsys.readouterr().out
    assert "ΔF F(C7ax) - F(C7eq)" in printed and "ΔF F(alphaR) - F(C7eq)" in printed
    assert "Kish ESS" in printed
    assert (out / "ramachandran_flow_vs_md.png").is_file()


def test_sample_names_a_missing_trajectory(tmp_path, capsys):
    assert main(["sample", "--trajectory", str(tmp_path / "none.npy"), "--output", str(tmp_path)]) == 2
    assert "trajectory not found" in capsys.readouterr().err
