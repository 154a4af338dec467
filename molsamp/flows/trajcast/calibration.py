"""Calibrating a forecaster's velocity noise on its own rollouts, for a given thermostat.

:func:`~molsamp.flows.trajcast.training.fit_velocity_noise` sets the noise from one-step
forecasts of MD frames. A rollout visits its own states, where the forecast keeps a different
share of the kinetic energy: on alanine dipeptide the MD fit gave carbon no noise at all, yet
in rollout states the forecast kept only 97 % of carbon's mean square per 10 fs step, so a
rollout under a per-atom Langevin thermostat of τ = 0.1 ps ran 15 K cold, and only τ = 10 fs,
whose friction slows conformational exchange, held 300 K.

:func:`calibrate_velocity_noise` finds, per element e, the noise σ_e at which a rollout under
the per-atom Langevin thermostat of τ is canonical. Each round rolls out and measures, in the
states the rollout visits, the share a_e = ⟨v'²⟩/⟨v²⟩ of the mean square a forecast keeps;
a stationary rollout has m_e = c²(a_e m_e + n_e) + (1 − c²) t_e per velocity component (c the
thermostat's decay per step, n_e the mean square the noise adds, t_e the canonical value), so
m_e = t_e exactly when the noise adds n_e = t_e (1 − a_e). The noise reaches e after the
projection off the conserved momenta, which also moves some of other elements' noise onto e:
n = G σ² with the gain matrix G of :func:`noise_gain`, solved for σ². Rounds repeat this from
the new σ, since a_e depends on the states the noise leads to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from molsamp.flows.trajcast.driver import ForecastIntegrator
from molsamp.flows.trajcast.model import TrajCast
from molsamp.flows.trajcast.physics import conserved_degrees_of_freedom, split_motion
from molsamp.integrators.base import as_generator
from molsamp.integrators.guard import SimulationExploded
from molsamp.system import State, System
from molsamp.units import BOLTZMANN_KJ_PER_MOL_K


@dataclass
class NoiseCalibration:
    """Result of :func:`calibrate_velocity_noise`.

    Attributes
    ----------
    sigma : per element of ``model.elements``, nm/ps: the noise set on the model
    temperature_ratio : per element, the last round's mean-square velocity over the canonical one
        (1 = canonical); measured with the noise of that round, before its update
    rounds : per round, the noise used and the ratios it gave
    """

    sigma: list[float]
    temperature_ratio: list[float]
    rounds: list[dict]


def _per_element(values: torch.Tensor, species: torch.Tensor, n_elements: int) -> torch.Tensor:
    """(n_elements,) mean over atoms of each element of per-atom ``values`` (N,)."""
    sums = torch.zeros(n_elements, dtype=torch.float64).index_add_(0, species, values.double().cpu())
    return sums / torch.bincount(species, minlength=n_elements).clamp_min(1)


def _projected_mean_square(
    positions: torch.Tensor, masses: torch.Tensor, std: torch.Tensor, angular: bool,
    generator: torch.Generator, draws: int,
) -> torch.Tensor:  # fmt: skip
    """(N,) mean square per component of Gaussian velocities of per-atom ``std`` (N, 1) with the
    conserved momenta projected out, Monte Carlo over ``draws`` samples per walker."""
    total = torch.zeros(positions.shape[-2], dtype=torch.float64, device=positions.device)
    for _ in range(draws):
        v = std * torch.randn(
            positions.shape, generator=generator, dtype=positions.dtype, device=positions.device
        )
        total += split_motion(positions, v, masses, angular)[1].square().mean((0, 2)).double()
    return total / draws


def canonical_mean_square(
    system: System, positions: torch.Tensor, temperature: float, angular: bool, generator: torch.Generator,
    draws: int = 256,
) -> torch.Tensor:  # fmt: skip
    """(N,) canonical ⟨v²⟩ per velocity component of every atom, nm²/ps², at (B, N, 3)
    ``positions``: Maxwell–Boltzmann velocities with the conserved momenta projected out
    (Monte Carlo over ``draws`` samples per walker; heavy atoms carry more of the removed
    centre-of-mass and rotational motion, so their share is below k_B T / m)."""
    masses = system.masses.to(positions)
    std = torch.sqrt(BOLTZMANN_KJ_PER_MOL_K * temperature / masses)[:, None]
    return _projected_mean_square(positions, masses, std, angular, generator, draws)


def noise_gain(
    system: System, positions: torch.Tensor, species: torch.Tensor, n_elements: int, angular: bool,
    generator: torch.Generator, draws: int = 256,
) -> torch.Tensor:  # fmt: skip
    """(n_elements, n_elements) G: per element e, the mean square per velocity component that
    a rollout's velocity noise of variance σ_k² on the atoms of element k leaves on e after the
    projection off the conserved momenta (:class:`ForecastIntegrator` scales the noise up by the
    free share first), G_ek σ_k² summed over k. Off-diagonal terms are the momentum the
    projection moves between elements. Monte Carlo at (B, N, 3) ``positions``."""
    masses = system.masses.to(positions)
    n_atoms = system.n_atoms
    free = (3 * n_atoms - conserved_degrees_of_freedom(angular)) / (3 * n_atoms)
    gain = torch.zeros(n_elements, n_elements, dtype=torch.float64)
    for k in species.unique().tolist():
        std = (species == k).to(positions)[:, None] / free**0.5
        gain[:, k] = _per_element(
            _projected_mean_square(positions, masses, std, angular, generator, draws), species, n_elements
        )
    return gain


@torch.no_grad()
def calibrate_velocity_noise(
    model: TrajCast,
    system: System,
    state: State,
    temperature: float,
    thermostat_time: float,
    *,
    rounds: int = 4,
    steps: int = 1000,
    warmup: int = 200,
    generator: torch.Generator | int = 0,
    progress: bool = False,
) -> NoiseCalibration:
    """Set ``model.velocity_noise`` so that rollouts under the per-atom Langevin thermostat at
    ``temperature`` K and τ = ``thermostat_time`` ps are canonical per element (see the module
    docstring); returns the σ found and the last round's temperature ratios.

    Parameters
    ----------
    state : starting walkers, (B, N, 3) positions nm and velocities nm/ps (B ≥ 4 advised);
        each round goes on from where the last one ended
    rounds : calibration rounds; each rolls out ``warmup`` + ``steps`` forecast steps and
        averages over the last ``steps``
    generator : seeded generator or int seed of the rollouts' noise and thermostat
    """
    if rounds < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"rounds and steps must be >= 1 and warmup >= 0, got {rounds}, {steps}, {warmup}")
    generator = as_generator(generator, model.displacement_scale.device)
    species = model.species(system.atomic_numbers).cpu()
    n_el = len(model.elements)
    angular = not system.periodic
    x = state.positions.to(model.dtype)
    v = split_motion(x, state.velocities.to(x), system.masses.to(x), angular)[1]
    present = torch.bincount(species, minlength=n_el) > 0
    history, ratio = [], None
    original = model.velocity_noise.clone()
    for _ in tqdm(range(rounds), disable=not progress, desc="noise calibration", unit="round"):
        integrator = ForecastIntegrator(
            model, system, temperature=temperature, thermostat_time=thermostat_time, thermostat="langevin",
            generator=generator, angular=angular,
        )  # fmt: skip
        before = torch.zeros(system.n_atoms, dtype=torch.float64, device=x.device)  # Σ v², per atom
        after = torch.zeros_like(before)  # Σ v'², the forecast's
        for step in range(warmup + steps):
            x_next, v_forecast = integrator.forecast(x, v, state.cell)
            if step >= warmup:
                before += v.double().square().mean((0, 2))
                after += v_forecast.double().square().mean((0, 2))
            x, v = integrator.perturb(x_next, v_forecast, state.cell)
            if not (torch.isfinite(x).all() and torch.isfinite(v).all()):
                model.velocity_noise.copy_(original)
                at = len(history) * (warmup + steps) + step
                raise SimulationExploded(
                    f"a calibration rollout produced non-finite positions or velocities at forecast step {at}; "
                    "the model keeps its velocity noise. Train it longer, or calibrate with a smaller "
                    "thermostat_time",
                    at, at - 1, None,
                )  # fmt: skip
        measured = _per_element(before / steps, species, n_el)
        forecast_keeps = _per_element(after, species, n_el) / _per_element(before, species, n_el)  # a_e
        target = _per_element(
            canonical_mean_square(system, x, temperature, angular, generator), species, n_el
        )
        gain = noise_gain(system, x, species, n_el, angular, generator)[present][:, present]
        sigma = model.velocity_noise.double().cpu()
        ratio = measured / target
        history.append(
            {
                "sigma": sigma.tolist(),
                "temperature_ratio": ratio.tolist(),
                "forecast_keeps": forecast_keeps.tolist(),
            }
        )
        needed = (target * (1 - forecast_keeps))[present]  # the mean square a step must add back
        new_sigma = sigma.clone()  # elements absent from the system keep theirs
        new_sigma[present] = torch.linalg.solve(gain, needed).clamp_min(0.0).sqrt()
        model.velocity_noise.copy_(new_sigma.to(model.velocity_noise))
    return NoiseCalibration(model.velocity_noise.tolist(), ratio.where(present, math.nan).tolist(), history)
