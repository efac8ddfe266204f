"""The engine thread: one long-lived worker that owns the loaded backend, and its GUI-side bridge.

Requests go in through queued signals; frames, steps, results and errors come out as signals of
the worker (emitted in the engine thread) and are relayed by :class:`EngineBridge`, a QObject
living in the GUI thread. The bridge drops payloads of stale runs, coalesces frames and hands
them to the views at most ``REFRESH_HZ`` times a second.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field

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


def load_backend(model: str, device: str):
    """Load a backend through the engine's registry (in the engine thread)."""
    from engine.backends.registry import load_backend as _load

    return _load(model, device=device)


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

    def __init__(self) -> None:
        super().__init__()  # no parent: it is moved to the engine thread
        self._backend = None
        self._key: tuple[str, str] | None = None

    def _ensure(self, model: str, device: str) -> None:
        if self._key == (model, device) and self._backend is not None:
            return
        self._backend = None  # release the previous model before loading the next
        t0 = time.perf_counter()
        backend = load_backend(model, device)
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
            info["tokens"] = backend.tokens(prompt)
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
            result = self._backend.generate(job.request, _SignalObserver(self), job.cancel, job.run_id)
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

    _requestLoad = Signal(str, str)
    _requestRun = Signal(object)
    _requestUnload = Signal()

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
        w = self._worker
        w.loaded.connect(self._on_loaded)
        w.load_failed.connect(self._on_load_failed)
        w.started.connect(self._on_started)
        w.frame.connect(self._on_frame)
        w.step.connect(self._on_step)
        w.finished.connect(self._on_finished)
        w.failed.connect(self._on_failed)
        w.cancelled.connect(self._on_cancelled)
        self._next_id = 1
        self._job: RunJob | None = None
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
        return self._job is not None

    @property
    def current_run_id(self) -> int | None:
        return self._job.run_id if self._job else None

    def load(self, model: str, device: str) -> None:
        self._requestLoad.emit(model, device)

    def unload(self) -> None:
        self._requestUnload.emit()

    def generate(self, model: str, device: str, request: GenerationRequest) -> int:
        """Queue a run; returns its id. One run at a time: raises EngineError while busy."""
        if self._job is not None:
            raise EngineError("a run is already going on: cancel it (Esc) or wait for it to finish")
        job = RunJob(self._next_id, model, device, request)
        self._next_id += 1
        self._job = job
        self._pending.clear()
        self._pending_step = None
        self._timer.start()
        self.busyChanged.emit(True)
        self._requestRun.emit(job)
        return job.run_id

    def cancel(self) -> bool:
        """Ask the current run to stop at its next step; False when nothing runs."""
        if self._job is None:
            return False
        self._job.cancel.cancel()
        return True

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel, stop the thread and join it; True when the thread ended."""
        self.cancel()
        self._timer.stop()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

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
