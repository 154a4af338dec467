"""``molsamp train``: fit MACE or TensorNet to extxyz data or to force-field-labelled MD.

Data-parallel under ``torchrun`` (one process per GPU, or per CPU group with gloo)::

    torchrun --nproc-per-node 2 -m molsamp.cli train --alanine-frames 200 --output model.pt

Rank 0 reads or makes the data and shares it; every rank trains on its slice of each batch
(``--batch-size`` structures per rank); rank 0 writes the model. Several machines: see
:mod:`molsamp.distributed`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from molsamp.analysis import plot_training_curves
from molsamp.devices import usable_device
from molsamp.distributed import broadcast_from_root, init_from_environment, local_device
from molsamp.potentials.datasets import AtomsDataset, alanine_dipeptide_md_dataset
from molsamp.potentials.mace import MACE
from molsamp.potentials.serialization import save_potential
from molsamp.potentials.tensornet import TensorNet
from molsamp.potentials.training import TrainingConfig, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``molsamp train`` (lengths in nm, energies kJ/mol)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="extxyz file (eV, Å; converted on reading)")
    source.add_argument(
        "--alanine-frames",
        type=int,
        help="label this many frames of 300 K alanine dipeptide MD with Amber ff99SB-ILDN",
    )
    parser.add_argument(
        "--save-data",
        type=Path,
        help="also write the labelled data set to this extxyz file (eV, Å), e.g. to train "
        "mace-torch or nequip on the same --alanine-frames",
    )
    parser.add_argument("--energy-key", default="energy", help="extxyz energy field")
    parser.add_argument("--forces-key", default="forces", help="extxyz forces field")
    parser.add_argument("--stress-key", default="stress", help="extxyz stress field (periodic data)")
    parser.add_argument("--model", choices=["mace", "tensornet"], default="mace")
    parser.add_argument("--r-max", type=float, default=0.5, help="cutoff in nm (default 0.5)")
    parser.add_argument("--hidden-irreps", default="64x0e+64x1o", help="MACE node features")
    parser.add_argument("--max-ell", type=int, default=3, help="MACE spherical harmonics")
    parser.add_argument("--correlation", type=int, default=3, help="MACE body order − 1")
    parser.add_argument("--interactions", type=int, default=2, help="message-passing layers")
    parser.add_argument("--channels", type=int, default=64, help="TensorNet channels")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16, help="structures per step (per rank)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--energy-weight", type=float, default=1.0)
    parser.add_argument("--forces-weight", type=float, default=1.0)
    parser.add_argument("--stress-weight", type=float, default=0.0)
    parser.add_argument("--stage-two-energy-weight", type=float, default=1000.0)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--patience", type=int, default=30, help="early-stopping epochs")
    parser.add_argument("--max-minutes", type=float, default=float("inf"))
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--float64", action="store_true", help="train in float64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device", default=None, help="torch device (default: this rank's CUDA device if any, else cpu)"
    )
    parser.add_argument("--output", type=Path, default=Path("model.pt"), help="model file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> dict:
    """Train as the arguments say, save the model and a JSON of metrics beside it.

    Under ``torchrun`` every rank runs this; rank 0 alone builds the data set, writes files
    and prints (the other ranks return the same summary)."""
    if args.alanine_frames is not None and args.alanine_frames < 10:
        raise ValueError(f"--alanine-frames must be >= 10, got {args.alanine_frames}")
    rank, _ = init_from_environment()
    device = local_device() if args.device is None else usable_device(args.device, "--device")
    data = None
    if rank == 0:
        if args.data is not None:
            data = AtomsDataset.from_extxyz(args.data, args.energy_key, args.forces_key, args.stress_key)
        else:
            data = alanine_dipeptide_md_dataset(args.alanine_frames, seed=args.seed)
        if args.save_data is not None:
            print(f"data: {len(data)} structures written to {data.to_extxyz(args.save_data)}")
    data = broadcast_from_root(data)
    train_set, val_set = data.split(args.val_fraction, seed=args.seed)
    dtype = torch.float64 if args.float64 else torch.float32
    torch.manual_seed(args.seed)
    if args.model == "mace":
        model = MACE(
            data.elements(),
            r_max=args.r_max,
            hidden_irreps=args.hidden_irreps,
            max_ell=args.max_ell,
            correlation=args.correlation,
            num_interactions=args.interactions,
            dtype=dtype,
        )
    else:
        model = TensorNet(
            data.elements(),
            r_max=args.r_max,
            hidden_channels=args.channels,
            num_layers=args.interactions,
            dtype=dtype,
        )
    config = TrainingConfig(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        energy_weight=args.energy_weight,
        forces_weight=args.forces_weight,
        stress_weight=args.stress_weight,
        stage_two_energy_weight=args.stage_two_energy_weight,
        ema_decay=args.ema_decay,
        patience=args.patience,
        max_time_s=60.0 * args.max_minutes,
        dtype=dtype,
        seed=args.seed,
        progress=not args.quiet,
        checkpoint=args.output,
    )
    model.to(device)
    result = train(model, train_set, val_set, config, distributed=True)
    summary = {"model": str(args.output), "epochs": result.epochs, **result.best_metrics}
    if rank != 0:
        return summary
    save_potential(model, args.output)
    args.output.with_suffix(".json").write_text(json.dumps({**summary, "history": result.history}, indent=2))
    curves = plot_training_curves(
        result.history,
        "epoch",
        {
            "forces_mae": "validation force MAE (kJ/mol/nm)",
            "energy_mae_per_atom": "validation energy MAE (kJ/mol/atom)",
        },
        args.output.with_name(args.output.stem + "_training.png"),
        f"molsamp train: {args.model}",
    )
    print(
        f"validation: force MAE {summary['forces_mae']:.3f} kJ/mol/nm "
        f"({100 * summary['forces_mae_relative']:.2f} % of mean |F|), energy MAE "
        f"{summary['energy_mae_per_atom']:.4f} kJ/mol/atom after {result.epochs} epochs; "
        f"saved {args.output}; curves {curves}"
    )
    return summary
