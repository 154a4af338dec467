"""The TrajCast forecaster: an E(3)-equivariant message-passing network that maps a state
(positions, velocities, species, cell) to the displacement Δx and the new velocities after a
fixed interval Δt, followed by the conservation layer.

(Thiemann et al., "Force-free molecular dynamics through autoregressive equivariant
networks", 2025.) Written from the paper on molsamp's MACE pieces: the interaction + product
layer (:class:`~molsamp.potentials.mace.MACELayer`), the Bessel radial basis with polynomial
cutoff and the neighbour lists. Node features carry scalars and vectors (``C×0e + C×1o``);
the velocity enters as a vector feature, its size as a scalar; with ``edge_velocity`` the
radial MLPs also see each edge's approach rate ṙ_ij = r̂_ij · (v_j − v_i) (what a pair force
changes with over the interval: a bond's phase, a collision's closing speed); two vector
read-outs (1o) give the normalised residuals

    Δx = v Δt + σ_x(Z) · y_x,        v' = v + σ_v(Z) · y_v,

where σ_x, σ_v are the training RMS of the residuals per element (``fit_scales``), so the
network's targets are O(1) whatever the system. Units: nm, ps, amu.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from e3nn import o3

import molsamp
from molsamp.compilation import LazyCompile
from molsamp.flows.trajcast.physics import conserve
from molsamp.potentials.blocks import RadialEmbedding
from molsamp.potentials.graph import _MAX_Z, element_indices, element_lookup, refresh_exact_constants
from molsamp.potentials.mace import MACELayer
from molsamp.potentials.neighbors import edge_vectors, neighbor_pairs
from molsamp.potentials.serialization import load_plain_data, save_plain_data

FORMAT = "molsamp-trajcast-1"


class TrajCast(LazyCompile, torch.nn.Module):
    """Autoregressive forecaster of (Δx, v') over the interval Δt = ``interval`` ps.

    Parameters
    ----------
    elements : atomic numbers the model knows
    interval : forecast interval Δt, ps (k MD steps of the training data)
    r_max : cutoff of the message-passing graph, nm
    channels : C, multiplicity of the 0e and 1o node features
    max_ell : highest degree of the edge spherical harmonics
    correlation : body order ν of MACE's product basis
    num_interactions : message-passing layers
    num_bessel, num_polynomial_cutoff : radial basis size and envelope order
    radial_mlp : hidden widths of the radial MLPs
    edge_velocity : feed the approach rate ṙ_ij (in units of the RMS input velocity, softly
        clipped at ±3) to the radial MLPs beside the Bessel basis of r_ij
    dtype : parameter dtype (the global default dtype is never changed)

    Buffers (in the state dict)
    ---------------------------
    displacement_scale, velocity_scale : (n_elements,) σ_x (nm) and σ_v (nm/ps) of the residuals
    input_velocity_scale : (n_elements,) RMS velocity component per element, nm/ps (inputs are
        divided by it)
    velocity_noise : (n_elements,) nm/ps, standard deviation of the Gaussian noise a rollout
        adds to the forecast velocities (``fit_velocity_noise``; zero until fitted)

    ``use_compile()`` (:class:`~molsamp.compilation.LazyCompile`) runs the network (everything
    after the neighbour search) through ``torch.compile`` in training and rollouts alike; it
    compiles once per grad mode.
    """

    def __init__(
        self,
        elements: Sequence[int],
        interval: float,
        *,
        r_max: float = 0.5,
        channels: int = 16,
        max_ell: int = 2,
        correlation: int = 2,
        num_interactions: int = 2,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        radial_mlp: Sequence[int] = (32, 32),
        edge_velocity: bool = True,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        elements = sorted(int(z) for z in elements)
        if not elements or len(set(elements)) != len(elements) or elements[0] < 1 or elements[-1] > _MAX_Z:
            raise ValueError(f"elements must be distinct atomic numbers 1…{_MAX_Z}, got {elements}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 ps, got {interval}")
        if not r_max > 0:
            raise ValueError(f"r_max must be > 0 nm, got {r_max}")
        if channels < 1 or num_interactions < 1 or max_ell < 1 or correlation < 1:
            raise ValueError(
                "channels, num_interactions, max_ell and correlation must be >= 1, got "
                f"{channels}, {num_interactions}, {max_ell}, {correlation}"
            )
        self.elements = elements
        self.interval = float(interval)
        self.r_max = float(r_max)
        self._hyper = {
            "elements": elements,
            "interval": self.interval,
            "r_max": self.r_max,
            "channels": int(channels),
            "max_ell": int(max_ell),
            "correlation": int(correlation),
            "num_interactions": int(num_interactions),
            "num_bessel": int(num_bessel),
            "num_polynomial_cutoff": int(num_polynomial_cutoff),
            "radial_mlp": [int(w) for w in radial_mlp],
            "edge_velocity": bool(edge_velocity),
        }
        self.edge_velocity = bool(edge_velocity)
        n_radial = 2 * num_bessel if edge_velocity else num_bessel
        n_el = len(elements)
        self.register_buffer("_species_of_z", element_lookup(elements), persistent=False)
        default = torch.get_default_dtype()
        for name in ("displacement_scale", "velocity_scale", "input_velocity_scale"):
            self.register_buffer(name, torch.ones(n_el, dtype=default))
        self.register_buffer("velocity_noise", torch.zeros(n_el, dtype=default))
        self.channels = int(channels)
        self.hidden = o3.Irreps(f"{channels}x0e+{channels}x1o")
        self.irreps_sh = o3.Irreps.spherical_harmonics(max_ell)
        self.spherical_harmonics = o3.SphericalHarmonics(
            self.irreps_sh, normalize=True, normalization="component"
        )
        self.radial_embedding = RadialEmbedding(r_max, num_bessel, num_polynomial_cutoff)
        self.embedding = o3.Linear(o3.Irreps(f"{n_el}x0e"), o3.Irreps(f"{channels}x0e"))
        self.speed_embedding = torch.nn.Sequential(
            torch.nn.Linear(1, channels), torch.nn.SiLU(), torch.nn.Linear(channels, channels)
        )
        self.velocity_channels = torch.nn.Parameter(torch.randn(n_el, channels) / channels**0.5)
        self.layers = torch.nn.ModuleList(
            MACELayer(
                self.hidden,
                self.irreps_sh,
                self.hidden,
                channels,
                n_el,
                n_radial,
                list(radial_mlp),
                correlation,
            )
            for _ in range(num_interactions)
        )
        self.readouts = torch.nn.ModuleList(
            o3.Linear(self.hidden, o3.Irreps("2x1o")) for _ in range(num_interactions)
        )
        self.register_buffer(
            "avg_num_neighbors", torch.full((), 10.0, dtype=default)
        )  # set from data by fit_scales
        self.register_load_state_dict_post_hook(lambda module, _: refresh_exact_constants(module))
        if dtype is not None:
            self.to(dtype)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        refresh_exact_constants(self)
        return out

    @property
    def dtype(self) -> torch.dtype:
        return self.displacement_scale.dtype

    def hyperparameters(self) -> dict:
        """JSON-able constructor arguments (what :func:`load_forecaster` rebuilds from)."""
        return dict(self._hyper)

    def species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Element index per atom; raises for elements the model does not know."""
        return element_indices(self._species_of_z, self.elements, atomic_numbers)

    # ------------------------------------------------------------------ network
    def _residuals(self, species, velocities, edge_index, vectors, approach_rate) -> torch.Tensor:
        """Normalised residuals (M, 2, 3) from element indices (M,), scaled velocities (M, 3),
        edges (2, E), edge vectors (E, 3) nm and approach rates (E,) (None without
        ``edge_velocity``)."""
        n_el = len(self.elements)
        one_hot = torch.nn.functional.one_hot(species, n_el).to(velocities.dtype)
        radial = self.radial_embedding(torch.linalg.norm(vectors, dim=-1))
        if self.edge_velocity:  # zero beyond r_max like the Bessel part (the MLPs have no bias)
            radial = torch.cat([radial, radial * approach_rate[:, None]], dim=-1)
        sh = self.spherical_harmonics(vectors)
        scalars = self.embedding(one_hot) + self.speed_embedding(velocities.square().sum(-1, keepdim=True))
        vectors_in = self.velocity_channels[species][:, :, None] * velocities[:, None, :]  # (M, C, 3)
        node = torch.cat([scalars, vectors_in.reshape(len(species), -1)], dim=-1)
        out = 0.0
        for layer, readout in zip(self.layers, self.readouts, strict=True):
            node = layer(node, one_hot, species, edge_index, sh, radial, self.avg_num_neighbors)
            out = out + readout(node)
        return out.reshape(-1, 2, 3)

    def raw_forecast(
        self,
        atomic_numbers: torch.Tensor,
        positions: torch.Tensor,
        velocities: torch.Tensor,
        cell: torch.Tensor | None = None,
        pbc: Sequence[bool] = (True, True, True),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Network forecast (Δx, v') of B walkers before the conservation layer.

        positions, velocities : (B, N, 3) nm, nm/ps;  cell : (3, 3) nm or None (isolated).
        The graph is rebuilt from scratch (edges within r_max, periodic images with a cell).
        """
        n_walkers, n_atoms, _ = positions.shape
        dtype = self.dtype
        flat = positions.reshape(-1, 3).to(dtype)
        flat_v = velocities.reshape(-1, 3).to(dtype)
        batch = torch.arange(n_walkers, device=positions.device).repeat_interleave(n_atoms)
        cells = None if cell is None else cell.to(flat).expand(n_walkers, 3, 3)
        pbc = tuple(bool(p) for p in pbc)
        pairs = neighbor_pairs(flat.detach(), self.r_max, batch, n_walkers, cells, pbc)
        vectors = edge_vectors(flat, pairs.edge_index, pairs.shifts, cells, batch)
        species = self.species(atomic_numbers).to(positions.device).repeat(n_walkers)
        scaled_v = flat_v / self.input_velocity_scale[species][:, None]
        approach_rate = None
        if self.edge_velocity:
            i, j = pairs.edge_index
            relative = (flat_v[j] - flat_v[i]) / self.input_velocity_scale.mean()
            approach_rate = (relative * vectors).sum(-1) / torch.linalg.norm(vectors, dim=-1).clamp_min(1e-9)
            approach_rate = 3.0 * torch.tanh(
                approach_rate / 3.0
            )  # bounded: rare fast collisions stay in range
        y = self._compiled_or_eager(self._residuals)(
            species, scaled_v, pairs.edge_index, vectors, approach_rate
        )
        displacement = flat_v * self.interval + self.displacement_scale[species][:, None] * y[:, 0]
        new_velocities = flat_v + self.velocity_scale[species][:, None] * y[:, 1]
        shape = positions.shape
        return displacement.reshape(shape).to(positions.dtype), new_velocities.reshape(shape).to(
            positions.dtype
        )

    def forecast(
        self,
        atomic_numbers: torch.Tensor,
        masses: torch.Tensor,
        positions: torch.Tensor,
        velocities: torch.Tensor,
        cell: torch.Tensor | None = None,
        pbc: Sequence[bool] = (True, True, True),
        *,
        angular: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forecast step of Δt: displacement (B, N, 3) nm and new velocities (B, N, 3) nm/ps.

        Parameters
        ----------
        atomic_numbers : (N,) int64;  masses : (N,) amu
        positions, velocities : (B, N, 3) nm, nm/ps (positions need not be wrapped)
        cell : (3, 3) nm, box vectors as rows, or None for an isolated molecule
        pbc : periodic along each box vector (with a cell)
        angular : conserve angular momentum; default: when there is no cell

        The network output goes through :func:`~molsamp.flows.trajcast.physics.conserve`:
        linear momentum as the input's, COM displacement P·Δt/M, angular momentum (isolated).
        """
        if positions.ndim != 3 or positions.shape[-1] != 3 or velocities.shape != positions.shape:
            raise ValueError(
                f"positions and velocities must be (B, N, 3) tensors of one shape, got "
                f"{tuple(positions.shape)} and {tuple(velocities.shape)}"
            )
        if masses.shape != positions.shape[1:2] or atomic_numbers.shape != positions.shape[1:2]:
            raise ValueError(
                f"masses and atomic_numbers must have shape (N,) = ({positions.shape[1]},), got "
                f"{tuple(masses.shape)} and {tuple(atomic_numbers.shape)}"
            )
        if angular is None:
            angular = cell is None or not any(pbc)
        displacement, new_velocities = self.raw_forecast(atomic_numbers, positions, velocities, cell, pbc)
        return conserve(masses, positions, velocities, displacement, new_velocities, self.interval, angular)


def save_forecaster(model: TrajCast, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model`` as plain data (hyperparameters JSON + state dict); returns the path.

    ``metadata`` (JSON-able) is stored beside it, e.g. the system and the training settings.
    """
    payload = {
        "format": FORMAT,
        "hyperparameters": json.dumps(model.hyperparameters(), sort_keys=True),
        "metadata": json.dumps(metadata or {}, sort_keys=True),
        "units": {"length": "nm", "time": "ps", "mass": "amu"},
        "molsamp_version": molsamp.__version__,
        "dtype": str(model.dtype).removeprefix("torch."),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return save_plain_data(payload, path)


def load_forecaster(path: str | Path, device: torch.device | str = "cpu") -> tuple[TrajCast, dict]:
    """(model, metadata) from a file of :func:`save_forecaster`, read with ``weights_only=True``."""
    payload = load_plain_data(
        path, FORMAT, "molsamp TrajCast forecaster", "molsamp.flows.trajcast.save_forecaster"
    )
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(payload.get("dtype"))
    if dtype is None:
        raise ValueError(f"{path}: dtype must be float32 or float64, got {payload.get('dtype')!r}")
    hyper = json.loads(payload["hyperparameters"])
    hyper.setdefault("edge_velocity", False)  # files written before these options existed
    state = payload["state_dict"]
    state.setdefault("velocity_noise", torch.zeros_like(state["velocity_scale"]))
    model = TrajCast(hyper.pop("elements"), hyper.pop("interval"), **hyper, dtype=dtype)
    model.load_state_dict(state)
    return model.to(device), json.loads(payload["metadata"])
