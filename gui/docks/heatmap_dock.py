"""Live heatmap: the selected attention map on the time × mel plane, with Hz axis and read-out."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from engine.site_labels import site_labels
from gui.analysis_adapter import (
    AGGREGATORS,
    POOLINGS,
    WEIGHTINGS,
    grid_centres_hz,
    mel_centres_hz,
    selected_map,
)
from gui.flow_layout import FlowLayout, labelled
from gui.hz_axis import HzAxis
from gui.time_view import bind_time_plot, cursor_line
from gui.workspace import Workspace

COLORMAPS = ("viridis", "magma", "inferno", "plasma", "cividis")
LEVEL_MODES = ("auto", "percentile", "manual")
NO_RUN_TEXT = "no run yet"


def plain_axes(plot: pg.PlotWidget) -> None:
    """Turn off pyqtgraph's automatic SI-prefix rescaling ("ms", "×0.001") on every axis."""
    for name in ("left", "bottom", "right", "top"):
        plot.getAxis(name).enableAutoSIPrefix(False)


def no_run_placeholder(plot: pg.PlotWidget) -> pg.TextItem:
    """Show ``plot`` empty (unit view, no tick values) with a centred "no run yet" text; returned
    so :func:`set_placeholder` can hide it when data arrives."""
    text = pg.TextItem(NO_RUN_TEXT, color="#888", anchor=(0.5, 0.5))
    text.setPos(0.5, 0.5)
    plot.addItem(text, ignoreBounds=True)
    set_placeholder(plot, text, True)
    return text


def set_placeholder(plot: pg.PlotWidget, text: pg.TextItem, empty: bool) -> None:
    """Empty: show ``text`` over a unit view with the tick values hidden; else hide it, show the
    ticks and give the view back its auto range (a dock may set its own range after)."""
    was_empty = text.isVisible()
    text.setVisible(empty)
    for name in ("left", "bottom"):
        plot.getAxis(name).setStyle(showValues=not empty)
    if empty:
        plot.setXRange(0.0, 1.0, padding=0)
        plot.setYRange(0.0, 1.0, padding=0)
    elif was_empty:
        plot.enableAutoRange()


def time_mel_plot(zoomable: bool = False) -> tuple[pg.PlotWidget, pg.ImageItem]:
    """A plot with a time axis in seconds and a mel-spaced Hz axis, holding one ``(T, F)`` image
    (time along x, low frequency at the bottom); fixed unless ``zoomable`` (wheel / drag)."""
    plot = pg.PlotWidget()
    plot.setBackground("w")
    plot.setLabel("bottom", "time", units="s")
    plot.setLabel("left", "frequency (Hz, mel-spaced)")
    plot.setMouseEnabled(x=zoomable, y=zoomable)
    plot.hideButtons()
    plain_axes(plot)
    item = pg.ImageItem(axisOrder="col-major")
    plot.addItem(item)
    return plot, item


def fill_site_combo(combo: QComboBox, names: list[str], prefix_layers: bool = False) -> None:
    """Fill ``combo`` with sites: the short label shown (``L<i>`` first when ``prefix_layers``),
    the full name as item data and tooltip."""
    combo.clear()
    for i, (name, label) in enumerate(site_labels(names).items()):
        combo.addItem(f"L{i}  {label}" if prefix_layers else label, name)
        combo.setItemData(i, name, Qt.ItemDataRole.ToolTipRole)


