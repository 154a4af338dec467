"""Physics of the TrajCast forecaster: equivariance of the update, exact conservation of
momenta, the canonical kinetic-energy law of the thermostat, periodic wrapping, the rollout
driver (reporters, exact resume) and learning a known map. Float64 where exactness is tested;
everything seeded."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from molsamp.flows.trajcast import (
    ForecastIntegrator,
    ForecastTrainingConfig,
    LocalLangevinThermostat,
    StochasticVelocityRescaling,
    TrajCast,
    TrajectoryData,
    angular_momentum,
    center_of_mass,
    conserve,
    fit_scales,
    load_forecaster,
    minimum_image,
    recipes,
    record_trajectory,
    rollout,
    save_forecaster,
    split_motion,
    train_forecaster,
    wrap_positions,
)
from molsamp.flows.trajcast.observables import canonical_kinetic_energy_check
from molsamp.io import CSVReporter, TrajectoryReporter, load_checkpoint
from molsamp.potentials.base import Potential
from molsamp.system import State, System
from molsamp.testing import assert_mean_close, mean_and_standard_error
from molsamp.units import BOLTZMANN_KJ_PER_MOL_K

from ..potentials.conftest import random_rotation, random_structure, triclinic_cell
from .conftest import make_ballistic

Z = torch.tensor([8, 1, 1, 6, 1, 7, 6, 8])
MASSES = torch.tensor([16.0, 1.0, 1.0, 12.0, 1.0, 14.0, 12.0, 16.0], dtype=torch.float64)


def _model(r_max=0.4, seed=0) -> TrajCast:
    torch.manual_seed(seed)
    model = TrajCast(
        [1, 6, 7, 8], 0.01, r_max=r_max, channels=4, max_ell=2, correlation=2, dtype=torch.float64
    )
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial per-element scales, so they are tested too
        for name in ("displacement_scale", "velocity_scale", "input_velocity_scale"):
            getattr(model, name).copy_(0.5 + torch.rand(4, generator=generator, dtype=torch.float64))
        model.avg_num_neighbors.fill_(8.0)
    return model


def _periodic_structure(cell: torch.Tensor, seed: int, min_distance: float = 0.12) -> torch.Tensor:
    """len(Z) points in ``cell`` no two closer than ``min_distance`` nm by minimum image."""
    generator = torch.Generator().manual_seed(seed)
    points = []
    while len(points) < len(Z):
        x = torch.rand(3, generator=generator, dtype=torch.float64) @ cell
        if all(minimum_image(x - p, cell).norm() > min_distance for p in points):
            points.append(x)
    return torch.stack(points)


def _state(seed=7, box=0.6, cell=None):
    x = random_structure(len(Z), box, seed=seed) if cell is None else _periodic_structure(cell, seed)
    v = torch.randn(len(Z), 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x[None], v[None]


def _equal(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_update_equivariant_isolated_rotation_reflection_translation_permutation():
    model = _model()
    x, v = _state()
    with torch.no_grad():
        dx, v1 = model.forecast(Z, MASSES, x, v)
        generator = torch.Generator().manual_seed(3)
        for reflect in (False, True):
            q = random_rotation(generator, reflect)
            shift = torch.randn(3, generator=generator, dtype=torch.float64)
            dx2, v2 = model.forecast(Z, MASSES, x @ q.T + shift, v @ q.T)
            _equal(dx2, dx @ q.T)
            _equal(v2, v1 @ q.T)
        perm = torch.randperm(len(Z), generator=generator)
        dx3, v3 = model.forecast(Z[perm], MASSES[perm], x[:, perm], v[:, perm])
        _equal(dx3, dx[:, perm])
        _equal(v3, v1[:, perm])
    assert dx.abs().max() > 1e-3 and (v1 - v).abs().max() > 1e-3  # the network does something


def test_update_equivariant_periodic_and_blind_to_images():
    model = _model()
    cell = triclinic_cell()
    x, v = _state(cell=cell)
    with torch.no_grad():
        dx, v1 = model.forecast(Z, MASSES, x, v, cell)
        q = random_rotation(torch.Generator().manual_seed(5), reflect=True)
        dx2, v2 = model.forecast(Z, MASSES, x @ q.T, v @ q.T, cell @ q.T)
        _equal(dx2, dx @ q.T)
        _equal(v2, v1 @ q.T)
        moved = x.clone()
        moved[0, 2] += cell[0] - 2 * cell[2]  # another image of atom 2
        moved[0, 5] -= cell[1]
        dx3, v3 = model.forecast(Z, MASSES, moved, v, cell)
        _equal(dx3, dx)
        _equal(v3, v1)
        wrapped = wrap_positions(x + 1.7, cell)  # a translation, then wrapping
        dx4, v4 = model.forecast(Z, MASSES, wrapped, v, cell)
        _equal(dx4, dx)
        _equal(v4, v1)


@pytest.mark.parametrize("angular", [False, True])
def test_conservation_layer_is_exact(angular):
    generator = torch.Generator().manual_seed(2)
    x, v = _state(seed=4)
    x, v = (
        x.expand(3, -1, -1),
        v.expand(3, -1, -1) + torch.randn(3, 1, 3, generator=generator, dtype=torch.float64),
    )
    raw_dx = 0.05 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    raw_v = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    interval = 0.02
    dx, v1 = conserve(MASSES, x, v, raw_dx, raw_v, interval, angular)
    momentum = (MASSES[:, None] * v).sum(-2)
    torch.testing.assert_close((MASSES[:, None] * v1).sum(-2), momentum, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        center_of_mass(dx, MASSES)[:, 0], interval * momentum / MASSES.sum(), rtol=0, atol=1e-14
    )
    l_in, l_out = angular_momentum(x, v, MASSES), angular_momentum(x + dx, v1, MASSES)
    if angular:
        torch.testing.assert_close(l_out, l_in, rtol=0, atol=1e-11)
    else:
        assert (l_out - l_in).abs().max() > 1e-2  # not conserved unless asked (periodic systems)


def test_conservation_layer_marks_a_collapsed_walker_instead_of_raising():
    """A walker whose forecast collapsed (singular inertia tensor) or went non-finite gets NaN
    velocities, which training skips and the MD guard reports; the other walkers are exact."""
    generator = torch.Generator().manual_seed(3)
    x, v = _state(seed=4)
    x, v = x.expand(3, -1, -1).clone(), v.expand(3, -1, -1).clone()
    raw_dx = 0.05 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    raw_v = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    x[1], raw_dx[1] = 0.0, 0.0  # every atom at one point: a singular inertia tensor
    raw_dx[2, 0, 0] = math.nan
    dx, v1 = conserve(MASSES, x, v, raw_dx, raw_v, 0.02, angular=True)
    assert torch.isfinite(v1[0]).all() and not torch.isfinite(v1[1:]).all((-2, -1)).any()
    alone_dx, alone_v = conserve(MASSES, x[:1], v[:1], raw_dx[:1], raw_v[:1], 0.02, angular=True)
    torch.testing.assert_close(v1[:1], alone_v, rtol=0, atol=0)
    torch.testing.assert_close(dx[:1], alone_dx, rtol=0, atol=0)


def _tame(model: TrajCast) -> TrajCast:
    """Small residual scales: an untrained network then changes the state gently."""
    with torch.no_grad():
        model.displacement_scale.fill_(0.002)
        model.velocity_scale.fill_(0.02)
    return model


def _noisy(model: TrajCast, c: float = 0.05) -> TrajCast:
    """Velocity noise σ_e = √(c / m_e) per element (equal energy per degree of freedom)."""
    element_masses = torch.tensor([1.0, 12.0, 14.0, 16.0], dtype=torch.float64)  # H C N O
    with torch.no_grad():
        model.velocity_noise.copy_((c / element_masses).sqrt())
    return model


@pytest.mark.parametrize("noise", [False, True])
def test_model_conserves_momenta_over_a_rollout(noise):
    model = _noisy(_tame(_model())) if noise else _tame(_model())
    x, v = _state()
    system = System(Z, MASSES)
    state = State(x, v)
    end = rollout(model, system, state, 20, progress=False)
    if noise:
        assert not torch.allclose(
            end.velocities, rollout(_tame(_model()), system, state, 20, progress=False).velocities
        )
    p0, p1 = (MASSES[:, None] * v).sum(-2), (MASSES[:, None] * end.velocities).sum(-2)
    torch.testing.assert_close(p1, p0, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        angular_momentum(end.positions, end.velocities, MASSES),
        angular_momentum(x, v, MASSES),
        rtol=0,
        atol=1e-10,
    )
    drift = center_of_mass(end.positions, MASSES) - center_of_mass(x, MASSES)
    torch.testing.assert_close(drift[:, 0], 20 * model.interval * p0 / MASSES.sum(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("angular", [False, True])
def test_velocity_noise_adds_its_mean_square_to_the_free_degrees_of_freedom(angular):
    """Noise σ_e² = c/m_e projected off the conserved momenta (and scaled up for them) raises
    the kinetic energy of a step by ½·c·3N on average, the full mean square it stands for."""
    c, walkers = 0.05, 4000
    model = _noisy(_tame(_model()), c)
    x, v = _state()
    x, v = x.expand(walkers, -1, -1), 0.05 * v.expand(walkers, -1, -1)  # slow: little cross term
    system = System(Z, MASSES)
    clean = ForecastIntegrator(model, system, velocity_noise=False, angular=angular)
    noisy = ForecastIntegrator(model, system, generator=5, angular=angular)
    gained = noisy.step(State(x, v), 1).velocities, clean.step(State(x, v), 1).velocities
    kinetic = [0.5 * (MASSES[:, None] * u.square()).sum((-2, -1)) for u in gained]
    delta = (kinetic[0] - kinetic[1]).numpy()
    assert_mean_close(delta, 0.5 * c * 3 * len(Z), n_sigma=4.0, label="kinetic energy added")


@pytest.mark.parametrize("kind", [StochasticVelocityRescaling, LocalLangevinThermostat])
@pytest.mark.parametrize("angular", [False, True])
def test_thermostats_sample_the_canonical_kinetic_energy(angular, kind):
    """K of the thermostatted internal motion: gamma(N_f/2, k_B T), N_f = 3N − 3 (− 3)."""
    n_atoms, temperature, n_steps, walkers = 6, 300.0, 6000, 4
    x, v = _state(seed=11)
    x, v = x[:, :n_atoms].expand(walkers, -1, -1), v[:, :n_atoms].repeat(walkers, 1, 1)
    masses = MASSES[:n_atoms]
    thermostat = kind(temperature, 0.1, 123, angular=angular)
    p0, l0 = (masses[:, None] * v).sum(-2), angular_momentum(x, v, masses)
    kinetic = []
    for _ in range(n_steps):
        v = thermostat.apply(x, v, masses, 0.05)
        _, internal = thermostat.split(x, v, masses)
        kinetic.append((0.5 * masses[:, None] * internal.square()).sum((-2, -1)))
    kinetic = torch.stack(kinetic).numpy()[200:]  # (T, W): drop the relaxation
    n_dof = 3 * n_atoms - (6 if angular else 3)
    assert thermostat.degrees_of_freedom(n_atoms) == n_dof
    kt = BOLTZMANN_KJ_PER_MOL_K * temperature
    assert_mean_close(kinetic, 0.5 * n_dof * kt, label="⟨K⟩")
    assert_mean_close((kinetic - 0.5 * n_dof * kt) ** 2, 0.5 * n_dof * kt**2, label="var K")
    # not vacuous: the error bar resolves a wrong count of degrees of freedom (3 more = 1.5 k_B T)
    _, error = mean_and_standard_error(kinetic)
    assert error < 0.3 * kt
    report = canonical_kinetic_energy_check(kinetic, n_dof, temperature)
    assert report["ks_distance"] < 0.03
    torch.testing.assert_close((masses[:, None] * v).sum(-2), p0, rtol=0, atol=1e-10)
    if angular:
        torch.testing.assert_close(angular_momentum(x, v, masses), l0, rtol=0, atol=1e-10)


def test_langevin_thermostat_restores_equipartition_that_bussi_keeps_broken():
    """Start with nearly all kinetic energy on the H atoms (what a forecaster that heats X–H
    bonds drifts towards). Per-atom Langevin brings every element to its canonical mean
    kinetic energy; Bussi rescales all atoms by one factor and keeps the heavy atoms cold. The
    canonical per-atom means come from direct Maxwell–Boltzmann draws projected off the
    conserved momenta."""
    temperature, walkers, kt = 300.0, 64, BOLTZMANN_KJ_PER_MOL_K * 300.0
    x, v = _state(seed=3)
    x = x.expand(walkers, -1, -1)
    hydrogen = Z == 1
    v = torch.where(hydrogen[:, None], 4.0 * v, 0.0).expand(walkers, -1, -1)
    v = split_motion(x, v, MASSES, True)[1]  # no net momenta: heavy atoms get a little motion
    generator = torch.Generator().manual_seed(9)
    draws = torch.randn((20_000, len(Z), 3), generator=generator, dtype=torch.float64)
    _, draws = split_motion(x[:1].expand(20_000, -1, -1), draws * (kt / MASSES[:, None]).sqrt(), MASSES, True)
    canonical = (0.5 * MASSES[:, None] * draws.square()).sum(-1).mean(0)  # (N,) kJ/mol
    for kind in (LocalLangevinThermostat, StochasticVelocityRescaling):
        thermostat, u, per_atom = kind(temperature, 0.05, 17, angular=True), v, []
        for step in range(400):
            u = thermostat.apply(x, u, MASSES, 0.01)
            if step >= 100:  # after 20 τ
                per_atom.append((0.5 * MASSES[:, None] * u.square()).sum(-1))
        per_atom = torch.stack(per_atom)  # (T, W, N)
        for element in (1, 6, 7, 8):
            mask = Z == element
            samples = per_atom[..., mask].sum(-1).numpy()
            expected = float(canonical[mask].sum())
            if kind is LocalLangevinThermostat:
                assert_mean_close(samples, expected, label=f"K of Z = {element}")
            elif element != 1:
                assert samples.mean() < 0.2 * expected, (element, samples.mean(), expected)
    torch.testing.assert_close(
        angular_momentum(x, u, MASSES), angular_momentum(x, v, MASSES), rtol=0, atol=1e-10
    )


def test_forecast_integrator_names_the_thermostats_it_knows():
    with pytest.raises(ValueError, match=r"thermostat must be one of \['bussi', 'langevin'\], got 'nose'"):
        ForecastIntegrator(_model(), System(Z, MASSES), temperature=300.0, thermostat="nose")


def test_rollout_wraps_into_the_cell_writes_reports_and_resumes_exactly(tmp_path):
    import mdtraj

    model = _tame(_model())
    cell = triclinic_cell()
    topology = mdtraj.Topology()
    chain = topology.add_chain()
    for z in Z.tolist():
        topology.add_atom("X", mdtraj.element.Element.getByAtomicNumber(z), topology.add_residue("X", chain))
    system = System(Z, MASSES, cell, (True, True, True), topology)
    x, v = _state(cell=cell)
    v = v - center_of_mass(v, MASSES)
    state = State(x + 3.0, v, cell)  # far outside the cell at the start

    def run(n, resume, folder):
        reporters = [
            CSVReporter(folder / "energies.csv", 5),
            TrajectoryReporter(folder / "traj.dcd", 5, topology),
        ]
        return rollout(
            model, system, state, n, temperature=300.0, generator=9,
            reporters=reporters, checkpoint=folder / "checkpoint.pt", checkpoint_interval=10,
            resume=resume, progress=False,
        )  # fmt: skip

    straight = run(30, False, tmp_path / "a")
    fractional = straight.positions @ torch.linalg.inv(cell)
    assert ((fractional >= 0) & (fractional < 1)).all()
    # interrupted after 20 steps (the checkpoint at 20), then resumed to 30
    (tmp_path / "b").mkdir()
    run(20, False, tmp_path / "b")
    resumed = run(30, True, tmp_path / "b")
    assert resumed.step == 30 and math.isclose(resumed.time, 30 * model.interval)
    torch.testing.assert_close(resumed.positions, straight.positions, rtol=0, atol=0)
    torch.testing.assert_close(resumed.velocities, straight.velocities, rtol=0, atol=0)
    rows = np.loadtxt(tmp_path / "b" / "energies.csv", delimiter=",", skiprows=1)
    assert rows.shape[0] == 6 and np.isnan(rows[:, 2]).all()  # force-free: no energy
    assert mdtraj.load(str(tmp_path / "b" / "traj.dcd"), top=topology).n_frames == 6


class _SpringTriangle(Potential):
    """Three atoms joined by harmonic springs (k kJ/mol/nm², rest length r0 nm)."""

    def __init__(self, k=2.0e4, r0=0.12):
        super().__init__()
        self.k, self.r0 = k, r0

    def _energy(self, positions, cell):
        i, j = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2])
        r = (positions[:, i] - positions[:, j]).norm(dim=-1)
        return 0.5 * self.k * (r - self.r0).square().sum(-1)


def test_weight_average_warms_up_then_keeps_its_decay():
    """The kept average follows a_n = d_n a_(n-1) + (1 - d_n) w_n with
    d_n = min(decay, (1 + n) / (10 + n)) after n averaged updates (the first update copies):
    fresh weights dominate early, and the decay is exactly ``decay`` once warmed up."""
    from molsamp.flows.trajcast.training import warmed_up_ema

    decay = 0.95
    layer = torch.nn.Linear(1, 1, bias=False).double()
    average = torch.optim.swa_utils.AveragedModel(layer, multi_avg_fn=warmed_up_ema(decay))
    generator = torch.Generator().manual_seed(3)
    expected = None
    for n in range(400):
        w = float(torch.randn((), generator=generator, dtype=torch.float64))
        with torch.no_grad():
            layer.weight.fill_(w)
        average.update_parameters(layer)
        d = min(decay, (1 + n) / (10 + n))
        expected = w if n == 0 else d * expected + (1 - d) * w
        assert average.module.weight.detach().item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert (1 + 399) / (10 + 399) > decay  # the last updates used the decay itself
    with pytest.raises(ValueError, match="ema_decay"):
        ForecastTrainingConfig(max_steps=1, ema_decay=1.0)


def test_training_learns_the_flow_map_of_a_spring_triangle(tmp_path):
    """Pairs at lag 10 δt of NVE MD: the trained one-step error falls far below the
    ballistic guess Δx = vΔt, v' = v (loss 2 in normalised units), and saving is lossless."""
    from molsamp.integrators import VelocityVerlet

    z = torch.tensor([8, 1, 1])
    masses = torch.tensor([16.0, 1.0, 1.0], dtype=torch.float64)
    system = System(z, masses)
    potential = _SpringTriangle()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.tensor([[0.0, 0.0, 0.0], [0.12, 0.0, 0.0], [0.06, 0.104, 0.0]], dtype=torch.float64)
    walkers = 16
    x = x0 + 0.01 * torch.randn(walkers, 3, 3, generator=generator, dtype=torch.float64)
    v = torch.randn(walkers, 3, 3, generator=generator, dtype=torch.float64) * (2.5 / masses[:, None]).sqrt()
    v = v - center_of_mass(v, masses)
    verlet = VelocityVerlet(potential, masses, 0.0005)
    data, _ = record_trajectory(verlet, system, State(x, v), 120, 2)
    train, val = data.split(0.25)
    model = TrajCast(
        [1, 8], 10 * 0.0005, r_max=0.3, channels=8, max_ell=2, correlation=2, dtype=torch.float64
    )
    config = ForecastTrainingConfig(
        lag=5,
        batch_size=8,
        lr=5e-3,
        max_steps=300,
        val_every=100,
        ema_decay=0.9,
        progress=False,
        dtype=torch.float64,
    )
    result = train_forecaster(model, train, val, config)
    assert result.history[0]["step"] == 100
    assert result.best_val_loss < 0.2, result.history  # ballistic guess scores 2.0
    path = save_forecaster(model, tmp_path / "model.pt", {"system": "triangle"})
    loaded, metadata = load_forecaster(path)
    assert metadata == {"system": "triangle"}
    xs, vs = data.positions[:2, 0], data.velocities[:2, 0]
    with torch.no_grad():
        a = model.forecast(z, masses, xs, vs)
        b = loaded.forecast(z, masses, xs, vs)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    multi = ForecastTrainingConfig(
        lag=5, rollout_steps=3, batch_size=4, max_steps=3, val_every=10, progress=False, dtype=torch.float64
    )
    assert len(train_forecaster(model, train, val, multi, fit=False).history) == 1


