"""Test settings: one torch thread (a busy 2-core box slows spinning OpenMP threads 10–50×)."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def alanine():
    """(System, State, OpenMMPotential) of alanine dipeptide in vacuum (built once)."""
    from molsamp.systems import alanine_dipeptide

    return alanine_dipeptide()
