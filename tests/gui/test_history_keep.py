"""The run history drops its oldest runs past its limit, but never a run the A/B needs (``kept``):
a steered B arriving in a full history used to push out its own reference run A."""

from __future__ import annotations

from engine.types import GenerationRequest
from gui.workspace import MAX_HISTORY, RunData, Workspace


def _run(run_id: int) -> RunData:
    return RunData(run_id, "m", "cpu", GenerationRequest(prompt="x"))


def test_the_history_keeps_its_newest_runs(qtbot):
    ws = Workspace()
    for i in range(1, MAX_HISTORY + 4):
        ws.add_run(_run(i))
    assert [r.run_id for r in ws.history] == list(range(4, MAX_HISTORY + 4))


def test_kept_runs_outlive_the_limit(qtbot):
    ws = Workspace()
    for i in range(1, MAX_HISTORY + 1):
        ws.add_run(_run(i))
    ws.kept = frozenset({1, 3})
    ws.add_run(_run(100))
    ws.add_run(_run(101))
    ids = [r.run_id for r in ws.history]
    assert len(ids) == MAX_HISTORY and ids[:2] == [1, 3] and 2 not in ids and 4 not in ids
    assert ids[-2:] == [100, 101] and ws.current.run_id == 101
