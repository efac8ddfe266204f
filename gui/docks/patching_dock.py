"""Patching panel: a K/V activation-patching sweep (TADA Eq. 9, :func:`engine.interventions.patching.patch_sweep`)
for one concept's counterfactual pairs, and a bar chart of the per-layer impact; click a bar to
steer that layer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.interventions.patching import PATCH_MODES, PatchReport, patch_sweep, sweep_query
from engine.interventions.prompt_sets import counterfactual_sets
from engine.interventions.scorers import load_scorer
from engine.site_labels import site_labels
from engine.types import EngineError, GenerationRequest
from gui.docks.job_controls import JobControls
from gui.docks.steering_dock import parse_seeds

Recipe = Callable[[], tuple[str, str, GenerationRequest | None]]
BAR_WIDTH = 0.8
TOP_BRUSH, BAR_BRUSH, NAN_BRUSH = "#d62", "#4682b4", "#bbb"


class PatchingDock(QDockWidget):
    """Runs the sweep as an engine-thread job and charts ``PatchReport.impact`` per layer."""

    layerClicked = Signal(str)  # site of the clicked bar
    functionalLayers = Signal(object)  # list[str], the top sites after a sweep

    def __init__(self, parent=None) -> None:
        super().__init__("Patching", parent)
        self.setObjectName("dock_patching")
        self.recipe: Recipe = lambda: ("", "cpu", None)
        self.report: PatchReport | None = None
        self.bars: pg.BarGraphItem | None = None
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.concept = QComboBox()
        try:
            for set_name, concepts in counterfactual_sets().items():
                for c in concepts:
                    self.concept.addItem(f"{set_name}: {c.concept} ({len(c.pairs)} pairs)", (set_name, c.concept))
        except EngineError as exc:
            self.concept.setToolTip(str(exc))
        embedded = self.concept.findText("embedded:", flags=Qt.MatchFlag.MatchStartsWith)
        if embedded >= 0:
            self.concept.setCurrentIndex(embedded)
        form.addRow("concept", self.concept)
        self.max_pairs = QSpinBox(minimum=1, maximum=100, value=2)
        form.addRow("pairs (max)", self.max_pairs)
        self.seeds = QLineEdit("0")
        form.addRow("seeds", self.seeds)
        self.mode = QComboBox()
        self.mode.addItems(PATCH_MODES)
        self.mode.setToolTip("kv: patch keys and values; k or v alone need prompts of equal token count")
        form.addRow("patch", self.mode)
        self.scorer = QLineEdit("instrument")
        self.scorer.setToolTip("instrument (the shipped instrument classifier, default), band-template, "
                               "instrument:<folder> or clap:<local CLAP folder>")
        form.addRow("scorer", self.scorer)
        self.top = QSpinBox(minimum=1, maximum=64, value=2)
        self.top.setToolTip("how many top layers count as functional (sent to the steering panel)")
        form.addRow("functional top", self.top)
        lay.addLayout(form)
        self.job = JobControls("Run patching sweep")
        lay.addWidget(self.job)
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setLabel("bottom", "cross-attention layer")
        self.plot.setLabel("left", "impact (Eq. 9)")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.addLine(y=0.0, pen=pg.mkPen("#888"))
        self.plot.setMinimumHeight(160)
        lay.addWidget(self.plot, 1)
        self.setWidget(body)
        self.job.run_button.clicked.connect(self.run_sweep)
        self.job.finished.connect(self.show_report)
        self.plot.scene().sigMouseClicked.connect(self._on_click)

    @Slot()
    def run_sweep(self) -> int | None:
        """Start the sweep with the Run panel's model, steps, guidance and duration."""
        model, device, request = self.recipe()
        data = self.concept.currentData()
        if request is None or data is None:
            self.job.show_error("fix the Run panel's fields and pick a concept first")
            return None
        set_name, concept = data
        try:
            seeds = parse_seeds(self.seeds.text())
            cp = next(c for c in counterfactual_sets()[set_name] if c.concept == concept)
            scorer = load_scorer(self.scorer.text().strip() or None, None, device)
            query = sweep_query(cp, scorer)  # the ``patch`` command's rule and refusal
        except EngineError as exc:
            self.job.show_error(str(exc))
            return None
        pairs = cp.pairs[: self.max_pairs.value()]
        mode, steps, guidance, duration = self.mode.currentText(), request.steps, request.guidance, request.duration

        def job(backend, progress):
            return patch_sweep(backend, pairs, query, scorer, None, seeds, steps, guidance, duration, mode,
                               cp.concept, progress)

        return self.job.start(f"patching “{concept}”", model, device, job)

    @Slot(object)
    def show_report(self, report: PatchReport) -> None:
        """One bar per cross-attention layer, height = impact (nan shown grey at 0)."""
        self.report = report
        impact = np.asarray(report.impact, dtype=np.float64)
        x = np.asarray(report.layer_numbers, dtype=np.float64)
        heights = np.nan_to_num(impact, nan=0.0)
        top = set(report.functional_layers(self.top.value()))
        brushes = [NAN_BRUSH if not np.isfinite(v) else (TOP_BRUSH if s in top else BAR_BRUSH)
                   for s, v in zip(report.sites, impact, strict=True)]
        if self.bars is not None:
            self.plot.removeItem(self.bars)
        self.bars = pg.BarGraphItem(x=x, height=heights, width=BAR_WIDTH, brushes=brushes, pens=[None] * len(x))
        self.plot.addItem(self.bars)
        lo, hi = float(min(0.0, heights.min())), float(max(0.0, heights.max()))
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        self.plot.setYRange(lo - pad, hi + pad, padding=0)
        self.plot.setXRange(x.min() - 0.6, x.max() + 0.6, padding=0)
        self.plot.getAxis("bottom").setTicks([[(float(n), str(n)) for n in report.layer_numbers]])
        labels = site_labels(report.sites)
        self.plot.setToolTip("\n".join(f"L{n}  {labels[s]}  ({s})" for n, s in
                                        zip(report.layer_numbers, report.sites, strict=True)))
        self.plot.setTitle(f"{report.concept}: sim target {report.sim_target.mean():.3f}, "
                           f"source {report.sim_source.mean():.3f} ({report.scorer})", size="9pt")
        functional = report.functional_layers(self.top.value())
        self.job.message.setText("functional layers: " + ", ".join(
            f"L{report.layer_numbers[report.sites.index(s)]} {labels[s]}" for s in functional))
        self.job.message.setToolTip("\n".join(functional))
        self.functionalLayers.emit(functional)

    def bar_heights(self) -> np.ndarray:
        """The heights the chart shows, in layer order."""
        if self.bars is None:
            return np.zeros(0)
        return np.asarray(self.bars.opts["height"], dtype=np.float64)

    def site_at(self, x: float) -> str | None:
        """The site whose bar covers ``x`` (view coordinates), or None."""
        if self.report is None:
            return None
        for n, site in zip(self.report.layer_numbers, self.report.sites, strict=True):
            if abs(x - n) <= BAR_WIDTH / 2:
                return site
        return None

    @Slot(object)
    def _on_click(self, event) -> None:
        vb = self.plot.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        site = self.site_at(vb.mapSceneToView(event.scenePos()).x())
        if site is not None:
            self.layerClicked.emit(site)
