"""``map_items``: run a :class:`WorkerJob` over work items, here or on Ray actors.

The job's ``run`` computes and returns; it never writes. The caller (the driver) writes what comes
back, in item order (:func:`in_item_order`), so the order in which workers finish changes no number
and no file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from engine.cluster.items import ItemOutcome, Progress, WorkerJob, one_line, run_item
from engine.cluster.spec import ClusterSpec

__all__ = ["ItemOutcome", "WorkerJob", "cluster_session", "in_item_order", "map_items", "one_line"]


def map_items(job: WorkerJob, items: Sequence[Any], spec: ClusterSpec, *,
              progress: Progress = None, cancel=None) -> Iterator[ItemOutcome]:
    """One :class:`ItemOutcome` per item.

    ``spec.address is None``: ``job.setup()`` once here, then the items in order (Ray is not
    imported). Otherwise on ``spec.workers`` Ray actors (:mod:`engine.cluster.ray_pool`), yielded as
    they finish. ``progress(done, len(items))`` after each item; ``cancel`` (a
    :class:`~engine.types.CancelToken`) stops the run with :class:`RunCancelled`.
    """
    spec.validate()
    if spec.distributed:
        from engine.cluster.ray_pool import ray_map

        yield from ray_map(job, items, spec, progress=progress, cancel=cancel)
        return
    if not items:
        return
    state = job.setup()
    for index, item in enumerate(items):
        if cancel is not None:
            cancel.raise_if_cancelled()
        outcome = run_item(job, state, index, item)
        if progress is not None:
            progress(index + 1, len(items))
        yield outcome


@contextmanager
def cluster_session(spec: ClusterSpec) -> Iterator[None]:
    """Keep Ray up for several :func:`map_items` calls (e.g. a command's items, then its summary's):
    started or joined here, shut down at the end only if started here; nothing without ``--ray``.
    A job's workers stay up between its calls in the session (set up once), killed at its end."""
    if not spec.distributed:
        yield
        return
    spec.validate()
    from engine.cluster.ray_pool import connect, pool_session

    started = connect(spec)
    try:
        with pool_session():
            yield
    finally:
        if started:
            import ray

            ray.shutdown()


def in_item_order(outcomes: Iterable[ItemOutcome]) -> Iterator[ItemOutcome]:
    """``outcomes`` (indices 0..n-1 in any order) re-yielded by index: each as soon as all before it
    are out. A driver that appends records through this writes the same file as a local run."""
    waiting: dict[int, ItemOutcome] = {}
    next_index = 0
    for outcome in outcomes:
        waiting[outcome.index] = outcome
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1
    yield from (waiting[i] for i in sorted(waiting))
