"""The Ray side of :func:`engine.cluster.map_items`: actors that set up once and run items.

Only imported when a :class:`ClusterSpec` is distributed, so the tool works without Ray.

* Connecting: ``"local"`` starts a Ray instance in this machine (one CPU per worker, no dashboard,
  a small object store); ``"auto"`` / an address joins a running cluster. An instance already
  started in this process (e.g. by tests) is reused. Ray is shut down at the end only if we
  started it.
* Same numbers: every actor's ``OMP_NUM_THREADS`` is the driver's torch thread count (torch takes
  its thread count from it), and the project is on its ``PYTHONPATH`` (a path every node must
  see; or the package installed on them).
* Streaming: each actor holds at most :data:`IN_FLIGHT` items; outcomes come back as they finish
  (``ray.wait``).
* Failures: an item whose ``run`` raises comes back as an error line (not retried). An actor that
  dies (crash, OOM kill, node loss) is replaced by a fresh one (``setup`` again); the item it was
  running is retried up to :data:`MAX_RETRIES` times, then becomes an error outcome; items queued
  behind it are resubmitted without counting.
* Cancel: no new submissions, the actors are killed, :class:`RunCancelled` is raised.
* Kept actors: inside :func:`pool_session` (what :func:`engine.cluster.cluster_session` opens), the
  actors of a job stay up between :func:`ray_map` calls with that same job object, so a command
  that sends its items in rounds (``patch``: pairs, then layers; ``steer``: base runs, then steered
  ones) loads the model once per worker, not once per round. They are killed when the session
  ends, when another job needs workers (one job's actors at a time: they hold the cluster's CPUs
  and GPUs), or at once when a round is cancelled, fails or is left unfinished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.cluster.items import ItemOutcome, Progress, WorkerJob, one_line, run_item
from engine.cluster.spec import ClusterSpec
from engine.errors import EngineError, RunCancelled

LOG = logging.getLogger("aiba.cluster")
IN_FLIGHT = 2  # items queued on one actor: the next is ready when one finishes
MAX_RETRIES = 2  # deaths of an actor while running one item before the item is an error
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
PROJECT_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.5  # how often a waiting driver looks at the cancel token


_LOCAL = threading.local()  # .sessions: this thread's open pool sessions, innermost last


def _sessions() -> list[dict[int, tuple[WorkerJob, ActorPool]]]:
    if not hasattr(_LOCAL, "sessions"):
        _LOCAL.sessions = []
    return _LOCAL.sessions


@contextmanager
def pool_session() -> Iterator[None]:
    """Keep each job's actors between :func:`ray_map` calls until the block ends (then kill them)."""
    pools: dict[int, tuple[WorkerJob, ActorPool]] = {}
    _sessions().append(pools)
    try:
        yield
    finally:
        _sessions().remove(pools)
        for _job, pool in pools.values():
            pool.kill_all()


