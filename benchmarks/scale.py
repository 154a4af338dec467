"""Scale: per-walker throughput of MACE + Langevin for B walkers, and DDP training speed-up.

1. MACE (small: 16x0e+16x1o, ℓ ≤ 2, r_max 0.4 nm, float32 weights, float64 positions) +
   BAOAB Langevin on alanine dipeptide for B = 1, 16, 256 walkers evaluated together: walker
   steps per second (B × steps / s) and the ratio to B = 1. On the CPU, and on CUDA when a
   GPU is present (there also with all pairs, ``skin=inf``: no neighbour-list check per step).
2. Data-parallel training (examples/train_distributed.py through torchrun, gloo on CPU):
   seconds per epoch with 1 and 2 ranks at the same global batch, and the speed-up.
3. On CUDA with ``--mace-python PYTHON`` (an interpreter where mace-torch, and optionally
   cuequivariance, is installed — its own venv, see benchmarks/nn_potentials.py): energy +
   forces of B walkers by molsamp's MACE and by mace-torch, same hyperparameters, same card,
   same run.

    OMP_NUM_THREADS=1 python benchmarks/scale.py                 # everything that can run here
    OMP_NUM_THREADS=1 python benchmarks/scale.py --skip-training --walkers 1 16
    python benchmarks/scale.py --mace-python /tmp/venv-mace/bin/python   # on a GPU machine

Every process uses one torch thread; numbers are medians of ``--repeats`` timings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STEPS = {1: 200, 16: 40, 256: 6}  # Langevin steps timed per repeat (fewer for many walkers)
HYPER = dict(r_max=0.4, max_ell=2, correlation=3, hidden_irreps="16x0e+16x1o", radial_mlp=(32, 32))


def _median_seconds(call, repeats: int) -> float:
    call()  # warm-up (neighbour list, allocator, kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alanine_walkers(n_walkers: int, device: str, skin: float = 0.05):
    """The small MACE bound to alanine dipeptide, B walkers (rattled copies) and Langevin;
    ``skin=math.inf`` uses all pairs (no neighbour-list check per step)."""
    from molsamp.integrators import LangevinBAOAB
    from molsamp.potentials import MACE
    from molsamp.system import State
    from molsamp.systems import alanine_dipeptide

    system, state, _ = alanine_dipeptide(seed=0)
    torch.manual_seed(0)
    model = MACE([1, 6, 7, 8], dtype=torch.float32, skin=skin, **HYPER)
    model.bind(system.atomic_numbers).to(device)
    generator = torch.Generator().manual_seed(1)
    x = state.positions.expand(n_walkers, -1, -1)
    x = (x + 0.002 * torch.randn(x.shape, generator=generator, dtype=x.dtype)).to(device)
    v = state.velocities.expand(n_walkers, -1, -1).clone().to(device)
    langevin = LangevinBAOAB(
        model, system.masses, 0.0005, 300.0, 1.0, torch.Generator(device=device).manual_seed(2)
    )
    return model, langevin, State(x, v)


def md_throughput(device: str, walkers: list[int], repeats: int, skin: float = 0.05) -> dict:
    rows = {}
    for n_walkers in walkers:
        _, langevin, state = alanine_walkers(n_walkers, device, skin)
        steps = STEPS.get(n_walkers, 10)
        seconds = _median_seconds(lambda: langevin.step(state, steps), repeats)  # noqa: B023
        rows[n_walkers] = {
            "steps": steps,
            "seconds": seconds,
            "walker_steps_per_s": n_walkers * steps / seconds,
        }
    base = rows[walkers[0]]["walker_steps_per_s"]
    for row in rows.values():
        row["throughput_vs_first"] = row["walker_steps_per_s"] / base
    return rows


def training_speedup(frames: int, epochs: int, global_batch: int, repeats: int) -> dict:
    """Seconds per epoch (epochs after the first) for 1 and 2 gloo ranks, same global batch."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for ranks in (1, 2):  # alternate, so load on a shared machine hits both alike
            with tempfile.TemporaryDirectory(prefix="molsamp-ddp-") as folder:
                command = [
                    str(torchrun), "--nproc-per-node", str(ranks), "--master-port", str(29500 + ranks),
                    str(ROOT / "examples" / "train_distributed.py"), "--frames", str(frames),
                    "--epochs", str(epochs), "--batch-size", str(global_batch // ranks),
                    "--output", folder, "--quiet",
                ]  # fmt: skip
                subprocess.run(command, check=True, env=env, capture_output=True, text=True)
                report = json.loads((Path(folder) / "report.json").read_text())
            times[ranks].append(statistics.median(report["later_epoch_seconds"]))
    one, two = statistics.median(times[1]), statistics.median(times[2])
    return {"epoch_seconds_1_rank": one, "epoch_seconds_2_ranks": two, "speedup": one / two, "all": times}


MACE_TORCH_WORKER = r"""
import json, sys, statistics, time
import numpy as np, torch
from mace import data as mace_data, modules
from mace.tools import torch_geometric, utils
from e3nn import o3
spec = json.loads(sys.argv[1])
device, h = spec["device"], spec["hyper"]
torch.set_num_threads(1)
table = utils.AtomicNumberTable([1, 6, 7, 8])
config = mace_data.Configuration(atomic_numbers=np.array(spec["numbers"]), positions=np.array(spec["positions"]),
    properties={}, property_weights={}, cell=np.zeros((3, 3)), pbc=(False,) * 3)
atomic = mace_data.AtomicData.from_config(config, z_table=table, cutoff=10 * h["r_max"])
torch.manual_seed(0)
model = modules.ScaleShiftMACE(r_max=10 * h["r_max"], num_bessel=8, num_polynomial_cutoff=5, max_ell=h["max_ell"],
    interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
    interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
    num_interactions=2, num_elements=4, hidden_irreps=o3.Irreps(h["hidden_irreps"]),
    MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(4), avg_num_neighbors=10.0,
    atomic_numbers=[1, 6, 7, 8], correlation=h["correlation"], gate=torch.nn.functional.silu,
    radial_MLP=list(h["radial_mlp"]), atomic_inter_scale=1.0, atomic_inter_shift=0.0).float().to(device)
if spec.get("cueq"):
    from mace.cli.convert_e3nn_cueq import run as to_cueq
    model = to_cueq(model, device=device)
out = {}
for n in spec["walkers"]:
    batch = next(iter(torch_geometric.dataloader.DataLoader([atomic] * n, batch_size=n))).to(device)
    inputs = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.to_dict().items()}
    call = lambda: model(inputs, training=False, compute_force=True)
    call(); call()
    times = []
    for _ in range(spec["repeats"]):
        if device == "cuda": torch.cuda.synchronize()
        start = time.perf_counter(); call()
        if device == "cuda": torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out[n] = statistics.median(times)
print(json.dumps(out))
"""


def mace_torch_comparison(python: str, device: str, walkers: list[int], repeats: int, cueq: bool) -> dict:
    """Seconds per energy+forces call of B walkers: molsamp MACE here, mace-torch in ``python``."""
    from molsamp.systems import alanine_dipeptide

    system, state, _ = alanine_dipeptide(seed=0)
    spec = {
        "device": device, "hyper": HYPER, "walkers": walkers, "repeats": repeats, "cueq": cueq,
        "numbers": system.atomic_numbers.tolist(), "positions": (10 * state.positions[0]).tolist(),
    }  # fmt: skip
    done = subprocess.run(
        [python, "-c", MACE_TORCH_WORKER, json.dumps(spec)], capture_output=True, text=True, cwd="/tmp"
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    theirs = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    rows = {}
    for n_walkers in walkers:
        model, _, walker_state = alanine_walkers(n_walkers, device)
        x = walker_state.positions.float()
        ours = _median_seconds(lambda: model.energy_and_forces(x), repeats)  # noqa: B023
        rows[n_walkers] = {
            "molsamp_s": ours,
            "mace_torch_s": theirs[n_walkers],
            "ratio": ours / theirs[n_walkers],
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--training-frames", type=int, default=96)
    parser.add_argument("--training-epochs", type=int, default=3)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--training-repeats", type=int, default=1)
    parser.add_argument("--mace-python", help="python of a venv with mace-torch (GPU comparison)")
    parser.add_argument("--cueq", action="store_true", help="convert mace-torch to cuequivariance")
    parser.add_argument("--output", type=Path, default=Path("benchmark-scale.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict = {"cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}

    print("MACE + Langevin, alanine dipeptide, per-walker throughput")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    runs = [(device, 0.05) for device in devices] + ([("cuda", math.inf)] if "cuda" in devices else [])
    for device, skin in runs:
        rows = md_throughput(device, args.walkers, args.repeats, skin)
        label = device if math.isfinite(skin) else f"{device}, all pairs"
        results[f"md_{label}"] = rows
        for n_walkers, row in rows.items():
            print(
                f"  {label:4s} B = {n_walkers:4d}: {row['walker_steps_per_s']:9.1f} walker-steps/s "
                f"({row['steps']} steps in {row['seconds']:.2f} s; ×"
                f"{row['throughput_vs_first']:.1f} the walker-steps/s of B = {args.walkers[0]})"
            )
    if torch.cuda.is_available() and args.mace_python:
        rows = mace_torch_comparison(args.mace_python, "cuda", args.walkers, args.repeats, args.cueq)
        results["mace_torch_cuda"] = rows
        print(f"energy + forces on {torch.cuda.get_device_name()}: molsamp MACE vs mace-torch")
        for n_walkers, row in rows.items() if "error" not in rows else ():
            print(
                f"  B = {n_walkers:4d}: molsamp {1e3 * row['molsamp_s']:.2f} ms, mace-torch "
                f"{1e3 * row['mace_torch_s']:.2f} ms, ratio {row['ratio']:.2f}"
            )
        if "error" in rows:
            print(f"  mace-torch failed: {rows['error']}")
    if not args.skip_training:
        print("DDP training (gloo, CPU), same global batch")
        row = training_speedup(
            args.training_frames, args.training_epochs, args.global_batch, args.training_repeats
        )
        results["training_cpu_gloo"] = row
        print(
            f"  1 rank {row['epoch_seconds_1_rank']:.2f} s/epoch, 2 ranks "
            f"{row['epoch_seconds_2_ranks']:.2f} s/epoch: speed-up ×{row['speedup']:.2f}"
        )
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
