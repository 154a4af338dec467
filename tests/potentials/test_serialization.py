"""Save → load gives identical energies; anything but plain data is refused."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from molsamp.potentials import load_potential, save_potential

from .models import MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_gives_identical_energies(name, alanine_structure, tmp_path):
    z, x = alanine_structure
    model = MODELS[name]()
    model.atomic_energies.copy_(torch.tensor([-1.5, -3.0, -4.0, -5.0]))
    model.scale.fill_(2.5)
    path = save_potential(model, tmp_path / "model.pt")
    loaded = load_potential(path)
    assert type(loaded) is type(model)
    assert loaded.supported_atomic_numbers == [1, 6, 7, 8]
    assert loaded.hyperparameters() == model.hyperparameters()
    e1, f1 = model.bind(z).energy_and_forces(x[None])
    e2, f2 = loaded.bind(z).energy_and_forces(x[None])
    assert torch.equal(e1, e2) and torch.equal(f1, f2)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "molsamp-potential-1", "payload": _Payload()}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        load_potential(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(ValueError, match="refusing to load"):
        load_potential(raw)


def test_tampered_files_are_refused(tmp_path, alanine_structure):
    model = MODELS["mace"]()
    path = save_potential(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)

    payload_bad_class = {**payload, "class": "os.system"}
    torch.save(payload_bad_class, tmp_path / "bad_class.pt")
    with pytest.raises(ValueError, match="model class"):
        load_potential(tmp_path / "bad_class.pt")

    weights = dict(payload["state_dict"])
    weights.pop(next(iter(weights)))
    torch.save({**payload, "state_dict": weights}, tmp_path / "missing.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_potential(tmp_path / "missing.pt")

    torch.save({**payload, "format": "other"}, tmp_path / "format.pt")
    with pytest.raises(ValueError, match="not a molsamp potential"):
        load_potential(tmp_path / "format.pt")

    (tmp_path / "truncated.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="refusing to load"):
        load_potential(tmp_path / "truncated.pt")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_export_matches_eager(name, alanine_structure, tmp_path):
    """torch.export works for both models (30–90 s each on 2 cores, hence slow)."""
    from molsamp.potentials.neighbors import edge_vectors, neighbor_pairs
    from molsamp.potentials.serialization import export_program

    z, x = alanine_structure
    model = MODELS[name]()
    export_program(model, z, x, tmp_path / "model.pt2")
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    moved = x + 0.01  # a new structure: other vectors, same graph sizes allowed to vary
    batch = torch.zeros(len(z), dtype=torch.int64)
    pairs = neighbor_pairs(moved[:15], model.r_max, batch[:15], 1)
    vectors = edge_vectors(moved[:15], pairs.edge_index, pairs.shifts, None, batch[:15])
    vectors.requires_grad_(True)
    exported = program(model.species(z[:15]), pairs.edge_index, vectors).sum()
    eager = model.predict(z[:15], moved[:15], forces=False)["energy"]
    torch.testing.assert_close(exported.detach(), eager[0], rtol=1e-12, atol=1e-10)
    (grad,) = torch.autograd.grad(exported, vectors)
    assert torch.isfinite(grad).all()