class HeatmapDock(QDockWidget):
    """Shows one site × step × head map, or the aggregate, updated as frames arrive."""

    cursorMoved = Signal(str)  # read-out text
    mapChanged = Signal()  # a new map is shown

    def __init__(self, workspace: Workspace, grid: tuple[int, int] = (128, 64), parent=None) -> None:
        super().__init__("Live heatmap", parent)
        self.setObjectName("dock_heatmap")
        self.ws = workspace
        self.grid = grid
        self.image_array: np.ndarray | None = None  # exactly what is shown (T, F)
        self.updates = 0
        self.shown_key: tuple | None = None  # (run id, Selection) of the shown map
        self._updating = False
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(2, 2, 2, 2)
        box = QWidget()
        self.control_flow = controls = FlowLayout(box, spacing=8)  # wraps onto more rows in a narrow dock
        self.mode = QComboBox()
        self.mode.addItems(["site", "aggregate"])
        self.site = QComboBox()
        self.site.setMinimumContentsLength(18)
        self.step = QSlider(Qt.Orientation.Horizontal)
        self.step_label = QLabel("step –")
        self.head = QComboBox()
        self.token = QComboBox()
        self.pooling = QComboBox()
        self.pooling.addItems(POOLINGS)
        self.aggregator = QComboBox()
        self.aggregator.addItems(AGGREGATORS)
        self.weighting = QComboBox()
        self.weighting.addItems(WEIGHTINGS)
        self.cmap = QComboBox()
        self.cmap.addItems(COLORMAPS)
        self.levels_mode = QComboBox()
        self.levels_mode.addItems(LEVEL_MODES)
        self.percentile = QDoubleSpinBox(decimals=1, minimum=50.0, maximum=100.0, value=99.0, suffix=" %")
        self.lo = QDoubleSpinBox(decimals=4, minimum=-1e6, maximum=1e6, value=0.0, singleStep=0.01)
        self.hi = QDoubleSpinBox(decimals=4, minimum=-1e6, maximum=1e6, value=1.0, singleStep=0.01)
        self.follow = QCheckBox("follow live")
        self.follow.setChecked(True)
        self.step.setMinimumWidth(120)
        for group in (labelled("view", self.mode), labelled("site", self.site), labelled("head", self.head),
                      labelled("token", self.token), labelled("pool", self.pooling),
                      labelled("aggr.", self.aggregator), labelled("weight", self.weighting),
                      labelled("cmap", self.cmap), labelled("levels", self.levels_mode, self.percentile),
                      labelled("", self.lo, self.hi), self.follow,
                      labelled("", self.step_label, self.step, grow=True)):
            controls.addWidget(group)
        lay.addWidget(box)
        self.plot, self.item = time_mel_plot(zoomable=True)
        self.hz_axis = HzAxis(self.plot)
        self.plot.setMenuEnabled(False)
        self.colorbar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.colormap.get("viridis"), interactive=False, width=12)
        self.colorbar.setImageItem(self.item, insert_in=self.plot.getPlotItem())
        self.play_line = cursor_line()  # the shared time cursor (playback position, click, drag)
        self.placeholder = no_run_placeholder(self.plot)
        bind_time_plot(workspace.time, self.plot, self.play_line)
        workspace.time.reset.connect(self._reset_frequency)
        lay.addWidget(self.plot, 1)
        self.readout = QLabel("–")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.readout)
        self.setWidget(body)
        self._mouse_proxy = pg.SignalProxy(self.plot.scene().sigMouseMoved, rateLimit=60, slot=self._on_mouse)
        self.mode.currentTextChanged.connect(self._on_controls)
        self.site.currentIndexChanged.connect(self._on_site)
        self.head.currentIndexChanged.connect(self._on_controls)
        self.token.currentIndexChanged.connect(self._on_controls)
        for combo in (self.pooling, self.aggregator, self.weighting):
            combo.currentTextChanged.connect(self._on_controls)
        self.follow.toggled.connect(self._on_controls)
        self.step.valueChanged.connect(self._on_step)
        self.cmap.currentTextChanged.connect(self._redraw_levels)
        self.levels_mode.currentTextChanged.connect(self._redraw_levels)
        for spin in (self.percentile, self.lo, self.hi):
            spin.valueChanged.connect(self._redraw_levels)
        workspace.currentChanged.connect(self._on_current)
        workspace.framesAdded.connect(self._on_frames)
        workspace.selectionChanged.connect(self.refresh)
        workspace.headMasksChanged.connect(self.refresh)
        workspace.runUpdated.connect(self._on_current)

    # ---- workspace → widgets ---------------------------------------------------------------
    @Slot()
    def _on_current(self) -> None:
        self._sync_lists()
        self.refresh()

    @Slot(object)
    def _on_frames(self, keys) -> None:
        self._sync_lists()

    def _sync_lists(self) -> None:
        run, sel = self.ws.current, self.ws.selection
        self._updating = True
        try:
            names = run.site_names if run else []
            if [self.site.itemData(i) for i in range(self.site.count())] != names:
                fill_site_combo(self.site, names)
            if sel.site:
                self.site.setCurrentIndex(self.site.findData(sel.site))
                self.site.setToolTip(sel.site)
            steps = run.steps if run else []
            self.step.setRange(min(steps, default=0), max(steps, default=0))
            self.step.setValue(sel.step)
            heads = 1
            if run and sel.site:
                probs = next((p for (s, n), p in run.frames.items() if n == sel.site), None)
                heads = probs.shape[0] if probs is not None else 1
            want_heads = ["mean"] + ([f"head {h}" for h in range(heads)] if heads > 1 else [])
            if [self.head.itemText(i) for i in range(self.head.count())] != want_heads:
                self.head.clear()
                self.head.addItems(want_heads)
            self.head.setCurrentIndex(0 if sel.head is None else sel.head + 1)
            toks = run.tokens_for(sel.site) if run and sel.site else []
            want_toks = ["all tokens"] + [f"{i}: {t}" for i, t in enumerate(toks)]
            if [self.token.itemText(i) for i in range(self.token.count())] != want_toks:
                self.token.clear()
                self.token.addItems(want_toks)
            self.token.setCurrentIndex(0 if not sel.tokens else sel.tokens[0] + 1)
            self.mode.setCurrentText(sel.mode)
            self.pooling.setCurrentText(sel.pooling)
            self.aggregator.setCurrentText(sel.aggregator)
            self.weighting.setCurrentText(sel.weighting)
            self.follow.setChecked(sel.follow_live)
        finally:
            self._updating = False

    # ---- widgets → workspace ---------------------------------------------------------------
    @Slot()
    def _on_controls(self, *_) -> None:
        if self._updating:
            return
        h = self.head.currentIndex()
        t = self.token.currentIndex()
        self.ws.select(
            mode=self.mode.currentText(),
            head=None if h <= 0 else h - 1,
            tokens=None if t <= 0 else (t - 1,),
            pooling=self.pooling.currentText(),
            aggregator=self.aggregator.currentText(),
            weighting=self.weighting.currentText(),
            follow_live=self.follow.isChecked(),
        )

    @Slot(int)
    def _on_site(self, index: int) -> None:
        name = self.site.itemData(index)
        if not self._updating and name:
            self.site.setToolTip(name)
            self.ws.select(site=name, head=None, tokens=None)

    @Slot(int)
    def _on_step(self, value: int) -> None:
        if not self._updating:
            self.ws.select(step=value, follow_live=False)

    # ---- drawing -----------------------------------------------------------------------------
    @Slot()
    def refresh(self) -> None:
        """Recompute the shown map from the workspace and repaint."""
        run, sel = self.ws.current, self.ws.selection
        self._sync_lists()
        total = run.request.steps if run else 0
        self.step_label.setText(f"step {sel.step + 1}/{total}" if run else "step –")
        if run is None:
            self.image_array = None
            self.item.clear()
            set_placeholder(self.plot, self.placeholder, True)
            return
        m = selected_map(run, sel, self.ws.head_masks, self.grid)
        if m is None:
            return
        set_placeholder(self.plot, self.placeholder, False)
        self.image_array = np.array(m, dtype=np.float32)  # own copy: what export writes
        self.image_array.setflags(write=False)
        self.updates += 1
        self.item.setImage(self.image_array, autoLevels=False, levels=self.levels())
        self.shown_key = (run.run_id, sel)
        n_rows = run.mel_spec.n_mels if run.mel_spec else self.grid[1]
        rect = QRectF(0.0, 0.0, run.duration(), float(n_rows))
        if rect != self.item.mapRectToParent(self.item.boundingRect()):  # a new run's extent
            self.item.setRect(rect)
            self.plot.getViewBox().setLimits(xMin=0.0, xMax=rect.width(), yMin=0.0, yMax=rect.height())
            self._reset_frequency()
        self.plot.setXRange(self.ws.time.start, self.ws.time.end, padding=0)
        if run.mel_spec is not None:
            self.hz_axis.set_bands(mel_centres_hz(run.mel_spec), n_rows)
        self._redraw_levels()
        self.mapChanged.emit()

    def levels(self) -> tuple[float, float]:
        a = self.image_array
        if a is None or a.size == 0:
            return (0.0, 1.0)
        mode = self.levels_mode.currentText()
        if mode == "manual":
            lo, hi = self.lo.value(), self.hi.value()
        elif mode == "percentile":
            p = self.percentile.value()
            lo, hi = float(np.percentile(a, 100.0 - p)), float(np.percentile(a, p))
        else:
            lo, hi = float(a.min()), float(a.max())
        if not hi > lo:
            hi = lo + 1e-6
        return (lo, hi)

    @Slot()
    def _redraw_levels(self, *_) -> None:
        lo, hi = self.levels()
        cmap = pg.colormap.get(self.cmap.currentText())
        self.colorbar.setColorMap(cmap)
        self.colorbar.setLevels((lo, hi))
        if self.image_array is not None:
            self.item.setLevels((lo, hi))

    def set_play_position(self, seconds: float) -> None:
        self.ws.time.set_cursor(seconds)

    @Slot()
    def _reset_frequency(self) -> None:
        """Show every mel band (the frequency half of "reset view")."""
        rect = self.item.mapRectToParent(self.item.boundingRect())
        if self.image_array is not None and rect.height() > 0:
            self.plot.setYRange(0.0, rect.height(), padding=0)

    @Slot(object)
    def _on_mouse(self, event) -> None:
        pos = event[0]
        run = self.ws.current
        if run is None or self.image_array is None or not self.plot.sceneBoundingRect().contains(pos):
            return
        p = self.plot.getPlotItem().vb.mapSceneToView(pos)
        self.readout.setText(self.describe(p.x(), p.y()))
        self.cursorMoved.emit(self.readout.text())

    def describe(self, t_s: float, y: float) -> str:
        """Read-out text at time ``t_s`` seconds and row coordinate ``y`` (mel-band units)."""
        run, sel, a = self.ws.current, self.ws.selection, self.image_array
        if run is None or a is None:
            return "–"
        n_rows = run.mel_spec.n_mels if run.mel_spec else a.shape[1]
        ti = int(np.clip(t_s / max(run.duration(), 1e-9) * a.shape[0], 0, a.shape[0] - 1))
        fi = int(np.clip(y / n_rows * a.shape[1], 0, a.shape[1] - 1))
        hz = "?"
        if run.mel_spec is not None:
            hz = f"{grid_centres_hz(run.mel_spec, a.shape[1])[fi]:.0f} Hz"
        head = "mean" if sel.head is None else str(sel.head)
        where = "aggregate" if sel.mode == "aggregate" else sel.site
        return f"t={t_s:.3f} s  f={hz}  value={a[ti, fi]:.4g}  site={where}  step={sel.step}  head={head}"

    # ---- view state ----------------------------------------------------------------------------
    def view_state(self) -> dict:
        return {
            "cmap": self.cmap.currentText(),
            "levels_mode": self.levels_mode.currentText(),
            "percentile": self.percentile.value(),
            "manual_levels": [self.lo.value(), self.hi.value()],
        }

    def apply_view_state(self, state: dict) -> None:
        self.cmap.setCurrentText(state.get("cmap", "viridis"))
        self.levels_mode.setCurrentText(state.get("levels_mode", "auto"))
        self.percentile.setValue(float(state.get("percentile", 99.0)))
        lo, hi = state.get("manual_levels", [0.0, 1.0])
        self.lo.setValue(float(lo))
        self.hi.setValue(float(hi))
        self._redraw_levels()
