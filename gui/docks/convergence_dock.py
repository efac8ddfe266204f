"""Convergence panel: per-site attention entropy over the denoising steps (stable sites blue,
fast orange; :func:`engine.convergence.diagnostics.diagnose`), the causal-freezing sweep heatmap
(sites × freeze steps; :func:`engine.convergence.freeze.freeze_sweep`) and the LSAC preset that
every later generation uses (a Run request provider, resolved in the engine thread)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.convergence.diagnostics import ConvergenceReport, diagnose, report_from_frames
from engine.convergence.freeze import METRICS, FreezeSweep, freeze_sweep
from engine.recipe import LSAC_CHOICES, LsacSpec
from engine.site_labels import site_labels
from engine.types import EngineError, GenerationRequest
from gui.docks.job_controls import JobControls
from gui.flow_layout import FlowLayout

Recipe = Callable[[], tuple[str, str, GenerationRequest | None]]
STABLE_PEN, FAST_PEN = "#1f77b4", "#ff7f0e"


def legend_label(stable: bool, n: int) -> str:
    """Legend entry of a class of sites: what splits them (late entropy change) and how many."""
    which = "stable layers: small" if stable else "fast layers: large"
    return f"{which} entropy change ({n} site{'' if n == 1 else 's'})"


class ConvergenceDock(QDockWidget):
    """Diagnostics and freezing jobs, their plots, and the LSAC preset of the next generations."""

    message = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__("Convergence / LSAC", parent)
        self.setObjectName("dock_convergence")
        self.recipe: Recipe = lambda: ("", "cpu", None)
        self.current_result: Callable[[], Any] = lambda: None
        self.report: ConvergenceReport | None = None
        self.sweep: FreezeSweep | None = None
        self.curves: dict[str, pg.PlotDataItem] = {}
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(4, 4, 4, 4)
        top_box = QWidget()
        top = FlowLayout(top_box)  # wraps in a narrow dock (laptop screens)
        top.addWidget(QLabel("LSAC for every generation"))
        self.preset = QComboBox()
        self.preset.addItems(LSAC_CHOICES)
        self.preset.setToolTip("off, or cache the self-attention of converged layers (safe / balanced / aggressive); "
                               "uses the last diagnosis of this model, else diagnoses the request first")
        top.addWidget(self.preset)
        self.cache_dtype = QComboBox()
        self.cache_dtype.addItems(["model", "bfloat16"])
        self.cache_dtype.setToolTip("dtype of the attention cache: the model's, or bfloat16 (half the memory; "
                                    "faster cached products on CPUs with AVX-512 BF16; a small deviation)")
        top.addWidget(self.cache_dtype)
        self.kinds = QComboBox()
        self.kinds.addItems(["self", "self,cross"])
        self.kinds.setToolTip("attention the preset caches: self-attention only (default), or also the converged "
                              "cross-attention (faster, but on a prompt-following model it deviates more)")
        top.addWidget(self.kinds)
        self.from_run = QPushButton("From current run")
        self.from_run.setToolTip("entropy from the current run's recorded frames (capture every step)")
        top.addWidget(self.from_run)
        lay.addWidget(top_box)
        self.job = JobControls("Diagnose (entropy)")
        lay.addWidget(self.job)
        self.sweep_job = JobControls("Freeze sweep")
        lay.addWidget(self.sweep_job)
        self.tabs = QTabWidget()
        self.plots: dict[str, pg.PlotWidget] = {}
        for kind in ("cross", "self"):
            plot = pg.PlotWidget()
            plot.setBackground("w")
            plot.setLabel("bottom", "denoising step")
            plot.setLabel("left", "entropy (nats)")
            plot.hideButtons()
            plot.addLegend(offset=(-10, 10))
            self.plots[kind] = plot
            self.tabs.addTab(plot, f"{kind}-attention entropy")
        sweep_box = QWidget()
        sl = QVBoxLayout(sweep_box)
        sl.setContentsMargins(0, 0, 0, 0)
        self.sweep_metric = QComboBox()
        self.sweep_metric.addItems(METRICS)
        sl.addWidget(self.sweep_metric)
        self.sweep_plot = pg.PlotWidget()
        self.sweep_plot.setBackground("w")
        self.sweep_plot.setLabel("bottom", "freeze step")
        self.sweep_plot.setLabel("left", "site")
        self.sweep_plot.setMouseEnabled(x=False, y=False)
        self.sweep_plot.hideButtons()
        self.sweep_image = pg.ImageItem(axisOrder="col-major")
        self.sweep_image.setLookupTable(pg.colormap.get("magma").getLookupTable(nPts=256))
        self.sweep_plot.addItem(self.sweep_image)
        sl.addWidget(self.sweep_plot, 1)
        self.tabs.addTab(sweep_box, "freeze sweep")
        lay.addWidget(self.tabs, 1)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        self.setWidget(body)
        self.job.run_button.clicked.connect(self.run_diagnose)
        self.job.finished.connect(self._on_diagnosed)
        self.sweep_job.run_button.clicked.connect(self.run_sweep)
        self.sweep_job.finished.connect(self.show_sweep)
        self.from_run.clicked.connect(self.report_current_run)
        self.sweep_metric.currentTextChanged.connect(self._draw_sweep)
        self.preset.currentTextChanged.connect(self._on_preset)

    # ---- LSAC --------------------------------------------------------------------------------
    def request_fields(self) -> dict[str, Any]:
        """Run request provider: ``{"lsac": LsacSpec}`` with the preset (and the last diagnosis
        and sweep, when there are), or nothing when LSAC is off."""
        preset = self.preset.currentText()
        if preset == "off":
            return {}
        return {"lsac": LsacSpec(preset=preset, report=self.report, sweep=self.sweep,
                                 dtype=self.cache_dtype.currentText(),
                                 kinds=tuple(self.kinds.currentText().split(",")))}

    @Slot(str)
    def _on_preset(self, preset: str) -> None:
        basis = "the last diagnosis" if self.report is not None else "a diagnosis of each request"
        self.message.emit(f"LSAC {preset} for the next generations" + ("" if preset == "off" else f" (from {basis})"))

    # ---- diagnostics ---------------------------------------------------------------------------
    def _request(self) -> tuple[str, str, GenerationRequest] | None:
        model, device, request = self.recipe()
        if request is None:
            return None
        return model, device, dataclasses.replace(request, interventions=(), lsac=None)

    @Slot()
    def run_diagnose(self) -> int | None:
        """Diagnose the Run panel's recipe (entropy streamed for every site; cross frames captured)."""
        got = self._request()
        if got is None:
            self.job.show_error("fix the Run panel's fields first")
            return None
        model, device, request = got

        def job(backend, progress):
            report, result = diagnose(backend, request)
            progress(1, 1)
            return report, result

        return self.job.start("convergence diagnosis", model, device, job)

    @Slot(object)
    def _on_diagnosed(self, payload) -> None:
        report, _result = payload
        self.show_report(report)

    @Slot()
    def report_current_run(self) -> ConvergenceReport | None:
        result = self.current_result()
        if result is None:
            self.job.show_error("no finished run to read: generate first")
            return None
        try:
            report = report_from_frames(result)
        except EngineError as exc:
            self.job.show_error(str(exc))
            return None
        self.show_report(report)
        return report

    def show_report(self, report: ConvergenceReport) -> None:
        """One curve per site (stable blue solid, fast orange dashed), one tab per kind."""
        self.report = report
        for plot in self.plots.values():
            plot.clear()
            if plot.getPlotItem().legend is not None:
                plot.getPlotItem().legend.clear()
        self.curves = {}
        steps = np.arange(report.entropy.shape[0], dtype=np.float64)
        shown = set()
        counts = {(k, bool(st)): 0 for k in report.kinds for st in (True, False)}
        for k, st in zip(report.kinds, report.stable, strict=True):
            counts[(k, bool(st))] += 1
        labels = site_labels(report.sites)
        for i, site in enumerate(report.sites):
            plot = self.plots.get(report.kinds[i])
            if plot is None:
                continue
            stable = bool(report.stable[i])
            pen = pg.mkPen(STABLE_PEN if stable else FAST_PEN, width=1.5,
                           style=Qt.PenStyle.SolidLine if stable else Qt.PenStyle.DashLine)
            label = None
            if (report.kinds[i], stable) not in shown:  # one legend entry per class
                label = legend_label(stable, counts[(report.kinds[i], stable)])
                shown.add((report.kinds[i], stable))
            curve = plot.plot(steps, np.array(report.entropy[:, i], dtype=np.float64), pen=pen, name=label)
            curve.setToolTip(f"{labels[site]}: {site} ({'stable' if stable else 'fast'}: entropy change)")
            self.curves[site] = curve
        first = "cross" if "cross" in report.kinds else (report.kinds[0] if report.kinds else "cross")
        if first in self.plots:
            self.tabs.setCurrentWidget(self.plots[first])
        self.summary.setText(f"{len(report.stable_sites)} stable, {len(report.fast_sites)} fast sites "
                             f"(source: {report.source}); LSAC presets now use this split")

    def curve_data(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.curves[site].getData()
        return np.asarray(x), np.asarray(y)

    # ---- freezing ----------------------------------------------------------------------------
    @Slot()
    def run_sweep(self) -> int | None:
        """Freeze every site at T/8…3T/4 and measure the deviation (many runs: a job)."""
        got = self._request()
        if got is None:
            self.sweep_job.show_error("fix the Run panel's fields first")
            return None
        model, device, request = got
        report = self.report

        def job(backend, progress):
            return freeze_sweep(backend, request, None, None, report, progress)

        return self.sweep_job.start("freeze sweep", model, device, job)

    @Slot(object)
    def show_sweep(self, sweep: FreezeSweep) -> None:
        self.sweep = sweep
        self.tabs.setCurrentIndex(self.tabs.count() - 1)
        self._draw_sweep()

    @Slot()
    def _draw_sweep(self, *_) -> None:
        if self.sweep is None:
            return
        data = np.array(self.sweep.metrics[self.sweep_metric.currentText()], dtype=np.float32)  # (sites, freeze steps)
        finite = data[np.isfinite(data)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        img = np.nan_to_num(data, nan=lo).T  # x = freeze step, y = site
        self.sweep_image.setImage(img, autoLevels=False, levels=(lo, hi if hi > lo else lo + 1.0))
        n_fs, n_sites = img.shape
        self.sweep_image.setRect(QRectF(0.0, 0.0, float(n_fs), float(n_sites)))
        self.sweep_plot.setXRange(0.0, float(n_fs), padding=0)
        self.sweep_plot.setYRange(0.0, float(n_sites), padding=0)
        self.sweep_plot.getAxis("bottom").setTicks([[(j + 0.5, str(s)) for j, s in enumerate(self.sweep.freeze_steps)]])
        marks = self.sweep.stable or [None] * n_sites
        labels = site_labels(self.sweep.sites)
        self.sweep_plot.getAxis("left").setTicks([[
            (i + 0.5, f"{labels[s]}{'' if m is None else (' S' if m else ' F')}")
            for i, (s, m) in enumerate(zip(self.sweep.sites, marks, strict=True))]])
        self.sweep_plot.setToolTip("sites (S stable, F fast), top to bottom:\n" + "\n".join(reversed(self.sweep.sites)))
        self.sweep_plot.setTitle(f"{self.sweep_metric.currentText()} to the full run ({lo:.3g}…{hi:.3g})", size="9pt")
