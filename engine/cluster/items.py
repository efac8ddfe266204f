"""What a worker runs and what comes back: :class:`WorkerJob`, :class:`ItemOutcome` and running
one item (shared by the in-process and the Ray side of :func:`engine.cluster.map_items`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import RunCancelled

Progress = Callable[[int, int], None] | None


class WorkerJob(Protocol):
    """What one worker does: a picklable object (a frozen dataclass of the command's options)."""

    def setup(self) -> Any:
        """Once per worker: load the backend or model, build scorers; returns the worker's state."""

    def run(self, state: Any, item: Any) -> Any:
        """One work item → a picklable result. Must not write files (the driver writes)."""


@dataclass(frozen=True)
class ItemOutcome:
    """The result of one item; ``index`` is its position in the list given to :func:`map_items`."""

    index: int
    item: Any
    result: Any | None
    error: str | None  # one line when run() raised (not retried); None on success

    @property
    def ok(self) -> bool:
        return self.error is None


def one_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, the form errors.jsonl records failures in."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def run_item(job: WorkerJob, state: Any, index: int, item: Any) -> ItemOutcome:
    """One item through ``job.run``; an exception (not a cancel) becomes the outcome's error line."""
    try:
        return ItemOutcome(index, item, job.run(state, item), None)
    except (RunCancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - one bad item must not stop the run
        return ItemOutcome(index, item, None, one_line(exc))
