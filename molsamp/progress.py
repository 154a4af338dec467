"""A progress bar over a wall-time budget, moved by the ``callback`` rows of time-limited loops
(flow training, Timewarp chains), which report every so many steps."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from types import TracebackType

from tqdm.auto import tqdm

SHOWN = ("nll", "nll_per_atom", "validation_nll", "window_ess", "acceptance_loss", "acceptance")


class BudgetProgress:
    """A tqdm bar of ``seconds`` of wall time. Called with a row (a dict), it moves to the time
    elapsed since it was made and shows the row's numbers named in ``shown``. Use it as a
    context manager, and pass it as the loop's ``callback``."""

    def __init__(
        self, seconds: float, description: str, *, enabled: bool = True, shown: Sequence[str] = SHOWN
    ):
        self._start = time.perf_counter()
        self._shown = shown
        self._bar = tqdm(
            total=max(1, math.ceil(seconds)),
            desc=description,
            disable=not enabled,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} s{postfix}",
        )

    def __call__(self, row: dict) -> None:
        self._move()
        numbers = {key: f"{row[key]:.3g}" for key in self._shown if isinstance(row.get(key), float)}
        self._bar.set_postfix(numbers, refresh=True)

    def _move(self) -> None:
        self._bar.n = min(self._bar.total, int(time.perf_counter() - self._start))

    def __enter__(self) -> BudgetProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._move()  # rows come every so many steps: the last one may be long past
        self._bar.refresh()
        self._bar.close()
