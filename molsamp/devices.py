"""Checking a device a caller names before any tensor goes there."""

from __future__ import annotations

import torch


def usable_device(device: torch.device | str, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device``; a ValueError naming ``name`` (the argument or option
    the caller set) when it is not a device or this machine cannot use it."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name} {device!r} is not a torch device ({error}); use 'cpu' or 'cuda'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name} {device} needs CUDA, which this machine or torch build lacks "
                "(torch.cuda.is_available() is False); use 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name} {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"numbered from 0; use 'cuda:0'"
            )
    return device