def worker_env() -> dict[str, str]:
    """Environment of every actor: the project importable, the driver's thread settings, quiet."""
    paths = [str(PROJECT_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    threads = _torch_threads() or os.environ.get("OMP_NUM_THREADS") or 1  # torch reads it at import
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "AIBA_PROGRESS": "0",
           "OMP_NUM_THREADS": str(threads)}
    for name in ("MKL_NUM_THREADS", "HF_HOME", "HF_HUB_OFFLINE", "AIBA_DATA"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _torch_threads() -> int | None:
    """The driver's torch thread count when torch is loaded (workers match it: same sums)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def connect(spec: ClusterSpec) -> bool:
    """Start or join Ray for ``spec``; True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
              "configure_logging": True}
    try:
        if spec.address == "local":
            ray.init(address="local", num_cpus=spec.workers, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                     **common)
        else:
            ray.init(address=spec.address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EngineError(f"could not reach the Ray cluster at --ray {spec.address}: {one_line(exc)}; "
                          "start one with 'ray start --head' or use --ray local") from None
    return True


class JobActor:
    """One worker: ``start`` runs ``job.setup()`` once; ``run`` computes one item."""

    def __init__(self, job: WorkerJob) -> None:
        self.job = job
        self.state: Any = None

    def start(self) -> str | None:
        try:
            self.state = self.job.setup()
        except Exception as exc:  # noqa: BLE001 - reported to the driver as one line
            return one_line(exc)
        return None

    def run(self, index: int, item: Any) -> tuple[Any, str | None]:
        """``(result, error line)``; the item is not sent back (the driver still holds it)."""
        outcome = run_item(self.job, self.state, index, item)
        return outcome.result, outcome.error


class ActorPool:
    """``workers`` live actors, each with the refs it is running, replaced when one dies."""

    def __init__(self, ray, job: WorkerJob, spec: ClusterSpec) -> None:
        self.ray = ray
        self.job = job
        self.remote = ray.remote(JobActor).options(
            num_cpus=1, num_gpus=spec.gpus_per_worker, max_restarts=0, max_concurrency=1,
            runtime_env={"env_vars": worker_env()})
        self.actors: dict[int, Any] = {}
        self.running: dict[int, deque[Any]] = {}  # slot -> refs in submission order
        self._next_slot = 0
        slots = [self._spawn() for _ in range(spec.workers)]
        try:
            self._await_setup([self.actors[s].start.remote() for s in slots])
        except BaseException:
            self.kill_all()
            raise

    def _spawn(self) -> int:
        slot = self._next_slot
        self._next_slot += 1
        self.actors[slot] = self.remote.remote(self.job)
        self.running[slot] = deque()
        return slot

    def _await_setup(self, refs: list[Any]) -> None:
        try:
            errors = [e for e in self.ray.get(refs) if e]
        except self.ray.exceptions.RayActorError as exc:
            raise EngineError(f"a Ray worker died while setting up: {one_line(exc)}") from None
        if errors:
            raise EngineError(f"a Ray worker could not set up: {errors[0]}")

    def replace(self, slot: int) -> list[Any]:
        """Drop the dead actor in ``slot``; start a fresh one; return the dead one's refs."""
        lost = list(self.running.pop(slot))
        self._kill(self.actors.pop(slot))
        new = self._spawn()
        self._await_setup([self.actors[new].start.remote()])
        return lost

    def kill_all(self) -> None:
        for slot in list(self.actors):
            self._kill(self.actors.pop(slot))

    def _kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(actor, no_restart=True)


def ray_map(job: WorkerJob, items: Sequence[Any], spec: ClusterSpec, *, progress: Progress = None,
            cancel=None) -> Iterator[ItemOutcome]:
    """:func:`engine.cluster.map_items` on Ray (see the module docstring)."""
    if not items:
        return
    import ray

    started = connect(spec)
    session = _sessions()[-1] if _sessions() and not started else None
    kept = session.get(id(job)) if session is not None else None
    pool = kept[1] if kept is not None and kept[0] is job else None
    finished = False
    try:
        if pool is None:
            _check_resources(ray, spec)
            for open_session in _sessions():  # one job's workers at a time (nested sessions too):
                for _old_job, old in open_session.values():  # kept ones would hold the CPUs/GPUs
                    old.kill_all()
                open_session.clear()
            pool = ActorPool(ray, job, spec)
            if session is not None:
                session[id(job)] = (job, pool)
        yield from _stream(ray, pool, items, progress, cancel)
        finished = not any(pool.running.values())
    finally:
        if pool is not None and (session is None or not finished):
            pool.kill_all()  # not kept, or left in an unknown state (cancelled, failed, abandoned)
            if session is not None:
                session.pop(id(job), None)
        if started:
            ray.shutdown()


def _check_resources(ray, spec: ClusterSpec) -> None:
    """One line when the cluster cannot hold the workers (they would wait forever)."""
    need_gpu = spec.workers * spec.gpus_per_worker
    have = ray.cluster_resources()
    if need_gpu and have.get("GPU", 0.0) < need_gpu:
        raise EngineError(f"{spec.workers} workers x {spec.gpus_per_worker:g} GPUs need {need_gpu:g} GPUs "
                          f"but the Ray cluster has {have.get('GPU', 0.0):g}: lower --workers or "
                          "--gpus-per-worker")
    if have.get("CPU", 0.0) < spec.workers:  # the missing actors would wait for room forever
        raise EngineError(f"the Ray cluster has {have.get('CPU', 0.0):g} CPUs for {spec.workers} workers "
                          "(one CPU each): lower --workers or add nodes")


def _stream(ray, pool: ActorPool, items: Sequence[Any], progress: Progress,
            cancel) -> Iterator[ItemOutcome]:
    queue: deque[int] = deque(range(len(items)))
    deaths: dict[int, int] = {}
    where: dict[Any, tuple[int, int, Any]] = {}  # ref -> (slot, item index, item)
    done = 0
    while queue or where:
        if cancel is not None and cancel.cancelled:
            raise RunCancelled("run cancelled")
        for slot, refs in pool.running.items():
            while queue and len(refs) < IN_FLIGHT:
                index = queue.popleft()
                item = items[index]
                ref = pool.actors[slot].run.remote(index, item)
                refs.append(ref)
                where[ref] = (slot, index, item)
        ready, _ = ray.wait(list(where), num_returns=1, timeout=POLL_S)
        if not ready:
            continue
        ref = ready[0]
        slot, index, item = where.pop(ref)
        try:
            result, error = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError) as exc:
            outcome = _worker_died(pool, slot, ref, index, where, queue, deaths, items, exc)
            if outcome is None:
                continue
        except ray.exceptions.RayTaskError as exc:  # e.g. a result that cannot be pickled
            pool.running[slot].remove(ref)
            outcome = ItemOutcome(index, item, None, one_line(exc.cause or exc))
        else:
            pool.running[slot].remove(ref)
            outcome = ItemOutcome(index, item, result, error)
        done += 1
        if progress is not None:
            progress(done, len(items))
        yield outcome


def _worker_died(pool: ActorPool, slot: int, failed_ref: Any, failed_index: int, where: dict,
                 queue: deque, deaths: dict[int, int], items: Sequence[Any],
                 exc: Exception) -> ItemOutcome | None:
    """Replace the actor of ``slot``. The item it was running (its oldest) counts a death and goes
    back to the front of the queue, or becomes an error after :data:`MAX_RETRIES`; the items queued
    behind it go back without counting."""
    lost = pool.replace(slot)
    indices = [failed_index if r == failed_ref else where.pop(r)[1] for r in lost]  # oldest first
    running, behind = indices[0], indices[1:]
    for index in reversed(behind):
        queue.appendleft(index)
    deaths[running] = deaths.get(running, 0) + 1
    if deaths[running] > MAX_RETRIES:
        LOG.warning("a Ray worker died (%s) running item %d (%d deaths on it): given up",
                    one_line(exc), running, deaths[running])
        return ItemOutcome(running, items[running], None,
                           f"WorkerDied: the worker running it died {deaths[running]} times "
                           f"({one_line(exc)})")
    LOG.warning("a Ray worker died (%s); item %d retried on a fresh worker", one_line(exc), running)
    queue.appendleft(running)
    return None
