"""The engine thread: one long-lived worker that owns the loaded backend, and its GUI-side bridge.

Requests go in through queued signals; frames, steps, results and errors come out as signals of
the worker (emitted in the engine thread) and are relayed by :class:`EngineBridge`, a QObject
living in the GUI thread. The bridge drops payloads of stale runs, coalesces frames and hands
them to the views at most ``REFRESH_HZ`` times a second.
"""

from __future__ import annotations

import gc
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from engine.backends.base import RunResult
from engine.types import (
    AttentionFrame,
    CancelToken,
    EngineError,
    GenerationRequest,
    MelSpec,
    RunCancelled,
    Site,
    StepInfo,
)

log = logging.getLogger(__name__)
REFRESH_HZ = 60


@dataclass(frozen=True)
class ModelInfo:
    """What the GUI needs to know about the loaded model."""

    model: str
    family: str
    device: str
    sites: tuple[Site, ...]
    mel_spec: MelSpec | None
    load_s: float


@dataclass
class RunJob:
    """One queued generation: the recipe plus the model it runs on."""

    run_id: int
    model: str
    device: str
    request: GenerationRequest
    cancel: CancelToken = field(default_factory=CancelToken)


@dataclass
class TaskJob:
    """One queued analysis job (CAA, patching, SAE, diagnostics…) run in the engine thread.

    ``fn(backend, progress)`` returns the job's result; ``progress(done, total)`` raises
    :class:`RunCancelled` once the job is cancelled. With ``model`` ``None`` no backend is loaded
    and ``fn`` gets ``None``. A ``background`` job (a preview, a prefetch) gives way to any later
    request (:meth:`EngineBridge.submit`).
    """

    job_id: int
    name: str
    model: str | None
    device: str
    fn: Callable[[Any, Callable[[int, int], None]], Any]
    cancel: CancelToken = field(default_factory=CancelToken)
    background: bool = False


class _CancellableBackend:
    """The backend as a job sees it: every ``generate`` call carries the job's cancel token."""

    def __init__(self, backend, cancel: CancelToken) -> None:
        self._backend = backend
        self._cancel = cancel

    def generate(self, request, observer=None, cancel=None, run_id: int = 0):
        return self._backend.generate(request, observer, cancel or self._cancel, run_id)

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


def load_backend(model: str, device: str):
    """Load a backend through the engine's registry (in the engine thread)."""
    from engine.backends.registry import load_backend as _load

    return _load(model, device=device)


def _warm_up(backend) -> None:
    """One tiny captured run in the engine thread right after loading.

    The first run of a process imports modules lazily and fills caches; Python imports hold the
    GIL (and PySide's import hook reads each new module's source), which stalled the GUI thread for
    ~0.5 s in the middle of the user's first generation. Doing it here moves that cost into the
    load, where the GUI shows a busy state anyway.
    """
    try:
        backend.generate(GenerationRequest(prompt="bass", steps=1, duration=1.0, per_head=True))
    except EngineError as exc:  # a model that cannot make 1 s: the first real run warms up instead
        log.info("warm-up skipped: %s", exc)


def settle_heap(collect: bool) -> int:
    """Move every object alive now into Python's permanent GC generation (``gc.freeze``).

    A full (generation-2) cyclic collection walks every tracked object: with torch, diffusers,
    transformers and Qt loaded that is ~480 k objects and **~0.5 s with the GIL held**, which froze
    the GUI once in the first run after a window opened (the documented "first-run stall"). Frozen
    objects are never walked again, so later full collections take ~1 ms. ``collect`` first frees
    the cycles of a model that was just replaced (done during a load, when the GUI shows busy);
    objects that become garbage after being frozen are reclaimed only by reference counting.
    Returns the number of frozen objects.
    """
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class _SignalObserver:
    """Run observer that forwards the engine's callbacks as the worker's signals."""

    def __init__(self, worker: EngineWorker) -> None:
        self._worker = worker

    def on_frame(self, frame: AttentionFrame) -> None:
        self._worker.frame.emit(frame)

    def on_step(self, info: StepInfo) -> None:
        self._worker.step.emit(info)


