"""Saved Boltzmann generators: a reloaded generator is the same density and draws the same samples."""

import pytest
import torch

from molsamp.flows import load_boltzmann_generator, save_boltzmann_generator
from molsamp.potentials import save_potential
from molsamp.potentials.mace import MACE

from .toy_molecule import TEMPERATURE, ChainPotential, chain_system, rough_frames


@pytest.fixture
def trained(tmp_path):
    """A chain generator trained a few steps (an untrained flow is the identity), and its file."""
    from molsamp.flows import BoltzmannGenerator

    frames = rough_frames(500, 4)
    bg = BoltzmannGenerator.build(
        chain_system(), ChainPotential(), frames, TEMPERATURE, torch.Generator().manual_seed(7),
        dtype=torch.float64, n_couplings=4, hidden=16,
    )  # fmt: skip
    bg.train(frames, torch.Generator().manual_seed(8), n_steps=30, batch_size=64, learning_rate=1e-2)
    return bg, frames, save_boltzmann_generator(bg, tmp_path / "bg.pt")


def test_a_reloaded_generator_is_the_same_density_and_sampler(trained):
    bg, frames, path = trained
    loaded = load_boltzmann_generator(path, chain_system(), ChainPotential())
    assert loaded.flow.dtype == torch.float64 and loaded.temperature == TEMPERATURE
    # the halves of a generator built from another seed differ: they must come from the file
    assert torch.equal(loaded.flow.halves, bg.flow.halves)
    expected = bg.log_prob(frames[:50])
    assert expected.std() > 0.1  # trained: the test would pass trivially for an identity flow
    torch.testing.assert_close(loaded.log_prob(frames[:50]), expected, rtol=0, atol=0)
    a, b = (g.draw(300, torch.Generator().manual_seed(9)) for g in (bg, loaded))
    torch.testing.assert_close(b.positions, a.positions, rtol=0, atol=0)
    torch.testing.assert_close(b.log_weights, a.log_weights, rtol=0, atol=0)
    assert loaded.chiral_centres == bg.chiral_centres


def test_a_generator_reweights_to_another_temperature(trained):
    bg, frames, path = trained
    hot = load_boltzmann_generator(path, chain_system(), ChainPotential(), temperature=2 * TEMPERATURE)
    torch.testing.assert_close(hot.reduced_energy(frames[:20]), 0.5 * bg.reduced_energy(frames[:20]))


def test_loading_names_the_mismatch(trained, tmp_path):
    _, _, path = trained
    from molsamp.systems import alanine_dipeptide

    alanine, _, amber = alanine_dipeptide()
    with pytest.raises(ValueError, match="generator for 4 atoms but the system has 22"):
        load_boltzmann_generator(path, alanine, amber)
    other = save_potential(MACE([1, 6], r_max=0.4, hidden_irreps="4x0e"), tmp_path / "mace.pt")
    with pytest.raises(ValueError, match="not a molsamp Boltzmann generator"):
        load_boltzmann_generator(other, chain_system(), ChainPotential())
