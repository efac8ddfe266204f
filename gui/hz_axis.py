"""Hz labels on a mel-spaced plot axis, spaced by what fits on screen.

A plot whose rows (or columns) ``0..n`` tile the model's mel bands gets ticks at readable Hz
values (:data:`engine.publication.HZ_TICKS`). How many fit depends on the plot's size in pixels
and its zoom: :class:`HzAxis` recomputes them when either changes, keeping labels a font height
(or a label's width) apart and clear of the axis ends, so a short player mel plot on a laptop
shows 500 / 1k / 2k / 4k, not 50 and 500 on top of each other.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject
from PySide6.QtGui import QFont, QFontMetrics

from engine.publication import HZ_TICKS, hz_label

LABEL_GAP_PX = 4  # free pixels between neighbouring labels


def hz_axis_ticks(centres_hz: np.ndarray, n_rows: int, min_gap: float = 0.07,
                  lo: float | None = None, hi: float | None = None, margin: float = 0.0) -> list[tuple[float, str]]:
    """Ticks ``(y, label)`` for an image whose rows ``0..n_rows`` tile the mel bands low→high.

    Below 1 kHz the mel scale is nearly linear, so 20 / 50 / 100 / 200 Hz crowd into the lowest
    few rows; going down from the top, a tick closer than ``min_gap · n_rows`` to the last kept one
    is dropped, so labels never overlap. With the visible range ``lo..hi`` (rows), ticks outside it
    or closer than ``margin`` rows to its ends (where a label would be cut) are left out.
    """
    n = len(centres_hz)
    lo = 0.0 if lo is None else lo
    hi = float(n_rows) if hi is None else hi
    ticks: list[tuple[float, str]] = []
    for hz in sorted(HZ_TICKS, reverse=True):
        if centres_hz[0] <= hz <= centres_hz[-1]:
            band = float(np.interp(hz, centres_hz, np.arange(n)))
            y = (band + 0.5) * n_rows / n
            if not lo + margin <= y <= hi - margin:
                continue
            if ticks and ticks[-1][0] - y < min_gap * n_rows:
                continue
            ticks.append((y, hz_label(hz)))
    return ticks[::-1]


class HzAxis(QObject):
    """Keeps ``plot``'s ``side`` axis ("left" or "bottom") labelled in Hz for the bands
    :meth:`set_bands` gives, as the plot is resized or zoomed."""

    def __init__(self, plot: pg.PlotWidget, side: str = "left") -> None:
        super().__init__(plot)
        self.plot, self.side = plot, side
        self.centres: np.ndarray | None = None
        self.n_rows = 0
        self.ticks: list[tuple[float, str]] = []
        vb = plot.getViewBox()
        vb.sigResized.connect(self.update)
        (vb.sigYRangeChanged if side == "left" else vb.sigXRangeChanged).connect(self.update)

    def set_bands(self, centres_hz: np.ndarray | None, n_rows: int = 0) -> None:
        """Label rows ``0..n_rows`` tiling bands centred at ``centres_hz`` (None: the axis's own
        numbers). The same bands again (every live map) change nothing."""
        centres = None if centres_hz is None else np.asarray(centres_hz, dtype=np.float64)
        same = (centres is None and self.centres is None) or (
            centres is not None and self.centres is not None and np.array_equal(centres, self.centres))
        if same and int(n_rows) == self.n_rows:  # resizing and zooming update by themselves
            return
        self.centres, self.n_rows = centres, int(n_rows)
        self.update()

    def _label_px(self) -> float:
        axis = self.plot.getAxis(self.side)
        font = axis.style.get("tickFont") or QFont()
        fm = QFontMetrics(font)
        if self.side == "left":
            return fm.height() + LABEL_GAP_PX
        return max(fm.horizontalAdvance(hz_label(hz)) for hz in HZ_TICKS) + 2 * LABEL_GAP_PX

    def update(self, *_) -> None:
        axis = self.plot.getAxis(self.side)
        if self.centres is None or self.n_rows <= 0 or len(self.centres) < 2:
            self.ticks = []
            axis.setTicks(None)
            return
        vb = self.plot.getViewBox()
        (x0, x1), (y0, y1) = vb.viewRange()
        lo, hi = (y0, y1) if self.side == "left" else (x0, x1)
        pixels = vb.height() if self.side == "left" else vb.width()
        if pixels <= 1 or hi <= lo:  # not laid out yet: the whole range
            lo, hi, pixels = 0.0, float(self.n_rows), 200.0
        label = self._label_px() * (hi - lo) / pixels  # rows one label needs
        margin = 0.5 * label if self.side == "left" else 0.0
        self.ticks = hz_axis_ticks(self.centres, self.n_rows, min_gap=label / self.n_rows,
                                   lo=lo, hi=hi, margin=margin)
        axis.setTicks([self.ticks, []])
