"""Run / Cancel buttons, progress bar and message line for a dock's engine-thread job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from engine.types import EngineError

JobFn = Callable[[Any, Callable[[int, int], None]], Any]


class JobControls(QWidget):
    """Starts one job at a time through the :class:`gui.engine_thread.EngineBridge` and follows
    it (only its own job id); emits ``finished(result)`` or ``failed(message)``."""

    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.run_button = QPushButton(title)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setMaximumHeight(14)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.progress, 1)
        lay.addLayout(row)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        lay.addWidget(self.message)
        self.bridge = None
        self.job_id: int | None = None
        self.cancel_button.clicked.connect(self.cancel)

    def attach(self, bridge) -> None:
        """Follow ``bridge``'s job signals (call once)."""
        self.bridge = bridge
        bridge.jobProgress.connect(self._on_progress)
        bridge.jobFinished.connect(self._on_finished)
        bridge.jobFailed.connect(self._on_failed)
        bridge.jobCancelled.connect(self._on_cancelled)

    @property
    def running(self) -> bool:
        return self.job_id is not None

    def start(self, name: str, model: str | None, device: str, fn: JobFn) -> int | None:
        """Submit ``fn(backend, progress)``; shows (and emits) the error when the engine is busy."""
        if self.bridge is None:
            self.show_error("no engine attached to this panel")
            return None
        try:
            self.job_id = self.bridge.submit(name, model, device, fn)
        except EngineError as exc:
            self.show_error(str(exc))
            return None
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.message.setStyleSheet("")
        self.message.setText(f"{name}…")
        return self.job_id

    @Slot()
    def cancel(self) -> None:
        if self.job_id is not None and self.bridge is not None:
            self.bridge.cancel()
            self.message.setText("cancelling…")

    def show_error(self, message: str) -> None:
        self.message.setText(message)
        self.message.setStyleSheet("color: #b00;")
        self.failed.emit(message)

    def _done(self) -> None:
        self.job_id = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)

    @Slot(int, int, int)
    def _on_progress(self, job_id: int, done: int, total: int) -> None:
        if job_id == self.job_id:
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(done)
            self.message.setText(f"{done} / {total} runs")

    @Slot(int, object)
    def _on_finished(self, job_id: int, result: object) -> None:
        if job_id == self.job_id:
            self._done()
            self.progress.setValue(1)
            self.message.setText("done")
            self.finished.emit(result)

    @Slot(int, str)
    def _on_failed(self, job_id: int, message: str) -> None:
        if job_id == self.job_id:
            self._done()
            self.progress.setValue(0)
            self.show_error(message)

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        if job_id == self.job_id:
            self._done()
            self.progress.setValue(0)
            self.message.setText("cancelled")
            self.cancelled.emit()