def test_fit_velocity_noise_is_the_mean_square_the_forecast_lacks():
    """Targets drawn with σ₁ = 1.5 σ₀ per element and a forecast v' ≈ v (zero residual scale):
    the fitted noise variance is σ₁² − σ₀² per element, within sampling error."""
    from molsamp.flows.trajcast import fit_velocity_noise

    model = _model()
    with torch.no_grad():
        model.velocity_scale.zero_()  # forecast velocities = the input's (conserved momenta kept)
    generator = torch.Generator().manual_seed(3)
    segments = 400
    x = _state()[0].expand(segments, -1, -1)
    positions = torch.stack([x, x], 1)  # (S, 2, N, 3)
    sigma0 = (0.3 / MASSES).sqrt()[None, :, None]
    v0 = sigma0 * torch.randn(segments, len(Z), 3, generator=generator, dtype=torch.float64)
    v1 = 1.5 * sigma0 * torch.randn(segments, len(Z), 3, generator=generator, dtype=torch.float64)
    v0 = v0 - center_of_mass(v0, MASSES)  # input momenta are zero (the forecast keeps them)
    data = TrajectoryData(System(Z, MASSES), positions, torch.stack([v0, v1], 1), 0.01)
    fitted = torch.tensor(fit_velocity_noise(model, data, lag=1, max_windows=segments), dtype=torch.float64)
    element_masses = torch.tensor([1.0, 12.0, 14.0, 16.0], dtype=torch.float64)
    empirical = torch.stack(
        [v1[:, Z == e].square().mean() - v0[:, Z == e].square().mean() for e in (1, 6, 7, 8)]
    )
    torch.testing.assert_close(fitted.square(), empirical, rtol=0.02, atol=0)  # v̂ ≈ v (rotation fix-up)
    # σ₁² − σ₀², σ₀² lowered by 0.3 / M by removing the centre-of-mass velocity
    expected = 1.25 * 0.3 / element_masses + 0.3 / MASSES.sum()
    torch.testing.assert_close(fitted.square(), expected, rtol=0.15, atol=0)
    torch.testing.assert_close(model.velocity_noise, fitted)


