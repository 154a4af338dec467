"""Langevin BAOAB against analytic answers (harmonic oscillator, double well, χ² kinetic energy)."""

import math

import numpy as np
import pytest
import torch

from molsamp.integrators import (
    LangevinBAOAB,
    VelocityVerlet,
    kinetic_energy,
    kinetic_temperature,
    maxwell_boltzmann_velocities,
)
from molsamp.potentials import LennardJones
from molsamp.systems import double_well, harmonic_oscillator
from molsamp.testing import assert_mean_close, effective_sample_size, mean_and_standard_error
from molsamp.units import kT

TEMPERATURE = 300.0
SPRING, MASS = 1000.0, 12.0
OMEGA = math.sqrt(SPRING / MASS)  # 1/ps


def _harmonic_samples(
    splitting: str, timestep: float, n_steps: int = 1500, walkers: int = 256, seed: int = 1
):
    """(x², v²) per step and component, shape (T, walkers·3), after a burn-in."""
    system, state, potential = harmonic_oscillator(
        n_walkers=walkers, spring_constant=SPRING, mass=MASS, seed=seed
    )
    langevin = LangevinBAOAB(
        potential, system.masses, timestep, TEMPERATURE, OMEGA, seed, splitting=splitting
    )
    state = langevin.step(state, 200)
    x2, v2 = [], []
    for _ in range(n_steps):
        state = langevin.step(state, 1)
        x2.append(state.positions.square().reshape(-1).numpy())
        v2.append(state.velocities.square().reshape(-1).numpy())
    return np.array(x2), np.array(v2)


def test_harmonic_oscillator_equipartition_at_small_timestep():
    x2, v2 = _harmonic_samples("BAOAB", timestep=0.1 / OMEGA)
    assert_mean_close(x2, kT(TEMPERATURE) / SPRING, label="<x^2>")
    # on-step velocities carry the O(ω²Δt²/4) = 0.25 % BAOAB damping, far below the error bar here
    assert_mean_close(v2, kT(TEMPERATURE) / MASS * (1 - 0.01 / 4), label="<v^2>")
    assert effective_sample_size(x2) > 5e4


def test_baoab_near_stability_limit_keeps_positions_exact_and_damps_velocities():
    """Leimkuhler–Matthews fingerprint at ωΔt = 1.8: ⟨x²⟩ exact, ⟨v²⟩ scaled by 1 − ω²Δt²/4."""
    dt = 1.8 / OMEGA
    x2, v2 = _harmonic_samples("BAOAB", timestep=dt)
    assert_mean_close(x2, kT(TEMPERATURE) / SPRING, label="BAOAB <x^2>")
    assert_mean_close(v2, kT(TEMPERATURE) / MASS * (1 - 1.8**2 / 4), label="BAOAB <v^2>")


def test_obabo_control_fails_the_baoab_fingerprint():
    """OBABO has exact velocities but ⟨x²⟩ = kT/k / (1 − ω²Δt²/4): the test above must catch it."""
    x2, v2 = _harmonic_samples("OBABO", timestep=1.8 / OMEGA)
    with pytest.raises(AssertionError):
        assert_mean_close(x2, kT(TEMPERATURE) / SPRING)
    assert_mean_close(x2, kT(TEMPERATURE) / SPRING / (1 - 1.8**2 / 4), n_sigma=5, label="OBABO <x^2>")
    assert_mean_close(v2, kT(TEMPERATURE) / MASS, n_sigma=5, label="OBABO <v^2>")


