"""Steering panel: steering-vector files, CAA from two prompt lists, one α slider per concept,
the layers to steer, ReNorm and CFG halves. The engine does the steering
(:class:`engine.interventions.caa.Steer` through ``GenerationRequest.interventions``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from engine.interventions.caa import ALPHA_MAX, Steer, SteeringVectors, check_alpha, compute_caa
from engine.interventions.prompt_sets import counterfactual_sets
from engine.site_labels import site_label, site_labels
from engine.types import EngineError, GenerationRequest
from gui.docks.job_controls import JobControls
from gui.file_dialogs import open_file_dialog
from gui.flow_layout import FlowLayout, WrapLabel

log = logging.getLogger(__name__)

ALPHA_SCALE = 10  # slider ticks per unit of α (0.1 resolution)
DEBOUNCE_MS = 400  # keyboard / wheel changes regenerate after this pause
Recipe = Callable[[], tuple[str, str, GenerationRequest | None]]


def parse_seeds(text: str) -> list[int]:
    """``"0,1"`` → ``[0, 1]``; EngineError for anything else."""
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise EngineError(f"bad seeds “{text}”: write them as 0,1,2") from None
    if not seeds:
        raise EngineError("give at least one seed, e.g. 0")
    return seeds


def prompt_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass
class ConceptRow:
    """One loaded vector set and its α slider."""

    vectors: SteeringVectors
    name: str
    slider: QSlider
    value: QLabel
    enabled: QCheckBox

    @property
    def alpha(self) -> float:
        return self.slider.value() / ALPHA_SCALE


class SteeringDock(QDockWidget):
    """Holds the concept vectors; ``request_fields()`` (a Run request provider) turns the sliders into
    ``Steer`` interventions; ``alphaMoved`` (every change, dragging too) asks for a preview,
    ``steerRequested`` (release, or a pause after keys / wheel) for the full run with the same seed."""

    steerRequested = Signal()
    alphaMoved = Signal()
    message = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__("Steering", parent)
        self.setObjectName("dock_steering")
        self.recipe: Recipe = lambda: ("", "cpu", None)
        self.rows: list[ConceptRow] = []
        self.active_row = 0  # the row moved last (the prefetch grid is around its α)
        self.cross_sites: list[str] = []
        body = QWidget()
        outer = QVBoxLayout(body)
        outer.setContentsMargins(4, 4, 4, 4)
        files_box = QWidget()
        files = FlowLayout(files_box)  # wraps in a narrow dock (laptop screens)
        self.load_button = QPushButton("Load vectors…")
        self.save_button = QPushButton("Save vectors…")
        self.on = QCheckBox("steer")
        self.on.setChecked(True)
        self.on.setToolTip("apply the sliders to every generation")
        self.auto = QCheckBox("regenerate on release")
        self.auto.setChecked(True)
        for w in (self.load_button, self.save_button, self.on, self.auto):
            files.addWidget(w)
        outer.addWidget(files_box)
        self.sliders_box = QGroupBox("concepts (α: negative removes, positive adds)")
        self.sliders = QGridLayout(self.sliders_box)
        self.empty_label = WrapLabel("no vectors yet: compute CAA below, load a file or use the SAE panel", 2)
        self.sliders.addWidget(self.empty_label, 0, 0, 1, 4)
        outer.addWidget(self.sliders_box)
        listen = QHBoxLayout()
        self.preview = QCheckBox("preview while dragging")
        self.preview.setChecked(True)
        self.preview.setToolTip("play a fast preview (fewer steps, same seed) while a slider moves; "
                                "the full run follows on release")
        self.prefetch = QCheckBox("prefetch neighbouring α")
        self.prefetch.setChecked(True)
        self.prefetch.setToolTip("while you listen, render the α values around the current one in the "
                                 "background, so that moving there plays at once")
        listen.addWidget(self.preview)
        listen.addWidget(self.prefetch)
        listen.addStretch(1)
        outer.addLayout(listen)
        self.listen_status = QLabel("")
        self.listen_status.setWordWrap(True)
        self.listen_status.setStyleSheet("color: #246;")
        outer.addWidget(self.listen_status)
        opts = QHBoxLayout()
        self.renorm = QCheckBox("ReNorm")
        self.renorm.setToolTip("rescale each steered token to its original norm (TADA Eq. 3)")
        self.halves = QComboBox()
        self.halves.addItems(["both", "cond"])
        self.halves.setToolTip("CFG halves to steer: both (α means the same at any guidance) or cond only")
        opts.addWidget(self.renorm)
        opts.addWidget(QLabel("halves"))
        opts.addWidget(self.halves)
        opts.addStretch(1)
        outer.addLayout(opts)
        layers_row = QHBoxLayout()
        layers_row.addWidget(QLabel("layers to steer"))
        self.all_layers = QPushButton("all")
        self.no_layers = QPushButton("none")
        layers_row.addStretch(1)
        layers_row.addWidget(self.all_layers)
        layers_row.addWidget(self.no_layers)
        outer.addLayout(layers_row)
        self.layers = QListWidget()
        self.layers.setMaximumHeight(130)
        outer.addWidget(self.layers)
        caa = QGroupBox("compute CAA vectors")
        form = QFormLayout(caa)
        self.fill_from = QComboBox()
        self.fill_from.addItem("fill from prompt set…", None)
        try:
            for set_name, concepts in counterfactual_sets().items():
                for c in concepts:
                    self.fill_from.addItem(f"{set_name}: {c.concept}", (set_name, c.concept))
        except EngineError as exc:
            self.fill_from.setToolTip(str(exc))
        form.addRow(self.fill_from)
        self.concept = QLineEdit("concept")
        form.addRow("concept", self.concept)
        self.positive = QPlainTextEdit()
        self.positive.setPlaceholderText("one prompt per line, with the concept")
        self.positive.setFixedHeight(56)
        self.negative = QPlainTextEdit()
        self.negative.setPlaceholderText("one prompt per line, without it")
        self.negative.setFixedHeight(56)
        form.addRow("positive", self.positive)
        form.addRow("negative", self.negative)
        self.seeds = QLineEdit("0")
        form.addRow("seeds", self.seeds)
        self.job = JobControls("Compute CAA")
        form.addRow(self.job)
        outer.addWidget(caa)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        outer.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.setWidget(scroll)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._request)
        self.load_button.clicked.connect(self.load_dialog)
        self.save_button.clicked.connect(self.save_dialog)
        self.fill_from.currentIndexChanged.connect(self._fill_prompts)
        self.job.run_button.clicked.connect(self.compute)
        self.job.finished.connect(self._on_computed)
        self.all_layers.clicked.connect(lambda: self.check_layers(self.cross_sites))
        self.no_layers.clicked.connect(lambda: self.check_layers([]))

    # ---- layers ----------------------------------------------------------------------------
    def set_model_sites(self, sites) -> None:
        """The loaded model's cross-attention sites (layer number = index) fill the layer list."""
        sites = getattr(sites, "sites", sites)  # a ModelInfo from the bridge, or the sites
        self.set_layers([s.name for s in sites if s.kind == "cross"])

    def set_layers(self, names: list[str]) -> None:
        if names == self.cross_sites:
            return
        keep = set(self.checked_layers())
        self.cross_sites = list(names)
        self.layers.clear()
        labels = site_labels(self.cross_sites)
        for i, name in enumerate(self.cross_sites):
            item = QListWidgetItem(f"L{i}  {labels[name]}")
            item.setToolTip(name)
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if (name in keep or not keep) else Qt.CheckState.Unchecked)
            self.layers.addItem(item)

    def checked_layers(self) -> list[str]:
        return [self.layers.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.layers.count())
                if self.layers.item(i).checkState() == Qt.CheckState.Checked]

    def check_layers(self, names: list[str]) -> None:
        want = set(names)
        for i in range(self.layers.count()):
            item = self.layers.item(i)
            on = item.data(Qt.ItemDataRole.UserRole) in want
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    @Slot(str)
    def select_layer(self, site: str) -> None:
        """Steer exactly ``site`` (a patching-chart click)."""
        if site not in self.cross_sites:
            self.set_layers(self.cross_sites + [site])
        self.check_layers([site])
        row = self.cross_sites.index(site)
        self.layers.setCurrentRow(row)
        self.layers.scrollToItem(self.layers.item(row))
        self.status.setText(f"steering layer L{row} ({site_label(site)})")
        self.status.setToolTip(site)

    @Slot(object)
    def set_functional_layers(self, sites: list[str]) -> None:
        """Pre-fill the layer choice with the patching sweep's functional layers."""
        self.check_layers(list(sites))
        self.status.setText("layers set to the functional layers: " + ", ".join(site_label(s) for s in sites))
        self.status.setToolTip("\n".join(sites))

    # ---- concept vectors ---------------------------------------------------------------------
    def add_vectors(self, vectors: SteeringVectors, name: str | None = None) -> ConceptRow:
        """Add one α slider for ``vectors``; its layers join the layer list."""
        if not self.rows:
            self.empty_label.hide()
        extra = [s for s in vectors.sites if s not in self.cross_sites]
        if extra and not self.cross_sites:
            self.set_layers(list(vectors.sites))
        elif extra:
            self.set_layers(self.cross_sites + extra)
        label = name or f"{vectors.concept or 'concept'} ({vectors.method})"
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(-int(ALPHA_MAX * ALPHA_SCALE), int(ALPHA_MAX * ALPHA_SCALE))
        slider.setValue(0)
        slider.setSingleStep(ALPHA_SCALE)
        slider.setPageStep(10 * ALPHA_SCALE)
        slider.setToolTip(f"α from -{ALPHA_MAX:g} to {ALPHA_MAX:g}; release to regenerate")
        value = QLabel("α = 0.0")
        value.setMinimumWidth(70)
        enabled = QCheckBox(label)
        enabled.setChecked(True)
        enabled.setToolTip(f"{len(vectors.sites)} layer(s), model {vectors.model_id}")
        r = len(self.rows) + 1
        self.sliders.addWidget(enabled, r, 0)
        self.sliders.addWidget(slider, r, 1)
        self.sliders.addWidget(value, r, 2)
        row = ConceptRow(vectors, label, slider, value, enabled)
        self.rows.append(row)
        slider.valueChanged.connect(self._on_value)
        slider.sliderReleased.connect(self._on_released)
        enabled.toggled.connect(self._on_value)
        self.message.emit(f"steering vectors “{label}” added ({len(vectors.sites)} layers)")
        return row

    def set_alpha(self, index: int, alpha: float) -> None:
        """Set row ``index``'s α (validated by the engine's ``check_alpha``)."""
        self.rows[index].slider.setValue(round(check_alpha(alpha) * ALPHA_SCALE))

    def dragging(self) -> bool:
        return any(r.slider.isSliderDown() for r in self.rows)

    @Slot()
    def _on_value(self, *_) -> None:
        moved = self.sender()
        for i, row in enumerate(self.rows):
            row.value.setText(f"α = {row.alpha:.1f}")
            if moved is row.slider or moved is row.enabled:
                self.active_row = i
        self.alphaMoved.emit()
        if self.dragging():
            return  # the full run waits for the release
        if self.auto.isChecked():
            self._debounce.start()

    @Slot()
    def _on_released(self) -> None:
        self._debounce.stop()
        for row in self.rows:
            row.value.setText(f"α = {row.alpha:.1f}")
        if self.auto.isChecked():
            self.steerRequested.emit()

    @Slot()
    def _request(self) -> None:
        self.steerRequested.emit()

    def steers(self, alphas: dict[int, float] | None = None) -> list[Steer]:
        """The ``Steer`` interventions the sliders describe, with row ``i`` at ``alphas[i]`` instead
        when given (rows at α = 0 or switched off are left out, so an all-zero panel gives the
        unsteered run); raises EngineError when a row cannot steer."""
        if not self.on.isChecked():
            return []
        chosen = self.checked_layers()
        out = []
        for i, row in enumerate(self.rows):
            alpha = (alphas or {}).get(i, row.alpha)
            if not row.enabled.isChecked() or alpha == 0.0:
                continue
            sites = [s for s in chosen if s in row.vectors.vectors]
            if not sites:
                raise EngineError(f"“{row.name}” covers none of the chosen layers: check one of its layers")
            out.append(Steer(row.vectors, alpha, sites, self.renorm.isChecked(), self.halves.currentText()))
        return out

    def request_fields(self) -> dict[str, Any]:
        """Run request provider: ``{"interventions": (Steer, …)}`` (empty when nothing steers)."""
        try:
            steers = self.steers()
        except EngineError as exc:
            self.status.setText(str(exc))
            self.status.setStyleSheet("color: #b00;")
            self.message.emit(f"not steering: {exc}")
            return {}
        self.status.setStyleSheet("")
        return {"interventions": tuple(steers)} if steers else {}

    # ---- files ---------------------------------------------------------------------------------
    def load_file(self, path: str) -> ConceptRow:
        """Add a slider for the vectors of a file; EngineError (nothing added) when it cannot be read."""
        return self.add_vectors(SteeringVectors.load(path))

    @Slot()
    def load_dialog(self) -> QFileDialog:
        """"Load vectors…": a non-blocking dialog; the chosen file loads through ``load_guarded``."""
        return open_file_dialog(self, "Load steering vectors", "Steering vectors (*.npz *.safetensors)",
                                self.load_guarded)

    def load_guarded(self, path: str) -> ConceptRow | None:
        """Load a file for the user: one that cannot be read is one error message (this dock's job
        line and, through ``job.failed``, the window's status bar, log and message box)."""
        try:
            return self.load_file(path)
        except (EngineError, OSError) as exc:
            name = Path(path).name
            where = "" if name in str(exc) else f" from {name}"
            self.job.show_error(f"could not load steering vectors{where}: {exc}")
        except Exception as exc:  # a bug, or a loader breaking its EngineError contract: report, never die
            log.exception("loading steering vectors from %s failed", path)
            self.job.show_error(f"could not load steering vectors from {Path(path).name}: "
                                f"unexpected {type(exc).__name__}: {exc}")
        return None

    def save_file(self, path: str, index: int = -1) -> None:
        if not self.rows:
            raise EngineError("no steering vectors to save: compute or load some first")
        self.rows[index].vectors.save(path)
        self.message.emit(f"saved steering vectors to {path}")

    @Slot()
    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save steering vectors (the last concept)", "",
                                              "NumPy (*.npz);;safetensors (*.safetensors)")
        if path:
            try:
                self.save_file(path)
            except (EngineError, OSError) as exc:
                self.job.show_error(str(exc))

    # ---- CAA --------------------------------------------------------------------------------
    @Slot()
    def _fill_prompts(self, *_) -> None:
        data = self.fill_from.currentData()
        if not data:
            return
        set_name, concept = data
        pairs = next(c for c in counterfactual_sets()[set_name] if c.concept == concept).pairs
        self.concept.setText(concept)
        self.positive.setPlainText("\n".join(p[0] for p in pairs))
        self.negative.setPlainText("\n".join(p[1] for p in pairs))

    @Slot()
    def compute(self) -> int | None:
        """Start the CAA job with the Run panel's model, steps, guidance and duration."""
        model, device, request = self.recipe()
        if request is None:
            self.job.show_error("fix the Run panel's fields first (steps, guidance, duration)")
            return None
        pos, neg = prompt_lines(self.positive.toPlainText()), prompt_lines(self.negative.toPlainText())
        try:
            seeds = parse_seeds(self.seeds.text())
            if not pos or not neg:
                raise EngineError("write at least one positive and one negative prompt (one per line)")
        except EngineError as exc:
            self.job.show_error(str(exc))
            return None
        concept = self.concept.text().strip() or "concept"
        steps, guidance, duration = request.steps, request.guidance, request.duration

        def job(backend, progress):
            return compute_caa(backend, pos, neg, None, steps, guidance, duration, seeds,
                               concept=concept, progress=progress)

        return self.job.start(f"CAA “{concept}”", model, device, job)

    @Slot(object)
    def _on_computed(self, vectors: SteeringVectors) -> None:
        self.add_vectors(vectors, f"{vectors.concept} (caa)")
