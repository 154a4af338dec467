"""``GraphPotential.use_compile``: compiled and eager energies and forces agree (CPU).

Tracing takes over a minute on a loaded 2-core CPU even for a tiny model, hence ``slow``.
The test uses the ``aot_eager`` backend: it checks what compilation can get wrong here —
capturing the network (with dynamic edge counts) and its compiled backward, which gives the
forces — without spending minutes generating C++ kernels; tests/test_cuda.py compiles with
the default backend on a GPU.
"""

from __future__ import annotations

import copy

import pytest
import torch

from molsamp.integrators import LangevinBAOAB
from molsamp.system import State

from .conftest import random_structure
from .models import MODELS

ELEMENTS = torch.tensor([8, 1, 1, 6, 1, 7, 1, 8])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tensornet", "mace"])
def test_compiled_and_eager_models_agree(kind):
    model = MODELS[kind](r_max=0.3).bind(ELEMENTS)
    x = torch.stack([random_structure(8, 0.5, seed=40 + k) for k in range(2)])
    compiled = copy.deepcopy(model).use_compile(backend="aot_eager")
    for shift in (0.0, 0.01):  # moved atoms (other edge count) reuse the dynamic-shape code
        eager = model.energy_and_forces(x + shift)
        fast = compiled.energy_and_forces(x + shift)
        torch.testing.assert_close(fast[0], eager[0], rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(fast[1], eager[1], rtol=1e-10, atol=1e-10)
    # MD runs the compiled network; training (create_graph) keeps the eager one
    langevin = LangevinBAOAB(compiled, torch.full((8,), 12.0), 0.0005, 300.0, 1.0, 0)
    state = langevin.step(State(x, torch.zeros_like(x)), 3)
    assert torch.isfinite(state.forces).all()
    assert compiled._network(create_graph=True) == compiled._atom_energies
    assert compiled._compiled is not None and copy.deepcopy(compiled)._compiled is None


def test_use_compile_is_off_by_default_and_can_be_switched_off():
    model = MODELS["tensornet"](r_max=0.3)
    assert model._network(create_graph=False) == model._atom_energies
    model.use_compile(mode="max-autotune")
    assert model._compile_options == {"dynamic": True, "mode": "max-autotune"}
    model.use_compile(False)
    assert model._network(create_graph=False) == model._atom_energies