def _triangle_data(walkers=8, n_frames=40):
    from molsamp.integrators import VelocityVerlet

    z = torch.tensor([8, 1, 1])
    masses = torch.tensor([16.0, 1.0, 1.0], dtype=torch.float64)
    system, potential = System(z, masses), _SpringTriangle()
    generator = torch.Generator().manual_seed(4)
    x0 = torch.tensor([[0.0, 0.0, 0.0], [0.12, 0.0, 0.0], [0.06, 0.104, 0.0]], dtype=torch.float64)
    x = x0 + 0.005 * torch.randn(walkers, 3, 3, generator=generator, dtype=torch.float64)
    v = torch.randn(walkers, 3, 3, generator=generator, dtype=torch.float64) * (2.5 / masses[:, None]).sqrt()
    verlet = VelocityVerlet(potential, masses, 0.0005)
    data, _ = record_trajectory(verlet, system, State(x, v - center_of_mass(v, masses)), n_frames, 2)
    return data, verlet, potential


def _relative_energy_drift(data, potential) -> float:
    """Largest |E(t) − E(0)| of any segment over its mean kinetic energy (NVE: small)."""
    s, t = data.positions.shape[:2]
    e_pot = potential.energy(data.positions.reshape(s * t, -1, 3)).reshape(s, t)
    kinetic = 0.5 * (data.system.masses[:, None] * data.velocities.square()).sum((-2, -1))
    total = e_pot + kinetic
    return float(((total - total[:, :1]).abs().max(1).values / kinetic.mean(1)).max())


