"""A two-rank gloo process group on the CPU, joined from an ``mp.spawn`` worker."""

import contextlib
import datetime
from collections.abc import Iterator

import torch
import torch.distributed as dist


@contextlib.contextmanager
def gloo_group(rank: int, world: int, init_file: str) -> Iterator[None]:
    """Join the group (one thread per rank); a collective mismatch between ranks fails after
    120 s instead of hanging the test suite."""
    timeout = datetime.timedelta(seconds=120)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timeout
    )
    torch.set_num_threads(1)
    try:
        yield
    finally:
        dist.destroy_process_group()