class EngineWorker(QObject):
    """Lives in the engine thread; owns the backend. Never touches widgets."""

    loaded = Signal(object)  # ModelInfo
    load_failed = Signal(str)
    started = Signal(int, object)  # run id, {"tokens", "sites", "mel_spec"} of the loaded model
    frame = Signal(object)  # AttentionFrame
    step = Signal(object)  # StepInfo
    finished = Signal(object)  # RunResult
    failed = Signal(int, str)  # run id, one-line message
    cancelled = Signal(int)
    task_progress = Signal(int, int, int)  # job id, done, total
    task_finished = Signal(int, object)  # job id, result
    task_failed = Signal(int, str)
    task_cancelled = Signal(int)

    def __init__(self) -> None:
        super().__init__()  # no parent: it is moved to the engine thread
        self._backend = None
        self._key: tuple[str, str] | None = None

    def _ensure(self, model: str, device: str) -> None:
        if self._key == (model, device) and self._backend is not None:
            return
        replacing = self._backend is not None
        self._backend = None  # release the previous model before loading the next
        t0 = time.perf_counter()
        backend = load_backend(model, device)
        _warm_up(backend)
        frozen = settle_heap(collect=replacing)
        log.info("%d objects moved to the permanent GC generation after loading %s", frozen, model)
        self._backend, self._key = backend, (model, device)
        mel = None
        try:
            mel = backend.mel_spec()
        except EngineError:
            mel = None
        self.loaded.emit(
            ModelInfo(model, backend.family, backend.device, tuple(backend.sites()), mel, time.perf_counter() - t0)
        )

    def _describe(self, prompt: str) -> dict:
        backend = self._backend
        info: dict = {"sites": list(backend.sites()), "tokens": {}, "mel_spec": None}
        try:
            info["tokens"] = getattr(backend, "stored_tokens", backend.tokens)(prompt)  # as the frames hold them
            info["mel_spec"] = backend.mel_spec()
        except EngineError:
            pass  # the result carries them; the live view waits
        return info

    @Slot(str, str)
    def load_model(self, model: str, device: str) -> None:
        try:
            self._ensure(model, device)
        except EngineError as exc:
            self.load_failed.emit(str(exc))
        except Exception as exc:  # a bug or a broken model folder: report, never crash the thread
            log.error("model load failed:\n%s", traceback.format_exc())
            self.load_failed.emit(f"could not load {model!r}: {type(exc).__name__}: {exc}")

    @Slot()
    def unload(self) -> None:
        self._backend, self._key = None, None

    @Slot(object)
    def run(self, job: RunJob) -> None:
        if job.cancel.cancelled:
            self.cancelled.emit(job.run_id)
            return
        try:
            self._ensure(job.model, job.device)
            self.started.emit(job.run_id, self._describe(job.request.prompt))
            from engine.convergence.command import (
                resolve_lsac,  # torch-heavy: loaded with the model
            )

            request = resolve_lsac(self._backend, job.request)
            result = self._backend.generate(request, _SignalObserver(self), job.cancel, job.run_id)
        except RunCancelled:
            self.cancelled.emit(job.run_id)
            return
        except EngineError as exc:
            self.failed.emit(job.run_id, str(exc))
            return
        except Exception as exc:
            log.error("run %d failed:\n%s", job.run_id, traceback.format_exc())
            self.failed.emit(job.run_id, f"internal error: {type(exc).__name__}: {exc}")
            return
        self.finished.emit(result)

    @Slot(object)
    def run_task(self, job: TaskJob) -> None:
        def progress(done: int, total: int) -> None:
            job.cancel.raise_if_cancelled()
            self.task_progress.emit(job.job_id, int(done), int(total))

        try:
            job.cancel.raise_if_cancelled()
            backend = None
            if job.model is not None:
                self._ensure(job.model, job.device)
                backend = _CancellableBackend(self._backend, job.cancel)
            result = job.fn(backend, progress)
        except RunCancelled:
            self.task_cancelled.emit(job.job_id)
            return
        except EngineError as exc:
            self.task_failed.emit(job.job_id, f"{job.name}: {exc}")
            return
        except Exception as exc:
            log.error("job %s failed:\n%s", job.name, traceback.format_exc())
            self.task_failed.emit(job.job_id, f"{job.name}: internal error: {type(exc).__name__}: {exc}")
            return
        self.task_finished.emit(job.job_id, result)