def test_restarts_are_true_trajectories_from_strained_or_forecast_states():
    """Both kinds of restart segments follow the reference dynamics (total energy conserved
    along each NVE segment), start off the data (strained: noisier bonds; forecast: where a
    rollout went) and join the chunked data."""
    from molsamp.flows.trajcast import join, perturbed_restarts
    from molsamp.flows.trajcast.training import rollout_restarts

    data, verlet, potential = _triangle_data()
    strained = perturbed_restarts(verlet, data, 12, 20, 2, 0.01, seed=1)
    assert strained.positions.shape == (12, 20, 3, 3)
    assert _relative_energy_drift(strained, potential) < 0.03
    assert (
        potential.energy(strained.positions[:, 0]).mean() > 2 * potential.energy(data.positions[:, 0]).mean()
    )
    joined = join([data.chunks(20), strained])
    assert joined.positions.shape == (8 * 2 + 12, 20, 3, 3)
    torch.testing.assert_close(joined.positions[1], data.positions[0, 20:])
    with pytest.raises(ValueError, match="one length"):
        join([data, strained])

    model = TrajCast([1, 8], 0.005, r_max=0.3, channels=4, max_ell=2, dtype=torch.float64)
    with torch.no_grad():  # an untrained forecaster that barely changes the state
        model.displacement_scale.fill_(1e-4)
        model.velocity_scale.fill_(1e-3)
    forecast = rollout_restarts(model, verlet, data, 6, 8, 20, 2, 300.0, seed=2)
    assert forecast is not None and forecast.positions.shape[1:] == (20, 3, 3)
    assert 6 <= forecast.positions.shape[0] <= 24  # up to 4 states per rollout, all in range here
    assert _relative_energy_drift(forecast, potential) < 0.03


