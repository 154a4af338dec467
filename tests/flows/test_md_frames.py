"""md_frames: MD data for the alanine flows, from the shipped structure or a given start."""

import math

import pytest
import torch

from molsamp.flows.ramachandran import md_frames, phi_psi, with_phi_psi


def test_md_frames_start_from_the_given_positions(alanine_frames):
    system, frames = alanine_frames
    start = frames[-1] + torch.tensor([5.0, 0.0, 0.0], dtype=frames.dtype)  # far from the shipped structure
    out = md_frames("vacuum", 300.0, 0.0001, interval_ps=0.01, seed=1, equilibration_ps=0.0, start=start)
    assert out.shape == (10, 22, 3)
    # in 10 fs a hydrogen at 300 K moves ~0.03 nm (≪ the 5 nm shift); the backbone keeps its torsions
    assert (out[0] - start).norm(dim=-1).max() < 0.1
    angles = torch.as_tensor(phi_psi(torch.stack([start, out[0]]), system.topology))
    assert torch.allclose(angles[0], angles[1], atol=0.1)


def test_md_frames_start_must_be_one_frame():
    with pytest.raises(ValueError, match=r"start must be \(22, 3\)"):
        md_frames("vacuum", 300.0, 0.0001, start=torch.zeros(2, 22, 3, dtype=torch.float64))


def test_with_phi_psi_sets_both_torsions_and_keeps_the_internal_geometry(alanine_frames, alanine):
    system, frames = alanine_frames
    _, _, potential = alanine
    x = frames[0]
    moved = with_phi_psi(x, system.topology, 60.0, 40.0)  # αL
    phi, psi = phi_psi(moved[None], system.topology)[0]
    assert math.degrees(phi) == pytest.approx(60.0, abs=1e-8) and math.degrees(psi) == pytest.approx(
        40.0, abs=1e-8
    )
    # rigid rotations about bonds: every bonded (1–2) and 1–3 distance is unchanged
    neighbours = {atom.index: [] for atom in system.topology.atoms}
    for a, b in system.topology.bonds:
        neighbours[a.index].append(b.index)
        neighbours[b.index].append(a.index)
    kept = {(i, j) for i in neighbours for j in neighbours[i]}
    kept |= {(i, k) for j in neighbours for i in neighbours[j] for k in neighbours[j] if i != k}
    kept = sorted(kept)

    def distance(y):
        return torch.stack([(y[i] - y[j]).norm() for i, j in kept])

    torch.testing.assert_close(distance(moved), distance(x), atol=1e-12, rtol=0)
    assert torch.isfinite(potential.energy(moved[None])).all()
    with pytest.raises(ValueError, match=r"positions must be \(22, 3\)"):
        with_phi_psi(frames[:2], system.topology, 60.0, 40.0)
