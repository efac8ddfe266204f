"""Layer × step overview: small multiples of every site (rows) over steps (columns); click to focus.

All cells live in one mosaic image (each cell min–max normalised on its own), so adding a
frame costs one small map and one image upload, whatever the number of sites and steps.
Each cell shows the shared time window (:class:`gui.time_view.TimeView`) and the shared time
cursor; the mosaic itself zooms and pans (wheel / drag) to look at a few cells closely.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Slot
from PySide6.QtWidgets import QDockWidget

from engine.site_labels import site_labels
from gui.analysis_adapter import site_map
from gui.docks.heatmap_dock import no_run_placeholder, plain_axes, set_placeholder
from gui.work_queue import SlicedQueue
from gui.workspace import Workspace

THUMB_GRID = (24, 16)  # (time, frequency) of one cell
GAP = 2
MAX_COLUMNS = 12
MAX_ZOOM = 32  # a zoomed cell is cut from a map at most this many times the cell's time resolution


def overview_columns(total: int, max_columns: int = MAX_COLUMNS) -> list[int]:
    """The steps shown as columns: all of them, or ``max_columns`` evenly spread (first and last kept)."""
    if total <= max_columns:
        return list(range(total))
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, max_columns)})


class OverviewDock(QDockWidget):
    """Rows = sites (first at the top), columns = steps; each cell the head-mean map of the tokens."""

    def __init__(self, workspace: Workspace, parent=None) -> None:
        super().__init__("Layer × step overview", parent)
        self.setObjectName("dock_overview")
        self.ws = workspace
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setMouseEnabled(x=True, y=True)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.getViewBox().invertY(True)
        self.plot.setLabel("bottom", "denoising step")
        plain_axes(self.plot)
        self.item = pg.ImageItem(axisOrder="row-major")
        self.item.setLookupTable(pg.colormap.get("viridis").getLookupTable(nPts=256))
        self.plot.addItem(self.item)
        self.placeholder = no_run_placeholder(self.plot)
        self.cursor = pg.PlotDataItem(pen=pg.mkPen("r", width=1), connect="pairs")
        self.cursor.setZValue(10)
        self.plot.addItem(self.cursor, ignoreBounds=True)
        self.setWidget(self.plot)
        self.window_s = (0.0, 1.0)  # the time window every cell shows (s)
        self.sites: list[str] = []
        self.columns: list[int] = []
        self.mosaic = np.zeros((1, 1), dtype=np.float32)
        self._key: tuple = ()
        self._cells: dict[tuple[int, str], np.ndarray] = {}  # finished cells; a new layout reuses them
        self._cells_for: tuple = ()  # (run id, tokens, time window) the cached cells show
        self._pending = SlicedQueue(self._compute_cell, self._upload, parent=self)  # cells still to compute
        self.item.mouseClickEvent = self._on_click
        self.item.setAcceptHoverEvents(True)
        self.item.hoverEvent = self._on_hover
        workspace.currentChanged.connect(self.rebuild)
        workspace.runUpdated.connect(self._on_run_updated)  # cells are already filled live
        workspace.framesAdded.connect(self._on_frames)
        workspace.selectionChanged.connect(self._on_selection)
        self._refill = QTimer(self, singleShot=True, interval=40)  # one refill per burst of zoom events
        self._refill.timeout.connect(self._on_time_window)
        workspace.time.rangeChanged.connect(lambda *_: self._refill.start())
        workspace.time.cursorChanged.connect(self._draw_cursor)
        workspace.time.reset.connect(self._reset_zoom)

    def _layout_key(self) -> tuple:
        run = self.ws.current
        if run is None:
            return ()
        return (run.run_id, tuple(run.site_names), run.request.steps, self.ws.selection.tokens)

    @Slot()
    def rebuild(self) -> None:
        """Lay the mosaic out anew and fill every recorded cell."""
        run = self.ws.current
        self._key = self._layout_key()
        if run is None:
            self.item.clear()
            set_placeholder(self.plot, self.placeholder, True)
            return
        set_placeholder(self.plot, self.placeholder, False)
        self.sites = run.site_names
        self.columns = overview_columns(run.request.steps)
        t, f = THUMB_GRID
        h = max(1, len(self.sites)) * (f + GAP)
        w = max(1, len(self.columns)) * (t + GAP)
        self.mosaic = np.full((h, w), np.nan, dtype=np.float32)
        self.window_s = (self.ws.time.start, self.ws.time.end)
        self.plot.getViewBox().setLimits(xMin=0.0, xMax=float(w), yMin=0.0, yMax=float(h))
        self.item.setImage(self.mosaic.copy(), autoLevels=False, levels=(0.0, 1.0))
        self._reset_zoom()
        labels = site_labels(self.sites)
        left = [((r + 0.5) * (f + GAP), labels[n]) for r, n in enumerate(self.sites)]
        bottom = [((c + 0.5) * (t + GAP), str(s + 1)) for c, s in enumerate(self.columns)]
        self.plot.getAxis("left").setTicks([left, []])
        self.plot.getAxis("bottom").setTicks([bottom, []])
        self._fill(list(run.frames))
        self._draw_cursor()

    @Slot(object)
    def _on_frames(self, keys) -> None:
        if self._layout_key() != self._key:
            self.rebuild()
        else:
            self._fill(keys)

    @property
    def cells_pending(self) -> int:
        """Cells queued but not drawn yet (a burst of frames is drawn in slices)."""
        return len(self._pending)

    @Slot()
    def _on_run_updated(self) -> None:
        run = self.ws.current
        self._on_selection()
        if run is not None and run.result is not None:
            self._pending.flush()  # a finished run shows every cell

    @Slot()
    def _on_selection(self) -> None:
        """Rebuild only when the layout (run, sites, steps, tokens) changed."""
        if self.ws.current is not None and self._layout_key() != self._key:
            self.rebuild()

    def cell_origin(self, site: str, step: int) -> tuple[int, int] | None:
        """(row, col) pixel of the cell's top-left corner, or None when not shown."""
        if site not in self.sites or step not in self.columns:
            return None
        t, f = THUMB_GRID
        return self.sites.index(site) * (f + GAP), self.columns.index(step) * (t + GAP)

    def _fill(self, keys) -> None:
        """Draw the cells of ``keys``: each is computed once per run, tokens and time window (a
        layout change while the sites of the first step come in only moves finished cells); new
        cells are computed in slices of the event loop (:class:`gui.work_queue.SlicedQueue`)."""
        run = self.ws.current
        cells_for = (run.run_id, self.ws.selection.tokens, self.window_s)
        if cells_for != self._cells_for:
            self._cells, self._cells_for = {}, cells_for
            self._pending.clear()
        todo, placed = [], False
        for key in keys:
            if key in self._cells:
                placed = self._place(key) or placed
            elif key in run.frames:
                todo.append(key)
        if placed:
            self._upload()
        self._pending.add(todo)

    def _compute_cell(self, key: tuple[int, str]) -> None:
        run = self.ws.current
        step, site = key
        if run is None or key not in run.frames or self.cell_origin(site, step) is None:
            return
        m = self._cell_map(run.frames[key], run.lattices[site], run.duration())
        if m is not None:
            lo, hi = float(m.min()), float(m.max())
            self._cells[key] = ((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)).T[::-1]  # frequency up
            self._place(key)

    def _place(self, key: tuple[int, str]) -> bool:
        origin = self.cell_origin(key[1], key[0])
        if origin is None:
            return False
        t, f = THUMB_GRID
        r, c = origin
        self.mosaic[r : r + f, c : c + t] = self._cells[key]
        return True

    def _upload(self) -> None:
        """Show the mosaic (NaN, i.e. cells not recorded yet and gaps, is drawn transparent)."""
        self.item.setImage(self.mosaic.copy(), autoLevels=False, levels=(0.0, 1.0))
        self._draw_cursor()

    def _cell_map(self, probs: np.ndarray, lattice: tuple[int, int], duration: float) -> np.ndarray | None:
        """The cell's ``THUMB_GRID`` map of the shown time window: the whole run, or the window cut
        from a map of finer time resolution and sampled back to the cell's width."""
        t, f = THUMB_GRID
        start, end = self.window_s
        frac = (end - start) / max(duration, 1e-9)
        if frac >= 1.0 - 1e-6:
            return site_map(probs, lattice, THUMB_GRID, self.ws.selection.tokens)
        n = int(min(np.ceil(t / max(frac, 1e-9)), t * MAX_ZOOM))
        m = site_map(probs, lattice, (n, f), self.ws.selection.tokens)
        if m is None:
            return None
        i0 = int(np.clip(np.floor(start / duration * n), 0, n - 1))
        i1 = int(np.clip(np.ceil(end / duration * n), i0 + 1, n))
        return m[np.linspace(i0, i1 - 1, t).round().astype(int)]

    @Slot()
    def _on_time_window(self) -> None:
        """The shared time window changed: every recorded cell shows the new window."""
        window = (self.ws.time.start, self.ws.time.end)
        run = self.ws.current
        if window == self.window_s or run is None:
            return
        self.window_s = window
        self._fill(list(run.frames))
        self._draw_cursor()

    @Slot()
    def _draw_cursor(self, *_) -> None:
        """The time cursor as one vertical segment per column, where it falls in the window."""
        start, end = self.window_s
        x = (self.ws.time.cursor - start) / max(end - start, 1e-9)
        if not self.sites or not 0.0 <= x <= 1.0:
            self.cursor.setData([], [])
            return
        t, f = THUMB_GRID
        filled = sorted({self.columns.index(step) for step, _ in self._cells if step in self.columns})
        xs = np.repeat([c * (t + GAP) + x * t for c in filled], 2)  # columns with cells (not future steps)
        ys = np.tile([0.0, len(self.sites) * (f + GAP) - GAP], len(filled))
        self.cursor.setData(xs, ys)

    @Slot()
    def _reset_zoom(self) -> None:
        t, f = THUMB_GRID
        self.plot.setXRange(0.0, max(1, len(self.columns)) * (t + GAP), padding=0)
        self.plot.setYRange(0.0, max(1, len(self.sites)) * (f + GAP), padding=0)

    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        """(row, column) of the cell under mosaic pixel (x, y), or None."""
        t, f = THUMB_GRID
        r, c = int(y // (f + GAP)), int(x // (t + GAP))
        return (r, c) if 0 <= r < len(self.sites) and 0 <= c < len(self.columns) else None

    def _on_hover(self, event) -> None:
        """Tooltip: the full site name and the step of the cell under the mouse."""
        cell = None if event.isExit() else self.cell_at(event.pos().x(), event.pos().y())
        text = "" if cell is None else f"{self.sites[cell[0]]} · step {self.columns[cell[1]] + 1}"
        self.item.setToolTip(text)

    def _on_click(self, event) -> None:
        """Focus the clicked cell's site and step, and put the time cursor where it was clicked."""
        pos = event.pos()
        t, f = THUMB_GRID
        cell = self.cell_at(pos.x(), pos.y())
        if cell is not None:
            r, c = cell
            self.focus(self.sites[r], self.columns[c])
            x = (pos.x() - c * (t + GAP)) / t
            if 0.0 <= x <= 1.0:
                start, end = self.window_s
                self.ws.time.set_cursor(start + x * (end - start))
            event.accept()

    def focus(self, site: str, step: int) -> None:
        self.ws.select(mode="site", site=site, step=step, follow_live=False, head=None)

