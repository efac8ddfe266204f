"""Metrics: the shown map's frequency profile on a Hz axis against an instrument band template."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Slot
from PySide6.QtWidgets import QComboBox, QDockWidget, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from engine.analysis.melscale import grid_hz
from engine.analysis.metrics import frequency_profile_of, profile_correlation
from engine.analysis.templates import INSTRUMENT_BANDS, band_mask, band_template
from engine.site_labels import site_label
from engine.types import EngineError
from gui.flow_layout import WrapLabel
from gui.hz_axis import HzAxis
from gui.workspace import Workspace


class MetricsDock(QDockWidget):
    """Profile ``mean_t G[t, f]`` vs the chosen template's band; Pearson / Spearman and in-band share."""

    def __init__(self, workspace: Workspace, parent=None) -> None:
        super().__init__("Metrics", parent)
        self.setObjectName("dock_metrics")
        self.ws = workspace
        self.map_provider: Callable[[], np.ndarray | None] = lambda: None
        self.scores: dict[str, float] = {}
        body = QWidget()
        lay = QVBoxLayout(body)
        row = QHBoxLayout()
        self.template = QComboBox()
        self.template.addItems(list(INSTRUMENT_BANDS))
        row.addWidget(QLabel("template"))
        row.addWidget(self.template, 1)
        lay.addLayout(row)
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setLabel("bottom", "frequency (Hz, mel-spaced)")
        self.plot.setLabel("left", "attention")  # short: the plot is short on a laptop
        self.plot.getAxis("left").setToolTip("attention of the shown map, mean over time, per frequency bin")
        self.hz_axis = HzAxis(self.plot, "bottom")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.curve = self.plot.plot(pen=pg.mkPen("#136", width=2), symbol="o", symbolSize=3)
        self.band = pg.LinearRegionItem(movable=False, brush=pg.mkBrush(255, 140, 0, 50))
        self.plot.addItem(self.band)
        lay.addWidget(self.plot, 1)
        self.label = WrapLabel("–", 3)
        lay.addWidget(self.label)
        self.setWidget(body)
        self.template.currentTextChanged.connect(self.refresh)
        self._stale = False  # a map came while the dock was hidden (a tab behind another)
        self.shown = True  # Qt's visibilityChanged: False while tabbed away (isVisible() stays True)
        self.visibilityChanged.connect(self._on_visibility)

    @Slot(bool)
    def _on_visibility(self, visible: bool) -> None:
        self.shown = visible
        if visible and self._stale:
            self.refresh()

    @Slot()
    def refresh(self, *_) -> None:
        """Profile and scores of the shown map; only while the dock can be seen (it is a tab
        behind the overview by default: a live run must not pay for it at every step)."""
        if not self.shown:
            self._stale = True
            return
        self._stale = False
        run = self.ws.current
        g = self.map_provider()
        if run is None or g is None or run.mel_spec is None:
            return
        hz = grid_hz(run.mel_spec, g.shape[1])
        profile = frequency_profile_of(g)
        x = np.arange(g.shape[1]) + 0.5  # bin centres on a mel-spaced axis, as in the heatmap
        self.curve.setData(x, profile)
        self.hz_axis.set_bands(hz, g.shape[1])
        name = self.template.currentText()
        try:
            t = band_template(name)
            mask = band_mask(t, run.mel_spec, g.shape[1])
        except EngineError as exc:
            self.label.setText(str(exc))
            return
        lo, hi = (float(np.interp(f, hz, x, left=0.0, right=g.shape[1])) for f in t.band)
        self.band.setRegion((lo, hi))
        r, rho = profile_correlation(g, mask.astype(np.float64))
        share = float(profile[mask].sum() / profile.sum()) if profile.sum() > 0 else float("nan")
        self.scores = {"pearson": r, "spearman": rho, "in_band_share": share, "band_fraction": float(mask.mean())}
        sel = self.ws.selection
        shown = "aggregate" if sel.mode == "aggregate" else site_label(sel.site or "?")
        self.label.setToolTip(f"map: {sel.site} · step {sel.step + 1}" if sel.mode == "site" else "map: aggregate")
        self.label.setText(
            f"{shown} · step {sel.step + 1} · {name}: band {t.band[0]:.0f}–{t.band[1]:.0f} Hz · Pearson r = {r:.3f} · Spearman ρ = {rho:.3f} · "
            f"attention in band {share:.1%} (band covers {mask.mean():.1%} of bins)"
        )
