import pytest
import torch


@pytest.fixture(scope="session")
def alanine_frames():
    """(System, frames (40, 22, 3) float64 nm): short vacuum Langevin MD of alanine dipeptide."""
    from molsamp.integrators import LangevinBAOAB, simulate
    from molsamp.systems import alanine_dipeptide

    system, state, potential = alanine_dipeptide(seed=3)
    langevin = LangevinBAOAB(potential, system.masses, 0.001, 300.0, 1.0, 3)
    frames = []
    for _ in range(40):
        state = simulate(langevin, state, 250, progress=False)
        frames.append(state.positions[0].clone())
    return system, torch.stack(frames)


def make_ballistic(model):
    """Zero a TrajCast's read-outs in place, so that it forecasts free flight (Δx = vΔt,
    v' = v): a stable forecaster for tests of plumbing. Returns the model."""
    with torch.no_grad():
        for readout in model.readouts:
            readout.weight.zero_()
    return model
