"""SAE feature browser: train a TopK SAE on one layer (engine-thread job), rank its features by
TF-IDF for a concept (TADA Eq. 6), show a feature's top-activating prompts/steps and its
time × mel map, and send the top-τ features to the steering panel as a vector (Eq. 7)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
import yaml
from PySide6.QtCore import QRectF, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.interventions.caa import SteeringVectors
from engine.interventions.prompt_sets import prompts_dir
from engine.interventions.sae import FeatureBrowser, sae_steering_vectors, train_concept_sae
from engine.site_labels import site_label
from engine.types import EngineError, GenerationRequest, MelSpec
from gui.analysis_adapter import grid_centres_hz
from gui.docks.heatmap_dock import fill_site_combo, time_mel_plot
from gui.docks.job_controls import JobControls
from gui.docks.steering_dock import parse_seeds
from gui.hz_axis import HzAxis

Recipe = Callable[[], tuple[str, str, GenerationRequest | None]]
TOP_FEATURES_SHOWN = 200


def steering_concepts() -> list[str]:
    """Concepts that have steering templates (embedded vocabulary first)."""
    try:
        data = yaml.safe_load((prompts_dir() / "tada_steering.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    names = list(data.get("embedded", {}).get("concepts", {})) + list(data.get("concepts", {}))
    return list(dict.fromkeys(names))


@dataclass
class SAEResult:
    """What the training job hands back to the panel."""

    browser: FeatureBrowser
    scores: np.ndarray
    stats: dict[str, Any]
    losses: list[float]
    concept: str
    positive: list[str]
    negative: list[str]
    model_id: str
    mel_spec: MelSpec | None
    duration: float


class SAEDock(QDockWidget):
    """Browses the features of the last trained SAE; ``vectorsReady`` carries a top-τ vector."""

    vectorsReady = Signal(object, str)  # SteeringVectors, label

    def __init__(self, parent=None) -> None:
        super().__init__("SAE features", parent)
        self.setObjectName("dock_sae")
        self.recipe: Recipe = lambda: ("", "cpu", None)
        self.result: SAEResult | None = None
        self.feature: int | None = None
        self.map_array: np.ndarray | None = None
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.layer = QComboBox()
        self.layer.setToolTip("the cross-attention layer whose outputs the SAE learns")
        form.addRow("layer", self.layer)
        self.concept = QComboBox()
        self.concept.setEditable(True)
        self.concept.addItems(steering_concepts())
        form.addRow("concept", self.concept)
        sizes = QHBoxLayout()
        self.n_bases = QSpinBox(minimum=1, maximum=100, value=3)
        self.n_bases.setToolTip("how many base descriptions build the positive / negative prompts")
        self.expansion = QSpinBox(minimum=1, maximum=64, value=4)
        self.k = QSpinBox(minimum=1, maximum=4096, value=16)
        self.epochs = QSpinBox(minimum=1, maximum=1000, value=10)
        for name, w in (("bases", self.n_bases), ("×", self.expansion), ("k", self.k), ("epochs", self.epochs)):
            sizes.addWidget(QLabel(name))
            sizes.addWidget(w)
        form.addRow(sizes)
        self.seeds = QLineEdit("0")
        form.addRow("seeds", self.seeds)
        lay.addLayout(form)
        self.job = JobControls("Train SAE")
        lay.addWidget(self.job)
        split = QSplitter()
        self.feature_table = QTableWidget(0, 2)
        self.feature_table.setHorizontalHeaderLabels(["feature", "TF-IDF"])
        self.feature_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.feature_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.feature_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.feature_table.verticalHeader().hide()
        split.addWidget(self.feature_table)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.examples = QTableWidget(0, 4)
        self.examples.setHorizontalHeaderLabels(["prompt", "seed", "step", "mean"])
        self.examples.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.examples.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.examples.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.examples.verticalHeader().hide()
        rl.addWidget(self.examples, 1)
        self.plot, self.image = time_mel_plot()
        self.hz_axis = HzAxis(self.plot)
        self.image.setLookupTable(pg.colormap.get("viridis").getLookupTable(nPts=256))
        self.plot.setMinimumHeight(150)
        rl.addWidget(self.plot, 2)
        split.addWidget(right)
        split.setSizes([140, 360])
        lay.addWidget(split, 1)
        steer = QHBoxLayout()
        self.tau = QSpinBox(minimum=1, maximum=4096, value=20)
        self.steer_button = QPushButton("Steer with top-τ features")
        self.steer_button.setEnabled(False)
        steer.addWidget(QLabel("τ"))
        steer.addWidget(self.tau)
        steer.addWidget(self.steer_button)
        steer.addStretch(1)
        lay.addLayout(steer)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        self.setWidget(body)
        self.job.run_button.clicked.connect(self.train)
        self.job.finished.connect(self.show_result)
        self.feature_table.itemSelectionChanged.connect(self._on_feature)
        self.examples.itemSelectionChanged.connect(self._on_example)
        self.steer_button.clicked.connect(self.steer_top)

    def set_model_sites(self, sites) -> None:
        sites = getattr(sites, "sites", sites)  # a ModelInfo from the bridge, or the sites
        names = [s.name for s in sites if s.kind == "cross"]
        current = self.layer.currentData()
        fill_site_combo(self.layer, names, prefix_layers=True)
        if current in names:
            self.layer.setCurrentIndex(names.index(current))

    # ---- training ------------------------------------------------------------------------------
    @Slot()
    def train(self) -> int | None:
        """Collect the concept's prompt activations at the layer, train, score (a job)."""
        model, device, request = self.recipe()
        if request is None:
            self.job.show_error("fix the Run panel's fields first (steps, guidance, duration)")
            return None
        layer = self.layer.currentData()
        if layer is None:
            self.job.show_error("no layer to train on: generate once so the model's layers are known")
            return None
        concept = self.concept.currentText().strip()
        try:
            seeds = parse_seeds(self.seeds.text())
            if not concept:
                raise EngineError("choose a concept with steering templates, e.g. drums")
        except EngineError as exc:
            self.job.show_error(str(exc))
            return None
        n_bases, expansion, k, epochs = self.n_bases.value(), self.expansion.value(), self.k.value(), self.epochs.value()
        steps, guidance, duration = request.steps, request.guidance, request.duration

        def job(backend, progress) -> SAEResult:  # the engine's path of the ``sae`` command
            t = train_concept_sae(backend, concept, layer, steps, guidance, duration, seeds, n_bases=n_bases,
                                  expansion=expansion, k=k, epochs=epochs, progress=progress)
            return SAEResult(t.browser, t.scores, t.stats(), t.losses, concept, t.positive, t.negative,
                             backend.model_id, backend.mel_spec(), duration)

        return self.job.start(f"SAE “{concept}” at {layer}", model, device, job)

    @Slot(object)
    def show_result(self, result: SAEResult) -> None:
        """Fill the feature table, best TF-IDF first, and select the best feature."""
        self.result = result
        order = np.argsort(-result.scores, kind="stable")[:TOP_FEATURES_SHOWN]
        self.feature_table.setRowCount(len(order))
        for r, j in enumerate(order):
            self.feature_table.setItem(r, 0, QTableWidgetItem(str(int(j))))
            self.feature_table.setItem(r, 1, QTableWidgetItem(f"{result.scores[j]:.4g}"))
        self.feature_table.resizeColumnsToContents()
        st = result.stats
        self.info.setToolTip(result.browser.acts.site)
        self.info.setText(f"{site_label(result.browser.acts.site)}: {st['n_features']} features, k={st['k']}, "
                          f"{st['tokens']} tokens; NMSE {st['nmse']:.3f}, dead {st['dead_fraction']:.0%}, "
                          f"loss {result.losses[0]:.3g} → {result.losses[-1]:.3g}")
        self.tau.setMaximum(st["n_features"])
        self.steer_button.setEnabled(True)
        if len(order):
            self.feature_table.selectRow(0)

    def ranked_features(self) -> list[int]:
        return [int(self.feature_table.item(r, 0).text()) for r in range(self.feature_table.rowCount())]

    @Slot()
    def _on_feature(self) -> None:
        rows = self.feature_table.selectionModel().selectedRows()
        if not rows or self.result is None:
            return
        self.show_feature(int(self.feature_table.item(rows[0].row(), 0).text()))

    def show_feature(self, feature: int) -> None:
        """List ``feature``'s top examples and map the best one."""
        self.feature = feature
        examples = self.result.browser.top_examples(feature, 10)
        self.examples.clearSelection()  # a kept row-0 selection would not re-emit: the map would go stale
        self.examples.setRowCount(len(examples))
        for r, ex in enumerate(examples):
            for c, text in enumerate((ex["prompt"], str(ex["seed"]), str(ex["step"]), f"{ex['mean']:.3g}")):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, ex["index"])
                self.examples.setItem(r, c, item)
        self.examples.resizeColumnsToContents()
        if examples:
            self.examples.selectRow(0)

    @Slot()
    def _on_example(self) -> None:
        rows = self.examples.selectionModel().selectedRows()
        if rows and self.result is not None and self.feature is not None:
            self.show_map(self.feature, int(self.examples.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)))

    def show_map(self, feature: int, index: int) -> None:
        """``feature``'s time × mel map on run-step ``index`` (low frequencies at the bottom)."""
        try:
            grid = self.result.browser.feature_map(feature, index)
        except EngineError as exc:
            self.info.setText(str(exc))
            return
        self.map_array = np.array(grid, dtype=np.float32)
        hi = float(self.map_array.max())
        self.image.setImage(self.map_array, autoLevels=False, levels=(0.0, hi if hi > 0 else 1.0))
        t, f = self.map_array.shape
        self.image.setRect(QRectF(0.0, 0.0, self.result.duration, float(f)))
        self.plot.setXRange(0.0, self.result.duration, padding=0)
        self.plot.setYRange(0.0, float(f), padding=0)
        if self.result.mel_spec is not None:
            self.hz_axis.set_bands(grid_centres_hz(self.result.mel_spec, f), f)
        run = self.result.browser.acts.runs[index]
        self.plot.setTitle(f"feature {feature} · “{run['prompt']}” seed {run['seed']} step {run['step']}", size="9pt")

    @Slot()
    def steer_top(self) -> SteeringVectors | None:
        """Sum of the top-τ features' decoder columns → the steering panel."""
        if self.result is None:
            return None
        r = self.result
        try:
            vec = sae_steering_vectors(r.browser.sae, r.scores, self.tau.value(), r.browser.acts.site, r.model_id,
                                       r.concept, r.positive, r.negative)
        except EngineError as exc:
            self.job.show_error(str(exc))
            return None
        self.vectorsReady.emit(vec, f"{r.concept} (sae τ={self.tau.value()})")
        return vec
