"""Layer × step overview: small multiples of every site (rows) over steps (columns); click to focus.

All cells live in one mosaic image (each cell min–max normalised on its own), so adding a
frame costs one small map and one image upload, whatever the number of sites and steps.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Slot
from PySide6.QtWidgets import QDockWidget

from gui.analysis_adapter import site_map
from gui.docks.heatmap_dock import no_run_placeholder, plain_axes, set_placeholder
from gui.workspace import Workspace

THUMB_GRID = (24, 16)  # (time, frequency) of one cell
GAP = 2
MAX_COLUMNS = 12


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
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.getViewBox().invertY(True)
        self.plot.setLabel("bottom", "denoising step")
        plain_axes(self.plot)
        self.item = pg.ImageItem(axisOrder="row-major")
        self.item.setLookupTable(pg.colormap.get("viridis").getLookupTable(nPts=256))
        self.plot.addItem(self.item)
        self.placeholder = no_run_placeholder(self.plot)
        self.setWidget(self.plot)
        self.sites: list[str] = []
        self.columns: list[int] = []
        self.mosaic = np.zeros((1, 1), dtype=np.float32)
        self._key: tuple = ()
        self.item.mouseClickEvent = self._on_click
        workspace.currentChanged.connect(self.rebuild)
        workspace.runUpdated.connect(self._on_selection)  # cells are already filled live
        workspace.framesAdded.connect(self._on_frames)
        workspace.selectionChanged.connect(self._on_selection)

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
        left = [((r + 0.5) * (f + GAP), _short(n)) for r, n in enumerate(self.sites)]
        bottom = [((c + 0.5) * (t + GAP), str(s + 1)) for c, s in enumerate(self.columns)]
        self.plot.getAxis("left").setTicks([left, []])
        self.plot.getAxis("bottom").setTicks([bottom, []])
        self._fill(list(run.frames))

    @Slot(object)
    def _on_frames(self, keys) -> None:
        if self._layout_key() != self._key:
            self.rebuild()
        else:
            self._fill(keys)

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
        run = self.ws.current
        t, f = THUMB_GRID
        changed = False
        for step, site in keys:
            origin = self.cell_origin(site, step)
            probs = run.frames.get((step, site))
            if origin is None or probs is None:
                continue
            m = site_map(probs, run.lattices[site], THUMB_GRID, self.ws.selection.tokens)
            if m is None:
                continue
            lo, hi = float(m.min()), float(m.max())
            cell = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
            r, c = origin
            self.mosaic[r : r + f, c : c + t] = cell.T[::-1]  # frequency up, time right
            changed = True
        if changed:  # NaN (cells not recorded yet, gaps) is drawn transparent
            self.item.setImage(self.mosaic.copy(), autoLevels=False, levels=(0.0, 1.0))

    def _on_click(self, event) -> None:
        pos = event.pos()
        t, f = THUMB_GRID
        r, c = int(pos.y() // (f + GAP)), int(pos.x() // (t + GAP))
        if 0 <= r < len(self.sites) and 0 <= c < len(self.columns):
            self.focus(self.sites[r], self.columns[c])
            event.accept()

    def focus(self, site: str, step: int) -> None:
        self.ws.select(mode="site", site=site, step=step, follow_live=False, head=None)


def _short(name: str) -> str:
    """``down_blocks.1.attentions.2.transformer_blocks.0.attn2`` → ``down1.a2.attn2``."""
    short = name.replace(".transformer_blocks.0", "").replace("_blocks.", "").replace("attentions.", "a")
    return short.replace("transformer_blocks.", "tb")[-24:]
