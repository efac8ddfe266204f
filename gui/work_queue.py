"""Work the GUI thread does in slices: items are handled until a time budget is spent, the rest on
the next turns of the event loop, so a burst of frames (the first step of a large model brings
dozens of sites at once) never holds the window for longer than one slice."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, QTimer

SLICE_MS = 8.0


class SlicedQueue(QObject):
    """``handle(item)`` for each added item, at most ``budget_ms`` per event-loop turn, then
    ``done()`` once per slice that handled something."""

    def __init__(self, handle: Callable[[Any], None], done: Callable[[], None] = lambda: None,
                 budget_ms: float = SLICE_MS, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._handle, self._done, self._budget = handle, done, budget_ms / 1000.0
        self._items: list[Any] = []
        self._timer = QTimer(self, singleShot=True, interval=0)
        self._timer.timeout.connect(self._slice)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: Iterable[Any]) -> None:
        """Queue ``items`` and handle a first slice now."""
        self._items.extend(items)
        self._slice()

    def clear(self) -> None:
        self._items.clear()
        self._timer.stop()

    def flush(self) -> None:
        """Handle everything queued now (a view that must be complete, e.g. at the end of a run)."""
        self._run(float("inf"))

    def _slice(self) -> None:
        self._run(self._budget)

    def _run(self, budget: float) -> None:
        start, handled = time.perf_counter(), False
        while self._items and time.perf_counter() - start < budget:
            self._handle(self._items.pop(0))
            handled = True
        if handled:
            self._done()
        if self._items:
            self._timer.start()