class EngineBridge(QObject):
    """GUI-thread face of the engine: owns the thread, relays and coalesces its signals."""

    modelLoaded = Signal(object)  # ModelInfo
    modelFailed = Signal(str)
    runStarted = Signal(int, object)  # run id, {"tokens", "sites", "mel_spec"}
    framesReady = Signal(int, object)  # run id, list[AttentionFrame] since the last refresh
    stepDone = Signal(object)  # StepInfo (latest, coalesced)
    runFinished = Signal(object)  # RunResult
    runFailed = Signal(int, str)
    runCancelled = Signal(int)
    busyChanged = Signal(bool)
    jobStarted = Signal(int, str)  # job id, name
    jobProgress = Signal(int, int, int)  # job id, done, total
    jobFinished = Signal(int, object)  # job id, result
    jobFailed = Signal(int, str)
    jobCancelled = Signal(int)
    backgroundFinished = Signal(int, object)  # job id, result of a background job
    backgroundFailed = Signal(int, str)
    backgroundCancelled = Signal(int)  # emitted when it is cancelled (by a later request too)

    _requestLoad = Signal(str, str)
    _requestRun = Signal(object)
    _requestUnload = Signal()
    _requestTask = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("aiba-engine")
        self._worker = EngineWorker()
        self._worker.moveToThread(self._thread)
        self._thread.finished.connect(self._worker.deleteLater)
        self._requestLoad.connect(self._worker.load_model)
        self._requestRun.connect(self._worker.run)
        self._requestUnload.connect(self._worker.unload)
        self._requestTask.connect(self._worker.run_task)
        w = self._worker
        w.loaded.connect(self._on_loaded)
        w.load_failed.connect(self._on_load_failed)
        w.started.connect(self._on_started)
        w.frame.connect(self._on_frame)
        w.step.connect(self._on_step)
        w.finished.connect(self._on_finished)
        w.failed.connect(self._on_failed)
        w.cancelled.connect(self._on_cancelled)
        w.task_progress.connect(self._on_task_progress)
        w.task_finished.connect(self._on_task_finished)
        w.task_failed.connect(self._on_task_failed)
        w.task_cancelled.connect(self._on_task_cancelled)
        self._next_id = 1
        self._job: RunJob | None = None
        self._task: TaskJob | None = None
        self._stopped = False
        self._pending: list[AttentionFrame] = []
        self._pending_step: StepInfo | None = None
        self.dropped_stale = 0
        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / REFRESH_HZ))
        self._timer.timeout.connect(self._flush)
        self._thread.start()

    # ---- requests -------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A run or a foreground job goes on (background jobs give way, so they do not count)."""
        return self._job is not None or (self._task is not None and not self._task.background)

    @property
    def idle(self) -> bool:
        """Nothing goes on in the engine thread, not even a background job."""
        return self._job is None and self._task is None

    @property
    def background_job_id(self) -> int | None:
        task = self._task
        return task.job_id if task is not None and task.background else None

    @property
    def current_task(self) -> TaskJob | None:
        return self._task

    @property
    def current_run_id(self) -> int | None:
        return self._job.run_id if self._job else None

    def load(self, model: str, device: str) -> None:
        self._check_running()
        self._requestLoad.emit(model, device)

    def unload(self) -> None:
        self._requestUnload.emit()

    def reserve_run_ids(self, run_id: int) -> None:
        """Number later runs after ``run_id`` (a run reopened from a session keeps its id)."""
        self._next_id = max(self._next_id, int(run_id) + 1)

    def claim_run_id(self) -> int:
        """A fresh run id for a result made outside a run (a prefetched render adopted as a run)."""
        run_id = self._next_id
        self._next_id += 1
        return run_id

    def _check_running(self) -> None:
        if self._stopped:
            raise EngineError("the engine has stopped (the window is closing): restart AIBA Studio to go on")

    def generate(self, model: str, device: str, request: GenerationRequest) -> int:
        """Queue a run; returns its id. One run at a time: raises EngineError while busy, after
        :meth:`shutdown`, or when the request breaks the engine's limits."""
        self._check_running()
        request.validate()
        self._preempt_background()
        if self._job is not None:
            raise EngineError("a run is already going on: cancel it (Esc) or wait for it to finish")
        if self._task is not None:
            raise EngineError(f"the job “{self._task.name}” is going on: cancel it (Esc) or wait for it to finish")
        job = RunJob(self._next_id, model, device, request)
        self._next_id += 1
        self._job = job
        self._pending.clear()
        self._pending_step = None
        self._timer.start()
        self.busyChanged.emit(True)
        self._requestRun.emit(job)
        return job.run_id

    def submit(self, name: str, model: str | None, device: str,
               fn: Callable[[Any, Callable[[int, int], None]], Any], background: bool = False) -> int:
        """Queue an analysis job ``fn(backend, progress)`` in the engine thread; returns its id.
        One run or job at a time: raises EngineError while busy or after :meth:`shutdown`.

        A ``background`` job gives way: a later run or job (background too) cancels it at its next
        step and starts after it, without waiting for its end to be relayed. It does not make the
        engine :attr:`busy` and reports only through the ``background*`` signals."""
        self._check_running()
        self._preempt_background()
        if self._job is not None or self._task is not None:
            what = "a run" if self._job is not None else f"the job “{self._task.name}”"
            raise EngineError(f"{what} is going on: cancel it (Esc) or wait for it to finish")
        job = TaskJob(self._next_id, name, model, device, fn, background=background)
        self._next_id += 1
        self._task = job
        if not background:
            self.busyChanged.emit(True)
            self.jobStarted.emit(job.job_id, name)
        self._requestTask.emit(job)
        return job.job_id

    def cancel_background(self) -> bool:
        """Cancel the background job at its next step; False when none goes on."""
        had = self.background_job_id is not None
        self._preempt_background()
        return had

    def _preempt_background(self) -> None:
        """Cancel the background job, if one goes on; its late end is dropped as stale."""
        task = self._task
        if task is not None and task.background:
            task.cancel.cancel()
            self._task = None
            self.backgroundCancelled.emit(task.job_id)

    def cancel(self) -> bool:
        """Ask the current run or job to stop at its next step; False when nothing runs."""
        if self._job is None and self._task is None:
            return False
        self._preempt_background()
        for job in (self._job, self._task):
            if job is not None:
                job.cancel.cancel()
        return True

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel, stop the thread and join it; True when the thread ended. Later runs and jobs
        are refused with an EngineError (nothing would ever answer them)."""
        self._stopped = True
        self.cancel()
        self._timer.stop()
        self._thread.quit()
        ended = self._thread.wait(timeout_ms)
        gc.unfreeze()  # what settle_heap froze (this window, its model) may be collected again
        return ended

    # ---- relays (GUI thread) ----------------------------------------------------------------
    def _is_current(self, run_id: int) -> bool:
        if self._job is None or run_id != self._job.run_id:
            self.dropped_stale += 1
            return False
        return True

    @Slot(object)
    def _on_loaded(self, info: ModelInfo) -> None:
        self.modelLoaded.emit(info)

    @Slot(str)
    def _on_load_failed(self, message: str) -> None:
        self.modelFailed.emit(message)

    @Slot(int, object)
    def _on_started(self, run_id: int, info: dict) -> None:
        if self._is_current(run_id):
            self.runStarted.emit(run_id, info)

    @Slot(object)
    def _on_frame(self, frame: AttentionFrame) -> None:
        if self._is_current(frame.run_id):
            self._pending.append(frame)

    @Slot(object)
    def _on_step(self, info: StepInfo) -> None:
        if self._is_current(info.run_id):
            self._pending_step = info

    @Slot()
    def _flush(self) -> None:
        if self._pending:
            frames, self._pending = self._pending, []
            self.framesReady.emit(frames[0].run_id, frames)
        if self._pending_step is not None:
            info, self._pending_step = self._pending_step, None
            self.stepDone.emit(info)

    def _end(self) -> None:
        self._flush()
        self._timer.stop()
        self._job = None
        self.busyChanged.emit(False)

    @Slot(object)
    def _on_finished(self, result: RunResult) -> None:
        if self._is_current(result.run_id):
            self._end()
            self.runFinished.emit(result)

    @Slot(int, str)
    def _on_failed(self, run_id: int, message: str) -> None:
        if self._is_current(run_id):
            self._end()
            self.runFailed.emit(run_id, message)

    @Slot(int)
    def _on_cancelled(self, run_id: int) -> None:
        if self._is_current(run_id):
            self._pending.clear()
            self._end()
            self.runCancelled.emit(run_id)

    # ---- job relays (GUI thread) ---------------------------------------------------------------
    def _task_is(self, job_id: int) -> bool:
        if self._task is None or job_id != self._task.job_id:
            self.dropped_stale += 1
            return False
        return True

    def _end_task(self) -> bool:
        """The task ended; True when it was a background job."""
        background = self._task is not None and self._task.background
        self._task = None
        if not background:
            self.busyChanged.emit(False)
        return background

    @Slot(int, int, int)
    def _on_task_progress(self, job_id: int, done: int, total: int) -> None:
        if self._task_is(job_id) and not self._task.background:
            self.jobProgress.emit(job_id, done, total)

    @Slot(int, object)
    def _on_task_finished(self, job_id: int, result: object) -> None:
        if self._task_is(job_id):
            (self.backgroundFinished if self._end_task() else self.jobFinished).emit(job_id, result)

    @Slot(int, str)
    def _on_task_failed(self, job_id: int, message: str) -> None:
        if self._task_is(job_id):
            (self.backgroundFailed if self._end_task() else self.jobFailed).emit(job_id, message)

    @Slot(int)
    def _on_task_cancelled(self, job_id: int) -> None:
        if self._task_is(job_id):
            (self.backgroundCancelled if self._end_task() else self.jobCancelled).emit(job_id)
