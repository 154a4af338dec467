import pytest

from molsamp import progress
from molsamp.progress import BudgetProgress


@pytest.fixture
def clock(monkeypatch):
    """A wall clock that reads the times put in it, in turn."""
    times: list[float] = []
    monkeypatch.setattr(progress.time, "perf_counter", lambda: times.pop(0))
    return times


def test_the_bar_follows_wall_time_and_shows_the_rows_numbers(clock, capsys):
    clock += [100.0, 102.6, 104.9]  # made, one row, closed
    with BudgetProgress(4.2, "flow training") as bar:
        bar({"step": 40, "nll": -1.25, "window_ess": 0.0123, "kl_weight": 0.5, "note": "x"})
    shown = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(
        "flow training:" in line and "2/5 s" in line and "nll=-1.25, window_ess=0.0123" in line
        for line in shown
    )
    assert any("4/5 s" in line for line in shown)  # at close it moves to the time spent
    assert not any("kl_weight" in line or "note" in line for line in shown)


def test_a_disabled_bar_writes_nothing(clock, capsys):
    clock += [0.0, 1.0, 2.0]
    with BudgetProgress(3.0, "timewarp chain", enabled=False) as bar:
        bar({"acceptance": 0.5})
    assert capsys.readouterr().err == ""
