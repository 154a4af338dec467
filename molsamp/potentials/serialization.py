"""Safe saving and loading of neural-network potentials.

One file (``torch.save``) holding only plain data: a format tag, the model class name (from
a fixed list), its JSON hyperparameters, the element list, the units, the molsamp version,
the dtype and the state dict. :func:`load_potential` reads it with
``torch.load(weights_only=True)``, which refuses pickled code, and rebuilds the model from
the hyperparameters: nothing in the file is ever executed.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

import molsamp
from molsamp.potentials.graph import GraphPotential
from molsamp.potentials.mace import MACE
from molsamp.potentials.tensornet import TensorNet

FORMAT = "molsamp-potential-1"
UNITS = {"length": "nm", "energy": "kJ/mol", "force": "kJ/mol/nm", "stress": "kJ/mol/nm^3"}
MODEL_CLASSES: dict[str, type[GraphPotential]] = {"MACE": MACE, "TensorNet": TensorNet}


def save_potential(model: GraphPotential, path: str | Path) -> Path:
    """Write ``model`` (a MACE or TensorNet) to ``path``; returns the path.

    The file is written to a temporary name first and renamed, so a crash never leaves a
    half-written model behind.
    """
    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise TypeError(f"can save {sorted(MODEL_CLASSES)}, got {name}")
    hyper = model.hyperparameters()
    payload = {
        "format": FORMAT,
        "class": name,
        "hyperparameters": json.dumps(hyper, sort_keys=True),
        "elements": list(model.supported_atomic_numbers),
        "units": dict(UNITS),
        "molsamp_version": molsamp.__version__,
        "dtype": str(model.atomic_energies.dtype).removeprefix("torch."),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return save_plain_data(payload, path)


def save_plain_data(payload: dict, path: str | Path) -> Path:
    """``torch.save`` a dict of plain data (tensors, str, numbers) to a temporary name, then
    rename it to ``path``: a crash never leaves a half-written file. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)
    return path


def load_plain_data(path: str | Path, file_format: str, what: str, writer: str) -> dict:
    """The dict in ``path`` read with ``torch.load(weights_only=True)`` (pickled code is
    refused), checked to carry ``"format": file_format``; ``what`` (e.g. "molsamp potential")
    and ``writer`` (the function that writes such files) go into error messages."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}; check the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(
            f"refusing to load {path}: it is not a plain-data {what} file "
            f"(torch.load with weights_only=True said: {str(error).splitlines()[0]})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path} is not a {what} (format {found!r}, expected {file_format!r}); write it with {writer}"
        )
    return payload


def load_potential(path: str | Path, device: torch.device | str = "cpu") -> GraphPotential:
    """Rebuild a potential saved by :func:`save_potential`.

    Raises
    ------
    ValueError
        when the file holds anything but plain data (pickled objects are refused by
        ``weights_only=True``), is not a molsamp potential, or names an unknown model class.
    """
    payload = load_plain_data(path, FORMAT, "molsamp potential", "molsamp.potentials.save_potential")
    name = payload.get("class")
    if name not in MODEL_CLASSES:
        raise ValueError(f"{path} names model class {name!r}; known: {sorted(MODEL_CLASSES)}")
    if payload.get("units") != UNITS:
        raise ValueError(f"{path} has units {payload.get('units')}, molsamp uses {UNITS}")
    hyper = json.loads(payload["hyperparameters"])
    if not isinstance(hyper, dict) or hyper.get("elements") != payload.get("elements"):
        raise ValueError(f"{path}: hyperparameters and element list disagree; the file is damaged")
    dtype = getattr(torch, payload["dtype"], None)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{path}: dtype must be float32 or float64, got {payload['dtype']!r}")
    model = MODEL_CLASSES[name](**hyper, dtype=dtype)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.to(device)


class _AtomEnergies(torch.nn.Module):
    """The exportable part of a model: graph in, per-atom energies (kJ/mol) out."""

    def __init__(self, model: GraphPotential):
        super().__init__()
        self.model = model

    def forward(self, species: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        m = self.model
        outputs = m._atom_energies(species, edge_index, vectors)
        return m.atomic_energies[species] + m.shift + m.scale * outputs


def export_program(
    model: GraphPotential,
    atomic_numbers: torch.Tensor,
    positions: torch.Tensor,
    path: str | Path | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export`` the model's graph network, with dynamic atom and edge counts.

    The program maps (species (M,) int64 element indices, edge_index (2, E), edge vectors
    (E, 3) nm, all shorter than r_max) to per-atom energies (M,) kJ/mol including E0, scale
    and shift; the neighbour search (vesin/numpy) stays outside. Forces follow by autograd
    through the vectors. ``atomic_numbers`` (N,) and ``positions`` (N, 3) nm give an example
    structure with at least two atoms and two edges. Saved with ``torch.export.save`` when
    ``path`` is given (load with ``torch.export.load``: no pickled code).
    """
    from molsamp.potentials.neighbors import edge_vectors, neighbor_pairs

    batch = torch.zeros(positions.shape[0], dtype=torch.int64, device=positions.device)
    pairs = neighbor_pairs(positions, model.r_max, batch, 1)
    vectors = edge_vectors(positions, pairs.edge_index, pairs.shifts, None, batch).detach()
    species = model.species(atomic_numbers).to(positions.device)
    atoms = torch.export.Dim("atoms", min=2)
    edges = torch.export.Dim("edges", min=2)
    program = torch.export.export(
        _AtomEnergies(model).eval(),
        (species, pairs.edge_index, vectors),
        dynamic_shapes=({0: atoms}, {1: edges}, {0: edges}),
    )
    if path is not None:
        torch.export.save(program, str(path))
    return program
