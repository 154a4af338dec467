"""Energy + forces time per call: molsamp MACE vs mace-torch, molsamp TensorNet vs torchmd-net.

Same hyperparameters, same run, float32, 1 thread, medians; ~22 (alanine dipeptide,
isolated), 256 and 1008 atoms (rattled fcc Cu, periodic). Each (implementation, system)
runs in its own process so peak memory (max RSS) is its own.

The anchors live in their own virtual environments, created here on first use, because
mace-torch pins e3nn 0.4.4 (and switches off torch's safe loading when imported) and
torchmd-net brings its own stack. They reuse this environment's torch through a ``.pth``
file placed *after* their own site-packages, so their pinned e3nn wins and no second torch
is downloaded.

    python benchmarks/nn_potentials.py             # set up venvs if needed, run, print
    python benchmarks/nn_potentials.py --repeats 5 --skip-anchors
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = {
    "mace": (
        Path("/tmp/venv-mace"),
        # mace-torch and what `mace.modules` / `mace.data` import; --no-deps keeps torch
        [
            "mace-torch==0.3.16",
            "e3nn==0.4.4",
            "opt_einsum_fx",
            "torch-ema",
            "prettytable",
            "matscipy",
            "configargparse",
            "python-hostlist",
            "lmdb",
            "orjson",
            "h5py",
            "torchmetrics",
            "lightning-utilities",
            "GitPython",
            "gitdb",
            "smmap",
            "pandas",
            "pytz",
            "tzdata",
        ],
    ),
    "torchmdnet": (
        Path("/tmp/venv-torchmdnet"),
        [
            "torchmd-net==3.1.0",
            "warp-lang",
            "lightning-utilities",
            "torch_geometric",
            "h5py",
            "fsspec",
            "aiohttp",
            "psutil",
            "pyparsing",
            "requests",
        ],
    ),
}
MACE_HYPER = dict(
    r_max_angstrom=5.0,
    num_bessel=8,
    p=5,
    max_ell=3,
    correlation=3,
    num_interactions=2,
    hidden="64x0e+64x1o",
    radial_mlp=[64, 64, 64],
)
TENSORNET_HYPER = dict(cutoff_angstrom=5.0, hidden=64, layers=2, num_rbf=32)


# ----------------------------------------------------------------------------- systems
def systems() -> dict[str, dict]:
    import ase.build
    import numpy as np

    from molsamp.systems import alanine_dipeptide

    system, state, _ = alanine_dipeptide()
    out = {
        "alanine_22": {
            "numbers": system.atomic_numbers.tolist(),
            "positions": (10 * state.positions[0].numpy()).tolist(),
            "cell": None,
        }
    }
    rng = np.random.default_rng(0)
    for name, repeat in (("cu_256_pbc", (4, 4, 4)), ("cu_1008_pbc", (6, 6, 7))):
        atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
        atoms.positions += 0.05 * rng.normal(size=atoms.positions.shape)
        out[name] = {
            "numbers": atoms.numbers.tolist(),
            "positions": atoms.positions.tolist(),
            "cell": atoms.cell[:].tolist(),
        }
    return out


def _time(call, repeats: int) -> float:
    call()
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------- workers
def work_molsamp(model_name: str, data: dict, repeats: int) -> dict:
    import torch

    from molsamp.potentials import MACE, TensorNet

    z = torch.tensor(data["numbers"])
    x = torch.tensor(data["positions"], dtype=torch.float32)[None] / 10
    cell = None if data["cell"] is None else torch.tensor(data["cell"], dtype=torch.float32) / 10
    elements = sorted(set(data["numbers"]))
    torch.manual_seed(0)
    if model_name == "mace":
        h = MACE_HYPER
        model = MACE(
            elements,
            r_max=h["r_max_angstrom"] / 10,
            num_bessel=h["num_bessel"],
            num_polynomial_cutoff=h["p"],
            max_ell=h["max_ell"],
            correlation=h["correlation"],
            num_interactions=h["num_interactions"],
            hidden_irreps=h["hidden"],
            radial_mlp=h["radial_mlp"],
            skin=0.0,
        )
    else:
        h = TENSORNET_HYPER
        model = TensorNet(
            elements,
            r_max=h["cutoff_angstrom"] / 10,
            hidden_channels=h["hidden"],
            num_layers=h["layers"],
            num_radial=h["num_rbf"],
            skin=0.0,
        )
    model.bind(z)
    # the graph call alone (pairs given), like the anchors' timed calls, and the full call
    flat, batch = x[0], torch.zeros(len(z), dtype=torch.int64)
    from molsamp.potentials.neighbors import neighbor_pairs

    cells = None if cell is None else cell[None]
    pairs = neighbor_pairs(flat, model.r_max, batch, 1, cells)
    graph = _time(lambda: model.predict(z, flat, batch, cells, pairs=pairs), repeats)
    full = _time(lambda: model.energy_and_forces(x, cell), repeats)
    return {"seconds": graph, "seconds_with_neighbor_list": full, "edges": int(pairs.edge_index.shape[1])}


def work_mace(data: dict, repeats: int) -> dict:
    # mace before e3nn: importing e3nn 0.4.4 first fails on torch >= 2.6 (weights-only load)
    import numpy as np  # noqa: I001
    import torch
    from mace import data as mace_data
    from mace import modules
    from mace.tools import torch_geometric, utils
    from e3nn import o3

    h = MACE_HYPER
    elements = sorted(set(data["numbers"]))
    table = utils.AtomicNumberTable(elements)
    cell = np.zeros((3, 3)) if data["cell"] is None else np.array(data["cell"])
    config = mace_data.Configuration(
        atomic_numbers=np.array(data["numbers"]),
        positions=np.array(data["positions"]),
        properties={},
        property_weights={},
        cell=cell,
        pbc=(data["cell"] is not None,) * 3,
    )
    atomic = mace_data.AtomicData.from_config(config, z_table=table, cutoff=h["r_max_angstrom"])
    batch = next(iter(torch_geometric.dataloader.DataLoader([atomic], batch_size=1)))
    edges = int(batch.edge_index.shape[1])
    torch.manual_seed(0)
    model = modules.ScaleShiftMACE(
        r_max=h["r_max_angstrom"],
        num_bessel=h["num_bessel"],
        num_polynomial_cutoff=h["p"],
        max_ell=h["max_ell"],
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=h["num_interactions"],
        num_elements=len(elements),
        hidden_irreps=o3.Irreps(h["hidden"]),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(elements)),
        avg_num_neighbors=edges / len(data["numbers"]),
        atomic_numbers=elements,
        correlation=h["correlation"],
        gate=torch.nn.functional.silu,
        radial_MLP=h["radial_mlp"],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    ).float()
    inputs = batch.to_dict()
    inputs = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    seconds = _time(lambda: model(inputs, training=False, compute_force=True), repeats)
    return {"seconds": seconds, "edges": edges}


def work_torchmdnet(data: dict, repeats: int) -> dict:
    import torch
    from torchmdnet.models.tensornet import TensorNet as TMDTensorNet

    h = TENSORNET_HYPER
    z = torch.tensor(data["numbers"])
    pos = torch.tensor(data["positions"], dtype=torch.float32)
    box = None if data["cell"] is None else torch.tensor(data["cell"], dtype=torch.float32)
    torch.manual_seed(0)
    model = TMDTensorNet(
        hidden_channels=h["hidden"],
        num_layers=h["layers"],
        num_rbf=h["num_rbf"],
        cutoff_upper=h["cutoff_angstrom"],
        max_z=max(data["numbers"]) + 1,
        max_num_neighbors=256,
        equivariance_invariance_group="O(3)",
        static_shapes=False,
        dtype=torch.float32,
    )
    head = torch.nn.Linear(h["hidden"], 1)
    batch = torch.zeros(len(z), dtype=torch.int64)

    def call():
        x = pos.clone().requires_grad_(True)
        features = model(z, x, batch, box=box)[0]
        energy = head(features).sum()
        return torch.autograd.grad(energy, x)[0]

    return {"seconds": _time(call, repeats)}


def worker(args) -> None:
    import torch

    torch.set_num_threads(1)
    data = json.loads(Path(args.data).read_text())[args.system]
    if args.worker == "molsamp":
        result = work_molsamp(args.model, data, args.repeats)
    elif args.worker == "mace":
        result = work_mace(data, args.repeats)
    else:
        result = work_torchmdnet(data, args.repeats)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# ----------------------------------------------------------------------------- driver
def ensure_venv(kind: str) -> Path:
    """Create the anchor's venv (reusing this torch) if missing; returns its python."""
    path, packages = VENVS[kind]
    python = path / "bin" / "python"
    marker = path / ".molsamp-benchmark-ready"
    if marker.is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # appended after the venv's own site-packages: the venv's pinned packages win
    (site / "zz_base_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", *packages], check=True)
    marker.write_text("ok\n")
    return python


