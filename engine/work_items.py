"""Running a sweep's independent work items, in this process or on a cluster, in item order.

A sweep (patching, CAA, steering evaluation, SAE collection, causal freezing) builds a list of
items, hands it to a :data:`Runner` and assembles its tables from the results, which the runner
returns **in item order** whatever order they finished in: a cluster run then writes the same
tables as a local one. ``done(item)`` is called as each item finishes (progress).

* :func:`in_process`: one item after the other with the sweep's own ``compute`` (the loaded backend).
* :func:`on_cluster`: the items through :func:`engine.cluster.map_items` with a picklable
  ``WorkerJob`` whose ``run(state, item)`` calls the same ``compute``; an item that fails ends the
  run with its error line, as it would locally.
* :func:`cluster_runner`: for a command, ``on_cluster`` when its ClusterSpec is distributed (Ray
  kept up across the sweep's rounds), else ``None`` (the sweep runs in process with the driver's
  already loaded backend, not a second one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from engine.errors import EngineError

Done = Callable[[Any], None]
Runner = Callable[[Sequence[Any], Done], list[Any]]


def in_process(compute: Callable[[Any], Any]) -> Runner:
    """A runner computing each item here, in order."""

    def run(items: Sequence[Any], done: Done) -> list[Any]:
        results = []
        for item in items:
            results.append(compute(item))
            done(item)
        return results

    return run


def counter(total: int, progress: Callable[[int, int], None] | None) -> Done:
    """A ``done`` that adds each item's ``runs`` (generations; 1 when it has none) and reports ``(done, total)``."""
    count = 0

    def done(item: Any) -> None:
        nonlocal count
        count += int(getattr(item, "runs", 1))
        if progress is not None:
            progress(count, total)

    return done


def on_cluster(job: Any, spec: Any) -> Runner:
    """A runner sending the items through :func:`engine.cluster.map_items` (``spec``: a ClusterSpec)."""

    def run(items: Sequence[Any], done: Done) -> list[Any]:
        from engine.cluster import map_items

        items = list(items)
        results: list[Any] = [None] * len(items)
        for outcome in map_items(job, items, spec):
            if outcome.error is not None:
                raise EngineError(f"work item {outcome.index + 1} of {len(items)} failed: {outcome.error}")
            results[outcome.index] = outcome.result
            done(items[outcome.index])
        return results

    return run


@contextmanager
def cluster_runner(spec: Any, job: Any) -> Iterator[Runner | None]:
    """``on_cluster(job, spec)`` inside :func:`engine.cluster.cluster_session` when ``spec`` is
    distributed, else ``None``."""
    if not spec.distributed:
        yield None
        return
    from engine.cluster import cluster_session

    with cluster_session(spec):
        yield on_cluster(job, spec)
