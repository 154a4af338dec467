import json

import mdtraj
import numpy as np
import pytest

from molsamp.cli import main
from molsamp.systems import lennard_jones_fluid, shipped_pdb


def test_demo_writes_trajectory_energies_checkpoint_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "3000", "--report-interval", "100", "--output", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "mean temperature" in printed and "ramachandran" in printed
    png = (out / "ramachandran.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    energies = np.loadtxt(out / "energies.csv", delimiter=",", skiprows=1)
    assert energies.shape == (30, 6) and np.all(np.diff(energies[:, 0]) == 100)
    assert 150 < energies[:, 5].mean() < 450  # kinetic temperature near 300 K
    frames = mdtraj.load(str(out / "trajectory.dcd"), top=str(shipped_pdb("alanine_dipeptide")))
    assert frames.n_frames == 30
    assert (out / "checkpoint.pt").is_file()
    # the Timewarp section (scaled down with --steps): pairs 1 ps = 10 frames apart, an exact chain
    timewarp = json.loads((out / "timewarp" / "timewarp_results.json").read_text())
    assert timewarp["lag_frames"] == 10 and not timewarp["chain"]["biased"]
    assert timewarp["chain"]["walkers"] == 16 and "timewarp acceptance" in printed


def test_md_runs_a_builtin_system_and_resumes_to_a_longer_run(tmp_path, capsys):
    out = tmp_path / "lj"
    args = [
        "md",
        "--system",
        "lennard_jones_fluid",
        "--timestep-fs",
        "4",
        "--temperature",
        "120",
        "--report-interval",
        "50",
        "--checkpoint-interval",
        "100",
        "--output",
        str(out),
        "--quiet",
    ]
    assert main([*args, "--steps", "200"]) == 0
    assert main([*args, "--steps", "400", "--resume"]) == 0
    energies = np.loadtxt(out / "energies.csv", delimiter=",", skiprows=1)
    assert energies[:, 0].tolist() == list(range(50, 401, 50))
    # the summary's means are the whole run's, and the plot covers it
    printed = capsys.readouterr().out.split("mean potential energy: ")[-1]
    assert printed.startswith(f"{energies[:, 2].mean():.2f} kJ/mol")
    assert f"mean temperature: {energies[:, 5].mean():.1f} K (target 120.0 K)" in printed
    assert f"energy_plot: {out / 'energies.png'}" in printed
    assert (out / "energies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    traj = mdtraj.load(str(out / "trajectory.dcd"), top=lennard_jones_fluid()[0].topology)
    assert traj.n_frames == 8


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--pdb", "missing.pdb"], "PDB file not found: missing.pdb"),
        (["--pdb", "PDB", "--forcefield", "amber_nonsense.xml"], "unknown force field"),
        (["--timestep-fs", "-1"], "--timestep-fs must be > 0 fs, got -1.0"),
        (["--temperature", "0"], "temperature must be > 0 K"),
        (["--friction", "-2"], "friction must be >= 0 1/ps"),
    ],
)
def test_md_bad_input_exits_with_a_clear_message(tmp_path, capsys, arguments, message):
    arguments = [str(shipped_pdb("alanine_dipeptide")) if a == "PDB" else a for a in arguments]
    assert main(["md", "--steps", "10", "--output", str(tmp_path), "--quiet", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_energy_reading_and_plot_take_a_file_with_no_rows_yet(tmp_path):
    from molsamp.analysis import plot_energies, read_energies
    from molsamp.io import CSVReporter

    csv = tmp_path / "energies.csv"
    csv.write_text(CSVReporter.HEADER + "\n")
    assert read_energies(csv).shape == (0, 6)
    assert plot_energies(csv, tmp_path / "energies.png", 300.0).is_file()