def test_training_skips_a_non_finite_window_instead_of_poisoning_the_weights():
    data, _, _ = _triangle_data(walkers=4, n_frames=20)
    velocities = data.velocities.clone()
    velocities[0] = float("nan")  # one corrupt segment: a quarter of the windows
    corrupt = TrajectoryData(data.system, data.positions, velocities, data.frame_time)
    model = TrajCast([1, 8], 0.005, r_max=0.3, channels=4, max_ell=2, dtype=torch.float64)
    fit_on = TrajectoryData(data.system, data.positions[1:], data.velocities[1:], data.frame_time)
    fit_scales(model, fit_on, lag=5)
    config = ForecastTrainingConfig(lag=5, batch_size=2, max_steps=40, val_every=40, progress=False,
                                    dtype=torch.float64)  # fmt: skip
    result = train_forecaster(model, corrupt, fit_on, config, fit=False)
    assert result.history[-1]["skipped_non_finite_steps"] > 0
    two_step = ForecastTrainingConfig(lag=5, rollout_steps=2, batch_size=2, max_steps=20, val_every=20,
                                      progress=False, dtype=torch.float64)  # fmt: skip
    result = train_forecaster(model, corrupt, fit_on, two_step, fit=False)  # NaN mid-window: no crash
    assert result.history[-1]["skipped_non_finite_steps"] > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(result.best_val_loss)


