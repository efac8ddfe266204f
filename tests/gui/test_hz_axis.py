"""Hz labels on mel-spaced axes fit the plot's pixels: a short plot (the player on a laptop) keeps
its labels a font height apart and clear of the axis ends; a tall or zoomed-in one shows more."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QFont, QFontMetrics

from engine.analysis.melscale import band_centres_hz
from engine.types import MelSpec
from gui.hz_axis import HzAxis

CENTRES = band_centres_hz(MelSpec(16000, 1024, 256, 64, 0.0, 8000.0))


def _plot(qtbot, w: int, h: int) -> tuple[pg.PlotWidget, HzAxis]:
    plot = pg.PlotWidget()
    qtbot.addWidget(plot)
    plot.resize(w, h)
    plot.show()
    qtbot.waitExposed(plot)
    plot.setYRange(0.0, 64.0, padding=0)
    axis = HzAxis(plot)
    axis.set_bands(CENTRES, 64)
    return plot, axis


def _pixels(plot, axis) -> np.ndarray:
    vb = plot.getViewBox()
    y0, y1 = vb.viewRange()[1]
    return np.array([(y - y0) / (y1 - y0) * vb.height() for y, _ in axis.ticks])


def test_a_short_plot_keeps_its_labels_apart_and_inside(qtbot):
    plot, axis = _plot(qtbot, 500, 110)
    font_px = QFontMetrics(QFont()).height()
    px = _pixels(plot, axis)
    labels = [t for _, t in axis.ticks]
    assert len(labels) >= 2 and "1k" in labels
    assert np.diff(px).min() >= font_px  # no two labels overlap
    assert px.min() >= font_px / 2 and px.max() <= plot.getViewBox().height() - font_px / 2  # none cut at an end
    assert not {"50", "500"} <= set(labels)


def test_a_taller_or_zoomed_plot_shows_more_labels(qtbot):
    plot, axis = _plot(qtbot, 500, 110)
    short = [t for _, t in axis.ticks]
    plot.resize(500, 700)
    qtbot.waitUntil(lambda: len(axis.ticks) > len(short), timeout=5_000)
    plot.setYRange(0.0, 12.0, padding=0)  # zoom onto the lowest bands
    low = [t for _, t in axis.ticks]
    assert all(0.0 <= y <= 12.0 for y, _ in axis.ticks) and {"100", "200"} <= set(low)
    before = axis.ticks
    axis.set_bands(CENTRES.copy(), 64)  # the same bands again (every live map): nothing recomputed
    assert axis.ticks is before
    axis.set_bands(None)
    assert axis.ticks == []