def run_worker(
    python: Path, worker_name: str, system: str, data_path: Path, repeats: int, model: str = "mace"
) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT) if worker_name == "molsamp" else "",
    }
    command = [
        str(python),
        __file__,
        "--worker",
        worker_name,
        "--system",
        system,
        "--data",
        str(data_path),
        "--repeats",
        str(repeats),
        "--model",
        model,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd="/tmp")
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--systems", nargs="+", default=["alanine_22", "cu_256_pbc", "cu_1008_pbc"])
    parser.add_argument("--skip-anchors", action="store_true")
    parser.add_argument("--output", type=Path, default=Path("benchmark-nn.json"))
    parser.add_argument("--worker", choices=["molsamp", "mace", "torchmdnet"])
    parser.add_argument("--model", default="mace")
    parser.add_argument("--system")
    parser.add_argument("--data")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import tempfile

    data_path = Path(tempfile.mkdtemp(prefix="molsamp-bench-")) / "systems.json"
    data_path.write_text(json.dumps(systems()))
    anchors = {}
    if not args.skip_anchors:
        for kind in VENVS:
            try:
                anchors[kind] = ensure_venv(kind)
            except subprocess.CalledProcessError as error:
                print(f"could not set up {kind}: {error}")
    results = {}
    for system in args.systems:
        row = {
            "molsamp_mace": run_worker(
                Path(sys.executable), "molsamp", system, data_path, args.repeats, "mace"
            ),
            "molsamp_tensornet": run_worker(
                Path(sys.executable), "molsamp", system, data_path, args.repeats, "tensornet"
            ),
        }
        if "mace" in anchors:
            row["mace_torch"] = run_worker(anchors["mace"], "mace", system, data_path, args.repeats)
        if "torchmdnet" in anchors:
            row["torchmd_net"] = run_worker(
                anchors["torchmdnet"], "torchmdnet", system, data_path, args.repeats
            )
        results[system] = row
        print(f"\n{system}")
        for name, r in row.items():
            if "error" in r:
                print(f"  {name:18s} failed: {r['error']}")
            else:
                extra = (
                    f" (with neighbour list {1e3 * r['seconds_with_neighbor_list']:.1f} ms)"
                    if "seconds_with_neighbor_list" in r
                    else ""
                )
                print(
                    f"  {name:18s} {1e3 * r['seconds']:9.1f} ms  peak RSS {r['peak_rss_mb']:7.0f} MB{extra}"
                )
        for ours, theirs in (("molsamp_mace", "mace_torch"), ("molsamp_tensornet", "torchmd_net")):
            if "seconds" in row.get(ours, {}) and "seconds" in row.get(theirs, {}):
                print(f"  ratio {ours}/{theirs}: {row[ours]['seconds'] / row[theirs]['seconds']:.2f}")
    args.output.write_text(json.dumps(results, indent=2))
    print(f"\nwritten {args.output}")


if __name__ == "__main__":
    main()