def test_with_share_draws_that_share_of_windows_from_the_extra_segments():
    """Strained restarts drawn as a set share of the windows, whatever their number; the weights
    survive chunking, splitting and a later join of unweighted (DAgger) segments, which weigh
    as much as an MD segment."""
    from molsamp.flows.trajcast import join, perturbed_restarts, with_share

    data, verlet, _ = _triangle_data()
    main = data.chunks(20)  # 16 segments
    strained = perturbed_restarts(verlet, data, 12, 20, 2, 0.01, seed=1)
    mixed = with_share(main, strained, 0.1)
    windows = mixed.windows(lag=2, rollout_steps=2)
    drawn = mixed.draw_windows(windows, 20_000, torch.Generator().manual_seed(3))
    share = (drawn[:, 0] >= 16).double().mean().item()
    assert abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 20_000), share
    uniform = join([main, strained]).draw_windows(windows, 20_000, torch.Generator().manual_seed(3))
    assert abs((uniform[:, 0] >= 16).double().mean().item() - 12 / 28) < 0.02  # by number
    train, _ = mixed.split(0.25)
    torch.testing.assert_close(train.segment_weights, mixed.segment_weights)
    halves = mixed.chunks(10).segment_weights
    torch.testing.assert_close(halves, mixed.segment_weights.repeat_interleave(2))
    dagger = perturbed_restarts(verlet, data, 2, 20, 2, 0.0, seed=4)
    later = join([mixed, dagger])
    torch.testing.assert_close(later.segment_weights[-2:], torch.ones(2, dtype=later.segment_weights.dtype))
    with pytest.raises(ValueError, match="share must be in"):
        with_share(main, strained, 1.0)
    with pytest.raises(ValueError, match="segment_weights must be"):
        TrajectoryData(main.system, main.positions, main.velocities, main.frame_time, torch.zeros(16))


