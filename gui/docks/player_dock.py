"""Player: waveform and mel of the generated audio, play cursor, play/pause/loop/seek, A/B, band solo."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.analysis.band_solo import band_solo
from engine.types import EngineError
from gui.analysis_adapter import mel_centres_hz
from gui.audio_output import AudioOutput, NullOutput
from gui.docks.heatmap_dock import plain_axes
from gui.flow_layout import FlowLayout, labelled
from gui.hz_axis import HzAxis
from gui.mel_view import MelView
from gui.time_view import bind_time_plot, cursor_line
from gui.workspace import RunData, Workspace

POLL_MS = 30
MAX_CURVE_POINTS = 4000


def envelope(audio: np.ndarray, n: int = MAX_CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Min/max envelope of ``audio`` in at most ``n`` points (x in samples, y interleaved)."""
    a = np.asarray(audio, dtype=np.float32).reshape(-1)
    if a.size <= n:
        return np.arange(a.size, dtype=np.float64), a
    per = int(np.ceil(a.size / (n // 2)))
    pad = (-a.size) % per
    blocks = np.pad(a, (0, pad)).reshape(-1, per)
    y = np.empty(blocks.shape[0] * 2, dtype=np.float32)
    y[0::2], y[1::2] = blocks.min(axis=1), blocks.max(axis=1)
    return np.repeat(np.arange(blocks.shape[0]) * per, 2).astype(np.float64), y


class PlayerDock(QDockWidget):
    """Plays run A or B (or A's attended band); emits the audible position for the heatmap cursor."""

    positionChanged = Signal(float)
    playingChanged = Signal(bool)
    message = Signal(str)

    def __init__(self, workspace: Workspace, output: AudioOutput, parent=None) -> None:
        super().__init__("Player", parent)
        self.setObjectName("dock_player")
        self.ws = workspace
        self.output = output
        self.map_provider: Callable[[], np.ndarray | None] = lambda: None
        self.loaded_audio: np.ndarray | None = None
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(2, 2, 2, 2)
        box = QWidget()
        self.control_flow = row = FlowLayout(box, spacing=8)  # wraps onto more rows in a narrow dock
        self.play_button = QPushButton("Play")
        self.stop_button = QPushButton("Stop")
        self.loop = QCheckBox("loop")
        self.a_run = QComboBox()
        self.b_run = QComboBox()
        self.ab = QPushButton("A")
        self.ab.setCheckable(True)
        self.ab.setToolTip("switch between run A and run B")
        self.solo = QCheckBox("solo attended band")
        self.threshold = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=1.0, value=0.5, singleStep=0.05)
        self.threshold.setToolTip("keep cells whose normalised attention is at least this")
        self.time_label = QLabel("0.00 / 0.00 s")
        for group in (labelled("", self.play_button, self.stop_button, self.loop),
                      labelled("A", self.a_run), labelled("B", self.b_run, self.ab),
                      labelled("", self.solo, self.threshold), self.time_label):
            row.addWidget(group)
        lay.addWidget(box)
        self.wave = pg.PlotWidget()
        self.wave.setBackground("w")
        self.wave.setLabel("bottom", "time", units="s")
        self.wave.setMouseEnabled(x=True, y=False)
        self.wave.setMenuEnabled(False)
        self.wave.hideButtons()
        self.wave.setMaximumHeight(140)
        self.wave.getAxis("bottom").setStyle(showValues=False)  # the mel plot below shows the same time axis
        self.curve = self.wave.plot(pen=pg.mkPen("#246", width=1))
        self.mel_plot = pg.PlotWidget()
        self.mel_plot.setBackground("w")
        self.mel_plot.setMouseEnabled(x=True, y=True)
        self.mel_plot.setMenuEnabled(False)
        self.mel_plot.hideButtons()
        self.mel_plot.setLabel("bottom", "time", units="s")
        self.mel_plot.setLabel("left", "Hz (mel)")  # short: the plot can be short
        plain_axes(self.wave)
        self.wave.getAxis("bottom").showLabel(False)
        plain_axes(self.mel_plot)
        self.mel_item = pg.ImageItem(axisOrder="col-major")
        self.mel_item.setLookupTable(pg.colormap.get("magma").getLookupTable(nPts=256))
        self.mel_plot.addItem(self.mel_item)
        self.wave.setXRange(0.0, 1.0, padding=0)
        self.wave.setYRange(-1.0, 1.0, padding=0)
        self.mel_plot.setYRange(0.0, 1.0, padding=0)
        self.cursors = [cursor_line() for _ in range(2)]  # the shared time cursor in both plots
        bind_time_plot(workspace.time, self.wave, self.cursors[0])
        bind_time_plot(workspace.time, self.mel_plot, self.cursors[1])
        self.hz_axis = HzAxis(self.mel_plot)
        self._showing_position = False
        workspace.time.cursorChanged.connect(self._on_cursor)
        workspace.time.reset.connect(self._reset_frequency)
        lay.addWidget(self.wave, 1)  # a short dock shares its height 1 : 2 with the mel plot
        lay.addWidget(self.mel_plot, 2)
        self.setWidget(body)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.play_button.clicked.connect(self.toggle_play)
        self.stop_button.clicked.connect(self.stop)
        self.loop.toggled.connect(self._on_loop)
        self.ab.toggled.connect(self._on_source)
        self.a_run.currentIndexChanged.connect(self._on_source)
        self.b_run.currentIndexChanged.connect(self._on_source)
        self.solo.toggled.connect(self._on_source)
        self.threshold.valueChanged.connect(self._on_threshold)
        self._filling = False
        self._was_playing = False  # playingChanged fires on changes only
        workspace.historyChanged.connect(self._fill_runs)
        workspace.currentChanged.connect(self._on_current)
        workspace.runUpdated.connect(self._on_current)

    # ---- sources ---------------------------------------------------------------------------
    def _finished_runs(self) -> list[RunData]:
        return [r for r in self.ws.history if r.result is not None]

    @Slot()
    def _fill_runs(self) -> None:
        self._filling = True
        try:
            runs = self._finished_runs()
            labels = [f"#{r.run_id} seed {r.request.seed}" for r in runs]
            for combo in (self.a_run, self.b_run):
                keep = combo.currentData()
                combo.clear()
                for r, text in zip(runs, labels, strict=True):
                    combo.addItem(text, r.run_id)
                i = combo.findData(keep)
                combo.setCurrentIndex(i if i >= 0 else combo.count() - 1)
            if self.b_run.count() > 1 and self.b_run.currentData() == self.a_run.currentData():
                self.b_run.setCurrentIndex(self.b_run.count() - 2)
        finally:
            self._filling = False

    @Slot()
    def _on_current(self) -> None:
        self._fill_runs()
        run = self.ws.current
        if run is not None and run.result is not None:
            self._filling = True
            self.a_run.setCurrentIndex(self.a_run.findData(run.run_id))
            self.ab.setChecked(False)
            self._filling = False
            self._switch_source(at_boundary=self.loop.isChecked())  # a new run: no cut while looping

    def source_run(self) -> RunData | None:
        combo = self.b_run if self.ab.isChecked() else self.a_run
        run_id = combo.currentData()
        return self.ws.find(run_id) if run_id is not None else None

    def source_audio(self) -> tuple[np.ndarray, int] | None:
        """The audio that Play plays now: run A or B, band-soloed when asked."""
        run = self.source_run()
        if run is None or run.result is None:
            return None
        audio, sr = np.asarray(run.result.audio, dtype=np.float32).reshape(-1), run.result.sample_rate
        if self.solo.isChecked():
            tf_map = self.map_provider()
            if tf_map is None or run.mel_spec is None:
                self.message.emit("solo needs a heatmap and the model's mel definition")
            else:
                try:
                    audio = band_solo(audio, sr, tf_map, run.mel_spec, threshold=self.threshold.value())
                except EngineError as exc:
                    self.message.emit(str(exc))
        return audio, sr

    @Slot()
    def _on_source(self, *_) -> None:
        self._switch_source(at_boundary=False)

    def _switch_source(self, at_boundary: bool) -> None:
        """Play the chosen source: while playing, without a stop (at the loop boundary, or in
        place); else loaded at the current position."""
        if self._filling:
            return
        self.ab.setText("B" if self.ab.isChecked() else "A")
        src = self.source_audio()
        if src is None:
            return
        if self.output.is_playing():
            self.play_clip(*src, at_boundary, self._source_mel())
            return
        was_playing = self.output.is_playing()
        pos = self.output.position()
        self.load(*src)
        self.output.seek(min(pos, self.output.duration))
        if was_playing:
            self.output.play()

    @Slot()
    def _on_threshold(self, *_) -> None:
        if self.solo.isChecked():
            self._on_source()

    def refresh_solo(self) -> None:
        """The heatmap changed: refilter when soloing."""
        if self.solo.isChecked():
            self._on_source()

    def play_clip(self, audio: np.ndarray, sample_rate: int, at_boundary: bool,
                  mel: MelView | None = None) -> None:
        """Play ``audio`` (a steering preview, a prefetched render, or a run's) without stopping:
        at the loop boundary or in place; from its start when nothing plays. ``mel`` is the mel
        shown under it (default: the log-mel of ``audio`` with the source run's mel definition)."""
        try:
            swapped = self.output.swap(audio, sample_rate, at_boundary)
        except Exception:  # the device refused a stream for a new sample rate: load() falls back
            self.load(audio, sample_rate)
            swapped = False
        if not swapped and not self.output.is_playing():
            self.output.play()
        self._show_audio(audio, sample_rate, mel)
        self._sync_button()

    def show_pair(self, a_id: int, b_id: int, at_boundary: bool) -> None:
        """A = run ``a_id``, B = run ``b_id``, switched to B and playing (without a stop)."""
        self._filling = True
        try:
            for combo, run_id in ((self.a_run, a_id), (self.b_run, b_id)):
                i = combo.findData(run_id)
                if i >= 0:
                    combo.setCurrentIndex(i)
            self.ab.setChecked(True)
        finally:
            self._filling = False
        self.ab.setText("B")
        src = self.source_audio()
        if src is not None:
            self.play_clip(*src, at_boundary, self._source_mel())

    def load(self, audio: np.ndarray, sample_rate: int) -> None:
        try:
            self.output.load(audio, sample_rate)
        except Exception as exc:  # device refused the stream: fall back to silence
            self.message.emit(f"audio output failed ({exc}); playing silently")
            self.output = NullOutput()
            self.output.load(audio, sample_rate)
        self.output.set_loop(self.loop.isChecked())
        self._show_audio(audio, sample_rate, self._source_mel())

    def _source_mel(self) -> MelView:
        """The mel of the source run: the model's own, or (None) the audio's with its definition.
        Band-soloed audio is shown as it sounds (its own log-mel)."""
        run = self.source_run()
        if run is None or run.result is None:
            return MelView(None, None)
        soloed = self.solo.isChecked()
        return MelView(None if soloed else run.result.mel, run.mel_spec)

    def _show_audio(self, audio: np.ndarray, sample_rate: int, mel: MelView | None) -> None:
        """Draw ``audio``'s waveform, its mel (``mel``'s image, or the log-mel of ``audio`` computed
        with ``mel``'s definition; blank without either: never an earlier clip's) and the position."""
        self.loaded_audio = np.asarray(audio, dtype=np.float32)
        x, y = envelope(audio)
        self.curve.setData(x / sample_rate, y)
        duration = len(audio) / sample_rate
        image = None if mel is None else mel.image(self.loaded_audio, sample_rate)
        if image is None:
            self.mel_item.clear()
            self.hz_axis.set_bands(None)
        else:
            n = float(image.shape[1])
            self.mel_item.setImage(image, autoLevels=False, levels=(float(image.min()), float(image.max()) + 1e-9))
            self.mel_item.setRect(QRectF(0.0, 0.0, duration, n))
            self.mel_plot.getViewBox().setLimits(yMin=0.0, yMax=n)
            self.mel_plot.setYRange(0.0, n, padding=0)
            self.hz_axis.set_bands(None if mel.spec is None else mel_centres_hz(mel.spec), image.shape[1])
        self.ws.time.set_duration(duration)
        self.wave.setXRange(self.ws.time.start, self.ws.time.end, padding=0)
        peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
        self.wave.setYRange(-peak if peak > 0 else -1.0, peak if peak > 0 else 1.0, padding=0.05)
        self._show_position(self.output.position())

    # ---- transport ---------------------------------------------------------------------------
    @Slot()
    def toggle_play(self) -> None:
        if self.output.duration == 0:
            self._on_source()
        if self.output.is_playing():
            self.output.pause()
        else:
            self.output.play()
        self._sync_button()

    @Slot()
    def stop(self) -> None:
        self.output.stop()
        self._sync_button()
        self._show_position(0.0)

    def seek(self, seconds: float) -> None:
        self.output.seek(seconds)
        self._show_position(self.output.position())

    @Slot(bool)
    def _on_loop(self, on: bool) -> None:
        self.output.set_loop(on)

    def _sync_button(self) -> None:
        playing = self.output.is_playing()
        self.play_button.setText("Pause" if playing else "Play")
        if playing:
            self.timer.start()
        else:
            self.timer.stop()
        if playing != self._was_playing:
            self._was_playing = playing
            self.playingChanged.emit(playing)

    @Slot()
    def poll(self) -> None:
        self._show_position(self.output.position())
        if not self.output.is_playing():
            self._sync_button()

    def _show_position(self, seconds: float) -> None:
        self._showing_position = True
        try:
            self.ws.time.set_cursor(seconds)  # moves the cursor of every time plot
        finally:
            self._showing_position = False
        self.time_label.setText(f"{seconds:.2f} / {self.output.duration:.2f} s")
        self.positionChanged.emit(seconds)

    @Slot(float)
    def _on_cursor(self, seconds: float) -> None:
        """The cursor was set by a click or a drag in any time plot: play from there."""
        if not self._showing_position and self.output.duration:
            self.output.seek(min(seconds, self.output.duration))
            self.time_label.setText(f"{self.output.position():.2f} / {self.output.duration:.2f} s")
            self.positionChanged.emit(self.output.position())

    @Slot()
    def _reset_frequency(self) -> None:
        rect = self.mel_item.mapRectToParent(self.mel_item.boundingRect())
        if rect.height() > 0:
            self.mel_plot.setYRange(0.0, rect.height(), padding=0)

    def close_output(self) -> None:
        self.timer.stop()
        self.output.close()
