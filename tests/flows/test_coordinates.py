"""Internal coordinates: exact inverse, exact log|det J|, φ/ψ as coordinates, chirality."""

import math

import mdtraj
import numpy as np
import pytest
import torch

from molsamp.flows.coordinates import (
    InternalCoordinates,
    NormalizedInternal,
    ZMatrix,
    alpha_carbon_centres,
    chirality,
    dihedral,
    is_valid_internal,
)


@pytest.fixture(scope="module")
def transform(alanine_frames):
    system, _ = alanine_frames
    return InternalCoordinates(ZMatrix.from_topology(system.topology))


def test_forward_inverse_is_identity_on_md_frames(alanine_frames, transform):
    _, frames = alanine_frames
    internal, external, log_det = transform(frames)
    assert internal.shape == (40, 60) and external.shape == (40, 6)
    positions, inverse_log_det = transform.inverse(internal, external)
    torch.testing.assert_close(positions, frames, rtol=0, atol=1e-6)
    assert (positions - frames).abs().max() < 1e-12  # float64 NeRF is exact to rounding
    torch.testing.assert_close(log_det, -inverse_log_det, rtol=0, atol=1e-10)
    # internal → Cartesian in the canonical frame preserves every internal coordinate
    canonical, _ = transform.inverse(internal)
    torch.testing.assert_close(transform(canonical)[0], internal, rtol=0, atol=1e-10)
    assert is_valid_internal(internal, 22).all()


def test_float32_round_trip(alanine_frames, transform):
    frames = alanine_frames[1].float()
    internal, external, _ = transform.float()(frames)
    assert internal.dtype == torch.float32
    positions, _ = transform.inverse(internal, external)
    assert (positions - frames).abs().max() < 2e-5  # nm, float32 rounding along the chain


def test_log_det_equals_autograd_jacobian_small_molecule():
    zmatrix = ZMatrix((0, 1, 2, 1, 0), ((3, 2, 1, 0), (4, 1, 2, 0)))  # 5 atoms, one improper
    transform = InternalCoordinates(zmatrix)
    generator = torch.Generator().manual_seed(0)
    positions = torch.randn(3, 5, 3, generator=generator, dtype=torch.float64) * 0.15
    internal, external, log_det = transform(positions)
    for b in range(3):
        flat = torch.cat([internal[b], external[b]])

        def to_cartesian(v):
            return transform.inverse(v[None, :9], v[None, 9:])[0].reshape(-1)

        jacobian = torch.autograd.functional.jacobian(to_cartesian, flat)
        sign, logabs = torch.linalg.slogdet(jacobian)
        assert sign != 0
        assert logabs.item() == pytest.approx(-log_det[b].item(), abs=1e-9)


def test_log_det_equals_autograd_jacobian_alanine(alanine_frames, transform):
    _, frames = alanine_frames
    internal, external, log_det = transform(frames[:2])
    flat = torch.cat([internal[0], external[0]])
    jacobian = torch.autograd.functional.jacobian(
        lambda v: transform.inverse(v[None, :60], v[None, 60:])[0].reshape(-1), flat
    )
    assert torch.linalg.slogdet(jacobian)[1].item() == pytest.approx(-log_det[0].item(), abs=1e-8)


def test_backbone_phi_psi_are_coordinates(alanine_frames, transform):
    system, frames = alanine_frames
    trajectory = mdtraj.Trajectory(frames.numpy(), system.topology)
    phi = torch.as_tensor(mdtraj.compute_phi(trajectory)[1][:, 0], dtype=torch.float64)
    psi = torch.as_tensor(mdtraj.compute_psi(trajectory)[1][:, 0], dtype=torch.float64)
    torsions = transform(frames)[0][:, transform.torsion_slice]

    def matches(angle):
        return any(
            (torch.remainder(torsions[:, c] - angle + math.pi, 2 * math.pi) - math.pi).abs().max() < 1e-5
            for c in range(torsions.shape[1])
        )

    assert matches(phi) and matches(psi)


def test_dihedral_convention_matches_mdtraj():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(50, 4, 3, generator=generator, dtype=torch.float64)
    topology = mdtraj.Topology()
    residue = topology.add_residue("X", topology.add_chain())
    for _ in range(4):
        topology.add_atom("C", mdtraj.element.carbon, residue)
    reference = mdtraj.compute_dihedrals(mdtraj.Trajectory(x.numpy(), topology), [[0, 1, 2, 3]])[:, 0]
    np.testing.assert_allclose(dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3]).numpy(), reference, atol=1e-5)


@pytest.mark.parametrize("whiten", [False, True])
def test_normalized_coordinates(alanine_frames, transform, whiten):
    system, frames = alanine_frames
    if whiten:  # whitening 41 bonds and angles needs more than 41 frames
        generator = torch.Generator().manual_seed(9)
        frames = frames.repeat(3, 1, 1) + 2e-3 * torch.randn(
            120, 22, 3, generator=generator, dtype=frames.dtype
        )
    normalized = NormalizedInternal(transform.double(), frames, whiten=whiten)
    z, correction = normalized(frames)
    real = z[:, ~normalized.circular]
    expected_covariance = torch.eye(real.shape[1], dtype=z.dtype)
    torch.testing.assert_close(real.mean(0), torch.zeros(real.shape[1], dtype=z.dtype), atol=1e-10, rtol=0)
    covariance = torch.cov(real.T)
    if not whiten:  # unit variances only
        covariance = torch.diag(covariance.diagonal())
    torch.testing.assert_close(covariance, expected_covariance, atol=1e-5, rtol=0)
    torsions = z[:, normalized.circular]
    assert (torsions >= -math.pi).all() and (torsions < math.pi).all()
    positions, log_det = normalized.inverse(z)
    torch.testing.assert_close(correction, -log_det, atol=1e-10, rtol=0)
    torch.testing.assert_close(normalized(positions)[0], z, atol=1e-9, rtol=0)
    assert normalized.valid(z).all()
    broken = z.clone()
    broken[0, 0] = -1e3  # a negative bond length
    assert normalized.valid(broken).tolist() == [False] + [True] * (len(z) - 1)
    # log|det| of the whole map z → x equals autograd's, restricted to the internal block
    row = z[0]
    jacobian = torch.autograd.functional.jacobian(lambda v: normalized._denormalize(v[None])[0], row)
    assert torch.linalg.slogdet(jacobian)[1].item() == pytest.approx(normalized._log_scale().item(), abs=1e-9)


def test_chirality_flips_under_reflection(alanine_frames):
    system, frames = alanine_frames
    centres = alpha_carbon_centres(system.topology)
    assert len(centres) == 1
    sign = chirality(frames, *centres[0])
    assert (sign == sign[0]).all() and sign[0] != 0
    mirrored = frames * torch.tensor([-1.0, 1.0, 1.0], dtype=frames.dtype)
    assert (chirality(mirrored, *centres[0]) == -sign).all()


def test_bad_zmatrix_names_the_problem():
    with pytest.raises(ValueError, match="references placed before it"):
        ZMatrix((0, 1, 2, 1, 0), ((3, 2, 1, 4), (4, 1, 2, 0)))
