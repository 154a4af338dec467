"""CUDA against CPU: potentials, Langevin, flows and training on a GPU (skipped without one).

Run on a GPU machine with ``pytest -m cuda``. Each test computes the same thing on both
devices from the same weights and inputs; float64 agrees to round-off, float32 loosely.
"""

from __future__ import annotations

import math

import pytest
import torch

from molsamp.integrators import LangevinBAOAB, VelocityVerlet, simulate
from molsamp.system import State

from .potentials.conftest import random_structure
from .potentials.models import MODELS

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ELEMENTS = torch.tensor([8, 1, 1, 6, 1, 7, 1, 8, 6, 1])
TOLERANCE = {torch.float64: dict(rtol=1e-9, atol=1e-8), torch.float32: dict(rtol=2e-4, atol=2e-3)}


def _walkers(n_walkers: int = 4, dtype=torch.float64) -> torch.Tensor:
    return torch.stack([random_structure(10, 0.55, seed=60 + k) for k in range(n_walkers)]).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_potential_on_cuda_matches_cpu(name, dtype):
    cpu = MODELS[name](r_max=0.3).to(dtype).bind(ELEMENTS)
    gpu = MODELS[name](r_max=0.3).to(dtype).bind(ELEMENTS).to("cuda")
    x = _walkers(dtype=dtype)
    energy, forces = cpu.energy_and_forces(x)
    energy_gpu, forces_gpu = gpu.energy_and_forces(x.cuda())
    assert energy_gpu.device.type == "cuda" and forces_gpu.device.type == "cuda"
    torch.testing.assert_close(energy_gpu.cpu(), energy, **TOLERANCE[dtype])
    torch.testing.assert_close(forces_gpu.cpu(), forces, **TOLERANCE[dtype])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_all_pairs_walkers_on_cuda_match_cpu(name):
    """skin = inf: one pair list for good, no per-step sync; same energies and forces."""
    cpu = MODELS[name](r_max=0.3).bind(ELEMENTS)
    gpu = MODELS[name](r_max=0.3).bind(ELEMENTS).to("cuda")
    gpu._cache.skin = math.inf
    x = _walkers()
    for scale in (1.0, 1.1):
        energy, forces = cpu.energy_and_forces(x * scale)
        energy_gpu, forces_gpu = gpu.energy_and_forces(x.cuda() * scale)
        torch.testing.assert_close(energy_gpu.cpu(), energy, **TOLERANCE[torch.float64])
        torch.testing.assert_close(forces_gpu.cpu(), forces, **TOLERANCE[torch.float64])
    assert gpu._cache.n_builds == 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predict_on_cuda_matches_cpu_with_stress(name):
    cpu = MODELS[name](r_max=0.3)
    gpu = MODELS[name](r_max=0.3).to("cuda")
    x = random_structure(10, 0.55, seed=70)
    cell = 0.55 * torch.eye(3, dtype=torch.float64)
    out = cpu.predict(ELEMENTS, x, cell=cell[None], stress=True)
    out_gpu = gpu.predict(ELEMENTS.cuda(), x.cuda(), cell=cell[None].cuda(), stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(out_gpu[key].cpu(), out[key], **TOLERANCE[torch.float64])


def test_velocity_verlet_trajectory_on_cuda_matches_cpu():
    """Deterministic dynamics (no noise): 50 steps of B walkers agree between devices."""
    model = MODELS["mace"](r_max=0.3).bind(ELEMENTS)
    masses = torch.full((10,), 12.0)
    x = _walkers()
    start = State(x, torch.zeros_like(x))
    cpu = VelocityVerlet(model, masses, 0.0005).step(start, 50)
    gpu_model = MODELS["mace"](r_max=0.3).bind(ELEMENTS).to("cuda")
    gpu = VelocityVerlet(gpu_model, masses, 0.0005).step(start.to("cuda"), 50)
    torch.testing.assert_close(gpu.positions.cpu(), cpu.positions, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(gpu.velocities.cpu(), cpu.velocities, rtol=1e-7, atol=1e-7)


def test_langevin_on_cuda_samples_the_right_temperature():
    """Harmonic oscillators on the GPU with a CUDA generator: ⟨x²⟩ = kT/k within 5 σ."""
    from molsamp.systems import harmonic_oscillator
    from molsamp.testing import mean_and_standard_error
    from molsamp.units import kT

    spring, mass, temperature = 1000.0, 12.0, 300.0
    system, state, potential = harmonic_oscillator(
        n_walkers=512, spring_constant=spring, mass=mass, device="cuda", seed=1
    )
    generator = torch.Generator(device="cuda").manual_seed(2)
    langevin = LangevinBAOAB(potential, system.masses, 0.002, temperature, 10.0, generator)
    state = simulate(langevin, state, 500, progress=False)
    samples = []
    for _ in range(200):
        state = langevin.step(state, 5)
        samples.append(state.positions.square().mean(dim=(1, 2)))
    assert state.positions.device.type == "cuda"
    mean, error = mean_and_standard_error(torch.stack(samples).cpu().numpy())  # (T, walkers)
    assert abs(mean - kT(temperature) / spring) < 5 * error


def test_flow_on_cuda_matches_cpu():
    from .flows.test_flow import perturbed_flow, random_inputs

    flow = perturbed_flow()
    x = random_inputs(64, flow)
    log_p = flow.log_prob(x)
    flow_gpu = perturbed_flow().to("cuda")
    torch.testing.assert_close(flow_gpu.log_prob(x.cuda()).cpu(), log_p, rtol=1e-9, atol=1e-9)
    samples, log_q = flow_gpu.sample(32, torch.Generator(device="cuda").manual_seed(0))
    assert samples.device.type == "cuda" and torch.isfinite(log_q).all()


def test_a_saved_boltzmann_generator_loads_onto_cuda(tmp_path):
    from molsamp.flows import load_boltzmann_generator, save_boltzmann_generator

    from .flows.test_boltzmann import chain_generator
    from .flows.toy_molecule import ChainPotential, chain_system

    bg, frames = chain_generator()
    path = save_boltzmann_generator(bg, tmp_path / "bg.pt")
    gpu = load_boltzmann_generator(path, chain_system(), ChainPotential(), device="cuda")
    torch.testing.assert_close(
        gpu.log_prob(frames[:32].cuda()).cpu(), bg.log_prob(frames[:32]), rtol=1e-9, atol=1e-9
    )
    z, log_q = gpu.flow.sample(16, torch.Generator(device="cuda").manual_seed(0))
    assert z.device.type == "cuda" and torch.isfinite(log_q).all()


def test_flow_mcmc_runs_on_cuda_without_leaving_the_device():
    from molsamp.flows.mcmc import IndependenceMetropolis, flow_mcmc
    from molsamp.potentials import DoubleWell

    potential = DoubleWell(5.0, 0.1, 1000.0)
    scale = 0.1

    def propose(n, generator):
        x = scale * torch.randn(n, 1, 3, generator=generator, device="cuda", dtype=torch.float64)
        return x, log_q(x)

    def log_q(x):
        return (-0.5 * (x / scale).square() - math.log(scale * math.sqrt(2 * math.pi))).sum((1, 2))

    move = IndependenceMetropolis(propose, log_q, lambda x: potential.energy(x) / 2.494)
    x = torch.zeros(64, 1, 3, dtype=torch.float64, device="cuda")
    x[:, 0, 0] = 0.1
    result = flow_mcmc(
        State(x, torch.zeros_like(x)), move, 20, torch.Generator(device="cuda").manual_seed(0),
        observe=lambda p: p[:, 0, :1],
    )  # fmt: skip
    assert result.state.positions.device.type == "cuda"
    assert 0.0 < result.acceptance_rate < 1.0


def test_training_step_on_cuda_matches_cpu():
    from molsamp.potentials.datasets import AtomsDataset, Structure
    from molsamp.potentials.training import TrainingConfig, train

    generator = torch.Generator().manual_seed(0)
    structures = []
    for k in range(6):
        x = random_structure(10, 0.55, seed=80 + k)
        structures.append(
            Structure(ELEMENTS, x, torch.randn((), generator=generator, dtype=torch.float64),
                      torch.randn(10, 3, generator=generator, dtype=torch.float64))
        )  # fmt: skip
    config = TrainingConfig(
        max_epochs=2,
        batch_size=2,
        ema_decay=0.0,
        stage_two_fraction=1.0,
        scheduler="constant",
        progress=False,
    )
    cpu = MODELS["tensornet"](r_max=0.3)
    train(cpu, AtomsDataset(structures[:4]), AtomsDataset(structures[4:]), config)
    gpu = MODELS["tensornet"](r_max=0.3).to("cuda")
    train(gpu, AtomsDataset(structures[:4]), AtomsDataset(structures[4:]), config)
    for name, value in cpu.state_dict().items():
        torch.testing.assert_close(gpu.state_dict()[name].cpu(), value, rtol=1e-7, atol=1e-9)


def test_compiled_model_on_cuda_matches_eager():
    model = MODELS["tensornet"](r_max=0.3).to(torch.float32).bind(ELEMENTS).to("cuda")
    x = _walkers(dtype=torch.float32).cuda()
    eager = model.energy_and_forces(x)
    fast = model.use_compile().energy_and_forces(x)
    torch.testing.assert_close(fast[0], eager[0], **TOLERANCE[torch.float32])
    torch.testing.assert_close(fast[1], eager[1], **TOLERANCE[torch.float32])


def test_batched_ensemble_on_cuda_matches_the_cpu_loop():
    from molsamp.potentials import EnsemblePotential

    def members(device):
        return [MODELS["mace"](r_max=0.3, seed=s).bind(ELEMENTS).to(device) for s in range(3)]

    x = _walkers()
    expected = EnsemblePotential(members("cpu"), batched=False).member_energies_and_forces(x)
    got = EnsemblePotential(members("cuda"), batched=True).member_energies_and_forces(x.cuda())
    for value, want in zip(got, expected, strict=True):
        assert value.device.type == "cuda"
        torch.testing.assert_close(value.cpu(), want, **TOLERANCE[torch.float64])


def test_sgld_on_cuda_samples_the_analytic_posterior():
    """Bayesian linear regression with the data, weights and noise on the GPU."""
    from molsamp.integrators import SGLD

    from .integrators.test_sgmcmc import N_DATA, PRIOR, Linear, _assert_matches_gaussian, _data, _nll
    from .integrators.test_sgmcmc import _posterior as posterior

    x, y = _data()
    sampler = SGLD(Linear(32).cuda(), _nll, N_DATA, PRIOR, 2e-5, 1.0, generator=100)
    kept = sampler.sample([(x.cuda(), y.cuda())], 6000, burn_in=1200, thin=5, progress=False)
    assert kept[0]["weights"].device.type == "cuda"
    samples = torch.stack([s["weights"] for s in kept]).cpu().numpy()
    _assert_matches_gaussian(samples, *posterior(x, y, 1.0))


def test_timewarp_chain_on_cuda_samples_the_double_well():
    """The Timewarp MH chain with flow, walkers and energies on the GPU: a wrong proposal
    still gives the Boltzmann P(x > 0) and ⟨x²⟩ (the CPU test's physics, on CUDA)."""
    from molsamp.flows.timewarp_mcmc import TimewarpMove, timewarp_mcmc
    from molsamp.potentials import DoubleWell
    from molsamp.testing import assert_mean_close

    from .flows.test_timewarp import (
        BARRIER,
        K_PERP,
        MINIMUM,
        TEMPERATURE,
        double_well_exact,
        drifting_flow,
        one_atom,
    )

    mean_x2, _ = double_well_exact()
    potential = DoubleWell(BARRIER, MINIMUM, K_PERP)
    move = TimewarpMove(drifting_flow(6).to("cuda"), one_atom(), potential, TEMPERATURE, n_proposals=3)
    g = torch.Generator().manual_seed(7)
    x = torch.zeros(48, 1, 3, dtype=torch.float64)
    x[:, 0, 0] = torch.where(torch.rand(48, generator=g) < 0.5, -MINIMUM, MINIMUM).double()
    x = x.cuda()
    result = timewarp_mcmc(
        State(x, torch.zeros_like(x)), move, 250, g,
        observe=lambda p: torch.stack([(p[:, 0, 0] > 0).double(), p[:, 0, 0] ** 2], 1),
    )  # fmt: skip
    assert result.state.positions.device.type == "cuda"
    chains = result.observables[100:]
    assert 0.05 < result.acceptance_rate < 0.9
    assert_mean_close(chains[:, :, 0], 0.5, n_sigma=4.5, label="P(x > 0)")
    assert_mean_close(chains[:, :, 1], mean_x2, n_sigma=4.5, label="<x^2>")


def test_trajcast_rollout_on_cuda_matches_cpu():
    """Deterministic forecasts (no thermostat): 20 steps agree between devices."""
    from molsamp.flows.trajcast import rollout
    from molsamp.system import System

    from .flows.test_trajcast import MASSES, Z, _model, _state, _tame

    x, v = _state()
    system = System(Z, MASSES)
    cpu = rollout(_tame(_model()), system, State(x, v), 20, progress=False)
    gpu = rollout(_tame(_model()).to("cuda"), system, State(x, v).to("cuda"), 20, progress=False)
    assert gpu.positions.device.type == "cuda"
    torch.testing.assert_close(gpu.positions.cpu(), cpu.positions, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gpu.velocities.cpu(), cpu.velocities, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("thermostat", ["bussi", "langevin"])
def test_trajcast_thermostats_run_on_cuda_and_keep_the_momenta(thermostat):
    """Thermostat and velocity noise draw on the model's device; momenta stay conserved."""
    from molsamp.flows.trajcast import angular_momentum, rollout
    from molsamp.system import System

    from .flows.test_trajcast import MASSES, Z, _model, _noisy, _state, _tame

    x, v = _state()
    model = _noisy(_tame(_model()), 0.05).to("cuda")
    start = State(x, v).to("cuda")
    final = rollout(
        model, System(Z, MASSES), start, 50, temperature=300.0, thermostat_time=0.05,
        thermostat=thermostat, generator=3, progress=False,
    )  # fmt: skip
    assert final.velocities.device.type == "cuda" and torch.isfinite(final.velocities).all()
    masses = MASSES.to("cuda")
    torch.testing.assert_close(
        (masses[:, None] * final.velocities).sum(-2), (masses[:, None] * start.velocities).sum(-2)
    )
    torch.testing.assert_close(
        angular_momentum(final.positions, final.velocities, masses),
        angular_momentum(start.positions, start.velocities, masses),
        rtol=1e-6,
        atol=1e-8,
    )
