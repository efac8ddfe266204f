"""SlicedQueue hands items over in slices of its time budget (a fake clock: each item "takes"
3 ms of an 8 ms budget), finishes on later event-loop turns, and flush() does the rest at once."""

from __future__ import annotations

import gui.work_queue as wq


def test_items_are_handled_in_budget_slices_then_on_later_turns(qapp, qtbot, monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(wq.time, "perf_counter", lambda: clock["t"])
    handled, slices = [], []

    def handle(item):
        handled.append(item)
        clock["t"] += 0.003

    queue = wq.SlicedQueue(handle, lambda: slices.append(len(handled)), budget_ms=8.0)
    queue.add(range(10))
    assert handled == [0, 1, 2] and len(queue) == 7 and slices == [3]  # 0, 3, 6 ms < 8 ms; 9 ms stops
    qtbot.waitUntil(lambda: len(queue) == 0, timeout=2000)
    assert handled == list(range(10)) and slices == [3, 6, 9, 10]
    queue.add(range(10, 20))
    queue.flush()
    assert handled == list(range(20)) and len(queue) == 0
