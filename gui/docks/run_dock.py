"""Run panel: model, prompt and recipe fields, Generate / Cancel, progress; validates every field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.types import GenerationRequest

HUB_MODELS = ("embedded", "cvssp/audioldm2", "cvssp/audioldm2-music", "stabilityai/stable-audio-open-1.0")
LIMITS = {"steps": (1, 1000), "guidance": (0.0, 50.0), "duration": (0.05, 120.0), "seed": (0, 2**32 - 1)}


def available_devices() -> list[str]:
    """CPU, plus every CUDA device torch sees."""
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # torch missing or broken CUDA: CPU only
        pass
    return devices


def parse_fields(fields: dict[str, str], extra: dict | None = None) -> tuple[GenerationRequest | None, dict[str, str]]:
    """Validate the text of the Run fields; returns the request or ``None`` plus per-field errors."""
    errors: dict[str, str] = {}
    prompt = fields.get("prompt", "").strip()
    if not prompt:
        errors["prompt"] = "write a prompt, e.g. “bass and drums”"
    elif len(prompt) > 1000:
        errors["prompt"] = "the prompt is longer than 1000 characters: shorten it"
    model = fields.get("model", "").strip()
    if not model:
        errors["model"] = "choose a model: embedded, a hub id or a local folder"
    elif (model.startswith(("/", ".", "~")) or "\\" in model) and not Path(model).expanduser().is_dir():
        errors["model"] = f"folder {model} does not exist: pick a folder written by save_pretrained"

    def number(name: str, kind: type):
        raw = fields.get(name, "").strip()
        lo, hi = LIMITS[name]
        try:
            value = kind(raw)
        except ValueError:
            errors[name] = f"{name} must be {'a whole number' if kind is int else 'a number'} (got “{raw}”)"
            return None
        if value != value or not lo <= value <= hi:  # NaN or out of range
            errors[name] = f"{name} must be between {lo} and {hi} (got {raw})"
            return None
        return value

    seed = number("seed", int)
    steps = number("steps", int)
    guidance = number("guidance", float)
    duration = number("duration", float)
    if errors:
        return None, errors
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=fields.get("negative_prompt", "").strip(),
        seed=seed,
        steps=steps,
        guidance=guidance,
        duration=duration,
        **(extra or {}),
    )
    return request, {}


class RunDock(QDockWidget):
    """Collects a run recipe; emits ``generateRequested(model, device, request)``."""

    generateRequested = Signal(str, str, object)
    cancelRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__("Run", parent)
        self.setObjectName("dock_run")
        body = QWidget()
        outer = QVBoxLayout(body)
        form = QFormLayout()
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(HUB_MODELS)
        browse = QPushButton("Folder…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.model, 1)
        row.addWidget(browse)
        form.addRow("model", row)
        self.prompt = QPlainTextEdit("bass and drums")
        self.prompt.setFixedHeight(48)
        form.addRow("prompt", self.prompt)
        self.negative = QLineEdit()
        form.addRow("negative", self.negative)
        self.seed = QLineEdit("0")
        self.steps = QLineEdit("25")
        self.guidance = QLineEdit("3.0")
        self.duration = QLineEdit("2.0")
        for label, w in (("seed", self.seed), ("steps", self.steps), ("guidance", self.guidance), ("duration (s)", self.duration)):
            form.addRow(label, w)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        form.addRow("device", self.device)
        self.per_head = QCheckBox("record every head")
        self.per_head.setChecked(True)
        form.addRow("", self.per_head)
        outer.addLayout(form)
        buttons = QHBoxLayout()
        self.generate_button = QPushButton("Generate (Ctrl+G)")
        self.cancel_button = QPushButton("Cancel (Esc)")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.cancel_button)
        outer.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        outer.addWidget(self.progress)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setObjectName("run_message")
        outer.addWidget(self.message)
        outer.addStretch(1)
        self.setWidget(body)
        self.memory_budget_mb = 2048.0
        # other docks (e.g. steering) add to GenerationRequest.extras through these callables
        self.extras_providers: list[Callable[[], dict[str, Any]]] = []
        self.generate_button.clicked.connect(self.request_generate)
        self.cancel_button.clicked.connect(self.cancelRequested)
        self._inputs = {
            "model": self.model,
            "prompt": self.prompt,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "duration": self.duration,
        }

    def fields(self) -> dict[str, str]:
        return {
            "model": self.model.currentText(),
            "prompt": self.prompt.toPlainText(),
            "negative_prompt": self.negative.text(),
            "seed": self.seed.text(),
            "steps": self.steps.text(),
            "guidance": self.guidance.text(),
            "duration": self.duration.text(),
        }

    def build_request(self) -> GenerationRequest | None:
        """The request the fields describe, or None after showing what is wrong."""
        extras: dict[str, Any] = {}
        for provide in self.extras_providers:
            provided = dict(provide())
            # interventions from several docks (steering, ablation, ...) stack in provider order
            stacked = list(extras.get("interventions", [])) + list(provided.pop("interventions", []))
            extras.update(provided)
            if stacked:
                extras["interventions"] = stacked
        extra = {"per_head": self.per_head.isChecked(), "memory_budget_mb": self.memory_budget_mb, "extras": extras}
        request, errors = parse_fields(self.fields(), extra)
        for name, w in self._inputs.items():
            w.setStyleSheet("border: 1px solid #d33;" if name in errors else "")
            w.setToolTip(errors.get(name, ""))
        self.message.setText("\n".join(errors.values()))
        self.message.setStyleSheet("color: #b00;" if errors else "")
        return request

    @Slot()
    def request_generate(self) -> None:
        request = self.build_request()
        if request is not None:
            self.generateRequested.emit(self.model.currentText().strip(), self.device.currentText(), request)

    def show_error(self, message: str) -> None:
        self.message.setText(message)
        self.message.setStyleSheet("color: #b00;")

    def set_busy(self, busy: bool) -> None:
        self.generate_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress.setRange(0, 0)
            self.message.setStyleSheet("")
            self.message.setText("loading model / starting…")

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def set_request(self, model: str, device: str, request: GenerationRequest) -> None:
        self.model.setCurrentText(model)
        if self.device.findText(device) >= 0:
            self.device.setCurrentText(device)
        self.prompt.setPlainText(request.prompt)
        self.negative.setText(request.negative_prompt)
        self.seed.setText(str(request.seed))
        self.steps.setText(str(request.steps))
        self.guidance.setText(repr(float(request.guidance)))
        self.duration.setText(repr(float(request.duration)))
        self.per_head.setChecked(bool(request.per_head))

    @Slot()
    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder (save_pretrained)")
        if folder:
            self.model.setCurrentText(folder)
