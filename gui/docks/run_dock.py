"""Run panel: model, prompt and recipe fields, Generate / Cancel, progress; validates every field."""

from __future__ import annotations

from collections.abc import Callable
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

from engine.probe.kept_maps import KeptMaps
from engine.recipe import recipe_from_text
from engine.types import EngineError, GenerationRequest
from gui.flow_layout import FlowLayout
from gui.run_settings import RunSettingsModel

HUB_MODELS = ("embedded", "cvssp/audioldm2", "cvssp/audioldm2-music", "stabilityai/stable-audio-open-1.0", "ACE-Step/acestep-v15-xl-turbo-diffusers", "tiny:audioldm2", "tiny:stable_audio", "tiny:ace_step", "tiny:stable_audio_3", "tiny:longcat")


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


def kept_maps(grid: tuple[int, int] = (128, 64)) -> KeptMaps:
    """What the views keep beside a run's frames, for the memory budget to count: the layer × step
    overview's thumbnails and the heatmap's aggregate on ``grid`` (the heatmap's default; top-k, the
    largest accumulator a selection can ask for)."""
    from gui.docks.overview_dock import GAP, MAX_COLUMNS, THUMB_GRID

    return KeptMaps(grid=grid, method="topk", pooled=True,
                    thumbnails=(THUMB_GRID[0] + GAP, THUMB_GRID[1] + GAP, MAX_COLUMNS))


def parse_fields(fields: dict[str, str], extra: dict | None = None) -> tuple[GenerationRequest | None, dict[str, str]]:
    """Validate the text of the Run fields (the engine's recipe limits); returns the request or
    ``None`` plus per-field errors. ``extra`` holds the request's other fields (capture, interventions)."""
    recipe, errors = recipe_from_text(fields)
    if recipe is None:
        return None, errors
    return GenerationRequest(**vars(recipe.settings()), **(extra or {})), {}


class RunDock(QDockWidget):
    """A view of a :class:`~gui.run_settings.RunSettingsModel` (``settings``: the engine's recipe
    behind the fields); emits ``generateRequested(model, device, request)``."""

    generateRequested = Signal(str, str, object)
    cancelRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__("Run", parent)
        self.setObjectName("dock_run")
        body = QWidget()
        outer = QVBoxLayout(body)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # a narrow dock: labels above fields
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(HUB_MODELS)
        # long hub ids must not set the dock's minimum width (small screens): show ~16 characters
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.setMinimumContentsLength(10)
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
        button_box = QWidget()
        buttons = FlowLayout(button_box)  # side by side, or one above the other in a narrow dock
        self.generate_button = QPushButton("Generate (Ctrl+G)")
        self.cancel_button = QPushButton("Cancel (Esc)")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.cancel_button)
        outer.addWidget(button_box)
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
        # other docks add typed request fields through these callables: {"interventions": (...)}
        # from steering (stacked in provider order), {"lsac": LsacSpec} from convergence,
        # {"head_mask": ...} from heads; a provider raises EngineError to refuse the run
        self.request_providers: list[Callable[[], dict[str, Any]]] = []
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
        self.settings = RunSettingsModel(parent=self)
        self._bind()

    def _bind(self) -> None:
        """Widgets → model on every edit; model → widgets when a recipe is set from code."""
        s = self.settings
        for name, line in (("negative_prompt", self.negative), ("seed", self.seed), ("steps", self.steps),
                           ("guidance", self.guidance), ("duration", self.duration)):
            line.setText(s.text[name])
            line.textChanged.connect(lambda text, n=name: s.set_field(n, text))
        self.prompt.setPlainText(s.text["prompt"])
        self.prompt.textChanged.connect(lambda: s.set_field("prompt", self.prompt.toPlainText()))
        self.model.setCurrentText(s.text["model"])
        self.model.currentTextChanged.connect(lambda text: s.set_field("model", text))
        s.set_field("device", self.device.currentText())
        self.device.currentTextChanged.connect(lambda text: s.set_field("device", text))
        self.per_head.toggled.connect(lambda on: setattr(s, "per_head", on))
        s.fieldChanged.connect(self._show_field)

    @Slot(str, str)
    def _show_field(self, name: str, text: str) -> None:
        if name == "prompt":
            if self.prompt.toPlainText() != text:
                self.prompt.setPlainText(text)
        elif name == "model":
            self.model.setCurrentText(text)
        elif name == "device":
            if self.device.findText(text) >= 0:
                self.device.setCurrentText(text)
        else:
            {"negative_prompt": self.negative, "seed": self.seed, "steps": self.steps,
             "guidance": self.guidance, "duration": self.duration}[name].setText(text)

    def fields(self) -> dict[str, str]:
        """The text of the recipe fields (as the settings model holds it)."""
        return {k: v for k, v in self.settings.text.items() if k != "device"}

    def build_request(self) -> GenerationRequest | None:
        """The request the fields describe, or None after showing what is wrong."""
        extra: dict[str, Any] = {"per_head": self.per_head.isChecked(), "memory_budget_mb": self.memory_budget_mb,
                                 "maps": kept_maps()}
        for provide in self.request_providers:
            try:
                provided = dict(provide())
            except EngineError as exc:
                self.show_error(str(exc))
                return None
            stacked = (*extra.get("interventions", ()), *provided.pop("interventions", ()))
            extra.update(provided)
            if stacked:
                extra["interventions"] = stacked
        request, errors = self.settings.request(extra), self.settings.errors
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
            self.generateRequested.emit(self.settings.recipe.model, self.settings.recipe.device, request)

    def show_error(self, message: str) -> None:
        self.message.setText(message)
        self.message.setStyleSheet("color: #b00;")

    def set_idle(self) -> None:
        """Progress bar back to idle (not the busy indicator) after a run that ended early."""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

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
        """Show ``request``'s recipe (the fields follow the settings model)."""
        device = device if self.device.findText(device) >= 0 else self.device.currentText()
        self.settings.set_request(model, device, request)
        self.per_head.setChecked(bool(request.per_head))

    @Slot()
    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder (save_pretrained)")
        if folder:
            self.model.setCurrentText(folder)
