"""md_frames: MD data for the alanine flows, from the shipped structure or a given start."""

import pytest
import torch

from molsamp.flows.ramachandran import md_frames, phi_psi


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
