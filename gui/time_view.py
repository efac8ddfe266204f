"""One time window and one time cursor (both in seconds) shared by every time plot.

:class:`TimeView` is the model; :func:`bind_time_plot` makes a pyqtgraph plot a view of it:
zooming or panning the plot's time axis sets the shared window, and the window set elsewhere
moves the plot; its cursor line follows the shared cursor and, dragged or clicked, sets it.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal

MIN_SPAN_S = 1e-3


class TimeView(QObject):
    """The shown time window ``[start, end]`` within ``[0, duration]`` and the cursor position."""

    rangeChanged = Signal(float, float)
    cursorChanged = Signal(float)
    reset = Signal()  # "reset view": every plot shows all of its data again

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.duration = 1.0
        self.start, self.end = 0.0, 1.0
        self.cursor = 0.0

    @property
    def zoomed(self) -> bool:
        return self.start > 0.0 or self.end < self.duration

    def set_duration(self, seconds: float) -> None:
        """A run of ``seconds`` is shown: a window that showed everything keeps doing so; a zoomed
        one is clipped to the new length."""
        seconds = max(float(seconds), MIN_SPAN_S)
        full = not self.zoomed
        self.duration = seconds
        if full:
            self.set_range(0.0, seconds)
        else:
            self.set_range(self.start, self.end)
        self.set_cursor(self.cursor)

    def set_range(self, start: float, end: float) -> None:
        """Show ``[start, end]`` s (kept inside the run, at least ``MIN_SPAN_S`` wide)."""
        start, end = sorted((float(start), float(end)))
        span = min(max(end - start, MIN_SPAN_S), self.duration)
        start = min(max(start, 0.0), self.duration - span)
        new = (start, start + span)
        if new != (self.start, self.end):
            self.start, self.end = new
            self.rangeChanged.emit(*new)

    def set_cursor(self, seconds: float) -> None:
        seconds = min(max(float(seconds), 0.0), self.duration)
        if seconds != self.cursor:
            self.cursor = seconds
            self.cursorChanged.emit(seconds)

    def reset_view(self) -> None:
        """Show the whole run again (time, and each plot's other axis through ``reset``)."""
        self.set_range(0.0, self.duration)
        self.reset.emit()


def cursor_line() -> pg.InfiniteLine:
    """The red, draggable vertical time cursor."""
    line = pg.InfiniteLine(0.0, angle=90, movable=True, pen=pg.mkPen("r", width=1),
                           hoverPen=pg.mkPen("r", width=3))
    line.setZValue(10)
    return line


def bind_time_plot(view: TimeView, plot: pg.PlotWidget, line: pg.InfiniteLine | None = None) -> None:
    """Make ``plot``'s x axis (seconds) a view of ``view``'s window, and ``line`` of its cursor.

    Mouse: wheel / drag zoom and pan the time axis (limited to the run), a click sets the cursor,
    dragging ``line`` moves it.
    """
    vb = plot.getPlotItem().getViewBox()
    guard = {"busy": False}

    def to_plot(start: float, end: float) -> None:
        guard["busy"] = True
        try:
            vb.setLimits(xMin=0.0, xMax=view.duration)
            vb.setXRange(start, end, padding=0)
        finally:
            guard["busy"] = False

    def from_plot(_vb, rng) -> None:
        if not guard["busy"]:
            view.set_range(*rng)

    vb.sigXRangeChanged.connect(from_plot)
    view.rangeChanged.connect(to_plot)
    if line is not None:
        plot.addItem(line)
        line.setPos(view.cursor)
        view.cursorChanged.connect(line.setPos)
        line.sigPositionChanged.connect(lambda ln: view.set_cursor(ln.value()))

    def on_click(event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or not plot.sceneBoundingRect().contains(event.scenePos()):
            return
        if vb.sceneBoundingRect().contains(event.scenePos()):
            view.set_cursor(vb.mapSceneToView(event.scenePos()).x())

    plot.scene().sigMouseClicked.connect(on_click)