def test_zero_friction_reproduces_velocity_verlet():
    generator = torch.Generator().manual_seed(3)
    positions = torch.arange(6, dtype=torch.float64)[:, None] * torch.tensor(
        [0.37, 0.05, 0.0], dtype=torch.float64
    )
    masses = torch.full((6,), 39.948, dtype=torch.float64)
    velocities = maxwell_boltzmann_velocities(masses, 100.0, 2, generator)
    from molsamp import State

    state = State(positions.expand(2, -1, -1).clone(), velocities)
    potential = LennardJones(0.996, 0.3405)
    langevin = LangevinBAOAB(potential, masses, 0.004, 100.0, 0.0, 9).step(state, 300)
    verlet = VelocityVerlet(potential, masses, 0.004).step(state, 300)
    torch.testing.assert_close(langevin.positions, verlet.positions, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(langevin.velocities, verlet.velocities, rtol=1e-11, atol=1e-12)
    assert (langevin.positions - state.positions).abs().max() > 0.01  # it really moved


def _lj_cluster_kinetic_energies(remove_com: bool, walkers: int = 64, n_steps: int = 3000):
    """Kinetic energies (T, W) of a 4-atom argon cluster at 20 K."""
    temperature = 20.0
    sigma = 0.3405
    tetrahedron = (
        sigma
        * 2 ** (1 / 6)
        / math.sqrt(2)
        * torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
        / math.sqrt(2)
    )
    masses = torch.full((4,), 39.948, dtype=torch.float64)
    generator = torch.Generator().manual_seed(11)
    from molsamp import State

    state = State(
        tetrahedron.expand(walkers, -1, -1).clone(),
        maxwell_boltzmann_velocities(
            masses, temperature, walkers, generator, remove_center_of_mass=remove_com
        ),
    )
    langevin = LangevinBAOAB(
        LennardJones(0.996, sigma), masses, 0.002, temperature, 5.0, generator, remove_com_motion=remove_com
    )
    state = langevin.step(state, 500)
    samples = []
    for _ in range(n_steps // 5):
        state = langevin.step(state, 5)
        samples.append(kinetic_energy(state.velocities, masses).numpy())
    return np.array(samples), langevin.degrees_of_freedom(4), temperature


@pytest.mark.parametrize("remove_com", [False, True])
def test_kinetic_energy_is_chi_squared_with_corrected_degrees_of_freedom(remove_com):
    kinetic, dof, temperature = _lj_cluster_kinetic_energies(remove_com)
    assert dof == (9 if remove_com else 12)
    beta_kinetic = kinetic / kT(temperature)
    # K/kT ~ Gamma(dof/2): mean dof/2, variance dof/2
    assert_mean_close(beta_kinetic, dof / 2, label="<K>/kT")
    centered_square = (beta_kinetic - dof / 2) ** 2
    assert_mean_close(centered_square, dof / 2, n_sigma=4, label="Var(K)/kT²")
    temperatures = kinetic_temperature(torch.from_numpy(kinetic), dof).numpy()
    assert_mean_close(temperatures, temperature, label="T")
    if remove_com:  # the uncorrected 3N count reads 25 % cold: the control must fail
        with pytest.raises(AssertionError):
            assert_mean_close(kinetic_temperature(torch.from_numpy(kinetic), 12).numpy(), temperature)


def test_double_well_histogram_matches_boltzmann_density():
    barrier, minimum = 2.0 * kT(TEMPERATURE), 0.1
    system, state, potential = double_well(n_walkers=256, barrier=barrier, minimum=minimum, seed=3)
    signs = torch.where(torch.arange(256) % 2 == 0, 1.0, -1.0).to(torch.float64)[:, None, None]
    state = state.replace(positions=state.positions * signs)  # start half the walkers in each well
    langevin = LangevinBAOAB(potential, system.masses, 0.002, TEMPERATURE, 5.0, 5)
    state = langevin.step(state, 2000)
    xs = []
    for _ in range(600):
        state = langevin.step(state, 5)
        xs.append(state.positions[:, 0, 0].numpy())
    xs = np.array(xs)  # (T, W)
    edges = np.linspace(-0.16, 0.16, 17)  # every bin holds > 1 % of the probability
    grid = np.linspace(-0.4, 0.4, 200001)
    density = np.exp(-barrier * ((grid / minimum) ** 2 - 1) ** 2 / kT(TEMPERATURE))
    density /= np.trapezoid(density, grid)
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (grid >= low) & (grid < high)
        expected = np.trapezoid(density[inside], grid[inside])
        assert_mean_close(
            ((xs >= low) & (xs < high)).astype(float),
            expected,
            n_sigma=4.5,
            label=f"P({low:.2f}<x<{high:.2f})",
        )
    mean, error = mean_and_standard_error((xs > 0).astype(float))
    assert abs(mean - 0.5) < 4 * error  # both wells equally populated: the walkers cross


def test_langevin_rejects_bad_settings():
    _, _, potential = harmonic_oscillator()
    masses = torch.tensor([12.0])
    with pytest.raises(ValueError, match="timestep must be > 0 ps"):
        LangevinBAOAB(potential, masses, -0.002, 300.0, 1.0, 0)
    with pytest.raises(ValueError, match="temperature must be > 0 K"):
        LangevinBAOAB(potential, masses, 0.002, 0.0, 1.0, 0)
    with pytest.raises(ValueError, match="friction must be >= 0"):
        LangevinBAOAB(potential, masses, 0.002, 300.0, -1.0, 0)
    with pytest.raises(ValueError, match="masses must be > 0 amu"):
        LangevinBAOAB(potential, torch.tensor([-1.0]), 0.002, 300.0, 1.0, 0)
    with pytest.raises(ValueError, match="splitting must be"):
        LangevinBAOAB(potential, masses, 0.002, 300.0, 1.0, 0, splitting="BAXAB")
    with pytest.raises(TypeError, match="generator must be a torch.Generator or an int seed"):
        LangevinBAOAB(potential, masses, 0.002, 300.0, 1.0, None)


def test_device_names_with_and_without_index_are_one_device():
    """A CUDA generator reports ``cuda``, a CUDA tensor ``cuda:0``: both must count as one."""
    from molsamp.integrators.base import on_same_device

    assert on_same_device(torch.device("cpu"), torch.device("cpu:0"))
    assert on_same_device(torch.device("cuda:1"), torch.device("cuda", 1))
    assert not on_same_device(torch.device("cuda:0"), torch.device("cuda:1"))
    assert not on_same_device(torch.device("cpu"), torch.device("cuda:0"))
    generator = torch.Generator(device="cpu:0").manual_seed(0)
    _, state, potential = harmonic_oscillator()
    langevin = LangevinBAOAB(potential, torch.tensor([12.0]), 0.002, 300.0, 1.0, generator)
    assert torch.isfinite(langevin.step(state, 2).positions).all()
