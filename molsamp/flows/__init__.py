"""Learned proposals: internal coordinates, spline flows, Boltzmann generators, flow-MCMC,
Timewarp (learned large time steps accepted by Metropolis–Hastings) and importance reweighting."""

from molsamp.flows.boltzmann import (
    BoltzmannGenerator,
    FlowSamples,
    load_boltzmann_generator,
    save_boltzmann_generator,
    soften_energy,
)
from molsamp.flows.coordinates import InternalCoordinates, NormalizedInternal, ZMatrix
from molsamp.flows.flow import CouplingSplineFlow, Flow
from molsamp.flows.mcmc import FlowMCMCResult, IndependenceMetropolis, flow_mcmc
from molsamp.flows.reweighting import (
    ALANINE_BASINS,
    Basin,
    Estimate,
    basin_free_energy_difference,
    batch_ess_fractions,
    ess_fraction,
    free_energy_profile,
    half_vs_half_divergences,
    js_divergence,
    kish_ess,
    kl_divergence,
    log_importance_weights,
    matched_ess_js_floor,
    pareto_k,
    weighted_histogram,
    weighted_mean,
)
from molsamp.flows.timewarp import TimewarpConfig, TimewarpFlow, train_timewarp, transition_pairs
from molsamp.flows.timewarp_mcmc import TimewarpMove, TimewarpResult, timewarp_mcmc

__all__ = [
    "ALANINE_BASINS",
    "Basin",
    "BoltzmannGenerator",
    "CouplingSplineFlow",
    "Estimate",
    "Flow",
    "FlowMCMCResult",
    "FlowSamples",
    "IndependenceMetropolis",
    "InternalCoordinates",
    "NormalizedInternal",
    "TimewarpConfig",
    "TimewarpFlow",
    "TimewarpMove",
    "TimewarpResult",
    "ZMatrix",
    "basin_free_energy_difference",
    "batch_ess_fractions",
    "ess_fraction",
    "flow_mcmc",
    "free_energy_profile",
    "half_vs_half_divergences",
    "js_divergence",
    "kish_ess",
    "kl_divergence",
    "load_boltzmann_generator",
    "log_importance_weights",
    "matched_ess_js_floor",
    "pareto_k",
    "save_boltzmann_generator",
    "soften_energy",
    "timewarp_mcmc",
    "train_timewarp",
    "transition_pairs",
    "weighted_histogram",
    "weighted_mean",
]