def test_training_never_draws_a_segment_of_weight_zero():
    """The corrupt segment that made the test above skip steps is never drawn at weight 0, and
    the normalisation is fitted on the segments training draws."""
    data, _, _ = _triangle_data(walkers=4, n_frames=20)
    velocities = data.velocities.clone()
    velocities[0] = float("nan")
    weights = torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    corrupt = TrajectoryData(data.system, data.positions, velocities, data.frame_time, weights)
    model = TrajCast([1, 8], 0.005, r_max=0.3, channels=4, max_ell=2, dtype=torch.float64)
    fit_on = TrajectoryData(data.system, data.positions[1:], data.velocities[1:], data.frame_time)
    expected = fit_scales(model, fit_on, lag=5)
    got = fit_scales(model, corrupt, lag=5)
    for name in ("displacement_scale_nm", "velocity_scale_nm_per_ps", "input_velocity_scale_nm_per_ps"):
        torch.testing.assert_close(torch.tensor(got[name]), torch.tensor(expected[name]))
    twice = replace(corrupt, segment_weights=torch.tensor([0.0, 2.0, 1.0, 1.0], dtype=torch.float64))
    doubled = replace(data, positions=data.positions[[1, 1, 2, 3]], velocities=data.velocities[[1, 1, 2, 3]])
    torch.testing.assert_close(
        torch.tensor(fit_scales(model, twice, 5)["velocity_scale_nm_per_ps"]),
        torch.tensor(fit_scales(model, doubled, 5)["velocity_scale_nm_per_ps"]),
    )
    fit_scales(model, fit_on, lag=5)
    config = ForecastTrainingConfig(lag=5, batch_size=2, max_steps=40, val_every=40, progress=False,
                                    dtype=torch.float64)  # fmt: skip
    result = train_forecaster(model, corrupt, fit_on, config, fit=False)
    assert result.history[-1]["skipped_non_finite_steps"] == 0


def test_a_diverging_rollout_still_trains_on_the_steps_before_it():
    """Float32 and σ_v × 10⁶: the second step of every two-step training window overflows.
    Skipping such windows would leave the weights where they are for ever; training on the
    steps before the divergence moves the model out of that region."""
    from molsamp.flows.trajcast.training import window_loss

    data, _, _ = _triangle_data(walkers=6, n_frames=30)
    train, val = data.split(0.4)
    torch.manual_seed(0)
    model = TrajCast([1, 8], 0.005, r_max=0.3, channels=4, max_ell=2)
    fit_scales(model, train, lag=5)
    with torch.no_grad():
        model.velocity_scale.mul_(1e6)
        _, before = window_loss(model, val, val.windows(5, 2), 5, [1.0, 1.0])
    assert math.isnan(before[1])  # validation keeps a diverged window NaN
    config = ForecastTrainingConfig(lag=5, rollout_steps=2, batch_size=4, max_steps=60, val_every=20,
                                    progress=False)  # fmt: skip
    last = train_forecaster(model, train, val, config, fit=False).history[-1]
    assert last["skipped_non_finite_steps"] == 0 and last["truncated_rollouts"] == 60
    assert last["val_one_step"] < 0.01 * before[0], (last, before)


