"""Data-parallel (DDP) training of a MACE potential of alanine dipeptide with ``torchrun``.

Rank 0 labels Amber MD frames and shares them; every rank trains on its slice of each batch
(``--batch-size`` structures per rank, so the global batch grows with the ranks); gradients
are averaged by DistributedDataParallel; rank 0 writes the one checkpoint and the report.

    torchrun --nproc-per-node 2 examples/train_distributed.py --frames 64 --epochs 2
    python examples/train_distributed.py --frames 64 --epochs 2 --batch-size 16   # 1 process

On a GPU machine each rank uses ``cuda:LOCAL_RANK`` with NCCL; on CPUs gloo. Several machines
(run the same line on each; HOST is one of them, reachable on port 29500)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
             --rdzv-id mace-ala examples/train_distributed.py --frames 20000 --epochs 200

The same works for the command line: ``torchrun --nproc-per-node 2 -m molsamp.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from molsamp.distributed import broadcast_from_root, init_from_environment, local_device
from molsamp.potentials import MACE, save_potential
from molsamp.potentials.datasets import alanine_dipeptide_md_dataset
from molsamp.potentials.training import TrainingConfig, train


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="labelled MD frames (train + validation)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8, help="structures per step and rank")
    parser.add_argument("--hidden-irreps", default="16x0e+16x1o")
    parser.add_argument("--output", type=Path, default=Path("ddp-mace"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rank, world = init_from_environment()
    device = local_device()

    start = time.perf_counter()
    data = alanine_dipeptide_md_dataset(args.frames, interval_steps=50, seed=1) if rank == 0 else None
    data = broadcast_from_root(data)
    data_seconds = time.perf_counter() - start
    train_set, val_set = data.split(0.1, seed=0)

    torch.manual_seed(0)
    model = MACE([1, 6, 7, 8], r_max=0.4, max_ell=2, hidden_irreps=args.hidden_irreps, radial_mlp=(32, 32))
    model.to(device)
    config = TrainingConfig(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=5e-3,
        ema_decay=0.99,
        stage_two_fraction=1.0,
        dtype=torch.float32,
        progress=not args.quiet,
        checkpoint=args.output / "model.pt",
    )
    result = train(model, train_set, val_set, config, distributed=True)
    if rank != 0:
        return None
    save_potential(model, args.output / "model.pt")
    epoch_seconds = [
        b["seconds"] - a["seconds"] for a, b in zip(result.history[:-1], result.history[1:], strict=True)
    ]
    report = {
        "ranks": world,
        "device": str(device),
        "global_batch": args.batch_size * world,
        "training_structures": len(train_set),
        "data_seconds": data_seconds,
        "training_seconds": result.seconds,
        "first_epoch_seconds": result.history[0]["seconds"],
        "later_epoch_seconds": epoch_seconds,
        "epochs": result.epochs,
        "forces_mae": result.best_metrics["forces_mae"],
    }
    (args.output / "report.json").write_text(json.dumps(report, indent=2))
    print(
        f"{world} rank(s) on {device}: {result.epochs} epochs in {result.seconds:.1f} s "
        f"(global batch {args.batch_size * world}); validation force MAE "
        f"{result.best_metrics['forces_mae']:.1f} kJ/mol/nm; saved {args.output / 'model.pt'}"
    )
    return report


if __name__ == "__main__":
    main()