def test_trajectory_data_windows_do_not_cross_segments():
    system = System(torch.tensor([18, 18, 18]), torch.full((3,), 39.948))
    positions = torch.zeros(2, 10, 3, 3)
    data = TrajectoryData(system, positions, positions.clone(), 0.01)
    windows = data.windows(lag=3, rollout_steps=2)
    assert len(windows) == 2 * 4 and int(windows[:, 1].max()) + 6 <= 9
    with pytest.raises(ValueError, match="too short"):
        data.windows(lag=5, rollout_steps=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--md-ps", "0.5"], r"--md-ps 0.5 ps is too short.*use --md-ps 0.6 or more"),
        (["--md-ps", "0.6"], None),  # the shortest the message asks for is long enough
        (["--minutes", "0"], r"--minutes \(training wall time\) must be > 0"),
        (["--stride", "3"], "--stride 3 must divide --interval-steps 10"),
        (["--rollout-steps", "0"], "--rollout-steps must be >= 1, got 0"),
        (["--restarts", "-1"], r"--restarts must be >= 0 \(0: none\)"),
    ],
)
def test_cli_forecast_train_names_the_option_to_fix_before_running_md(tmp_path, capsys, options, message):
    """Bad settings are refused with the option's name before any MD runs (the fluid's MD
    step is 5 fs, frames every 2 steps: 0.5 ps leaves 5 validation frames for a 5-frame lag)."""
    from molsamp.cli import main

    args = ["forecast", "train", "--output", str(tmp_path), "--minutes", "0.001", "--walkers", "1"]
    args += ["--channels", "4", "--quiet", *options]
    if message is None:
        assert main(args) == 0
    else:
        assert main(args) == 2
        assert re.search(message, capsys.readouterr().err)


def test_cli_forecast_train_then_rollout(tmp_path, capsys):
    from molsamp.cli import main

    model_dir, roll_dir = tmp_path / "model", tmp_path / "roll"
    args = [
        "forecast",
        "train",
        "--system",
        "alanine_dipeptide",
        "--output",
        str(model_dir),
        "--minutes",
        "0.03",
    ]
    args += ["--md-ps", "1", "--walkers", "1", "--channels", "4", "--max-ell", "1", "--quiet"]
    args += ["--restarts", "2", "--restart-noise", "0.005", "--restart-share", "0.25"]
    assert main(args) == 0
    assert (model_dir / "model.pt").is_file() and (model_dir / "training.json").is_file()
    assert (model_dir / "training.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((model_dir / "training.json").read_text())
    assert report["timings"]["restart_window_share"] == pytest.approx(0.25)  # 2 restarts, 4 MD segments
    # without --lr the dipeptide trains at its recipe's learning rate and weight average
    config = report["config"]
    assert config["lr"] == recipes.recipe("alanine_dipeptide").learning_rate == 6e-3
    assert config["ema_decay"] == recipes.recipe("alanine_dipeptide").ema_decay == 0.999
    # a 2-second model (its steps depend on the machine's speed) is not a stable forecaster:
    # make it the ballistic forecast (readouts zeroed) to test the rollout plumbing
    model, metadata = load_forecaster(model_dir / "model.pt")
    assert model.hyperparameters()["max_ell"] == 1  # the recipe's is 2
    save_forecaster(make_ballistic(model), model_dir / "model.pt", metadata)
    args = ["forecast", "rollout", "--model", str(model_dir / "model.pt"), "--steps", "20"]
    args += ["--report-interval", "5", "--output", str(roll_dir), "--quiet"]
    assert main(args) == 0
    rows = np.loadtxt(roll_dir / "energies.csv", delimiter=",", skiprows=1)
    assert rows.shape == (4, 6) and np.isfinite(rows[:, 2]).all()  # Amber energies of forecast frames
    assert "forecast 20 steps of 0.01 ps" in capsys.readouterr().out
    assert (roll_dir / "energies.png").read_bytes()[:4] == b"\x89PNG"  # Amber energies, temperature
    assert (
        load_checkpoint(roll_dir / "checkpoint.pt")["settings"]["thermostat"] == "StochasticVelocityRescaling"
    )
    # the per-atom thermostat reaches the integrator (one step: a 2-second model is not stable)
    args = ["forecast", "rollout", "--model", str(model_dir / "model.pt"), "--steps", "1"]
    args += ["--thermostat", "langevin", "--output", str(tmp_path / "langevin"), "--quiet"]
    assert main(args) == 0
    settings = load_checkpoint(tmp_path / "langevin" / "checkpoint.pt")["settings"]
    assert settings["thermostat"] == "LocalLangevinThermostat"
    assert main(["forecast", "rollout", "--model", str(tmp_path / "missing.pt")]) == 2
