"""The workstation window: docks, menus and shortcuts, engine wiring, sessions, export, autosave."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QByteArray, QEventLoop, QStandardPaths, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QTabBar,
)

from engine.backends.base import RunResult
from engine.session import SESSION_SUFFIX, Session, load_session, save_session
from engine.types import EngineError, GenerationRequest
from gui import export
from gui.audio_output import AudioOutput, make_output
from gui.docks.commands_dock import CommandsDock
from gui.docks.convergence_dock import ConvergenceDock
from gui.docks.heads_dock import HeadsDock
from gui.docks.heatmap_dock import HeatmapDock
from gui.docks.log_dock import LogDock
from gui.docks.metrics_dock import MetricsDock
from gui.docks.overview_dock import OverviewDock
from gui.docks.patching_dock import PatchingDock
from gui.docks.player_dock import PlayerDock
from gui.docks.run_dock import RunDock
from gui.docks.sae_dock import SAEDock
from gui.docks.steering_dock import SteeringDock
from gui.engine_thread import EngineBridge, ModelInfo
from gui.file_dialogs import open_file_dialog
from gui.preferences_dialog import PreferencesDialog
from gui.session_view import keep_floating_docks_on_screen, session_view
from gui.settings import (
    LAYOUT_VERSION,
    add_recent,
    load_preferences,
    read_session_layout,
    recent_files,
    restore_layout,
    save_layout,
    save_preferences,
    session_layout,
)
from gui.steer_listen import SteerListenController
from gui.workspace import RunData, Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActionSpec:
    """One entry of the action table: menu, id, title, shortcut, handler name."""

    menu: str
    id: str
    title: str
    shortcut: str
    handler: str


ACTIONS = (
    ActionSpec("File", "open_session", "&Open session…", "Ctrl+O", "open_session_dialog"),
    ActionSpec("File", "save_session", "&Save session", "Ctrl+S", "save_session_action"),
    ActionSpec("File", "save_session_as", "Save session &as…", "Ctrl+Shift+S", "save_session_as"),
    ActionSpec("File", "export", "&Export…", "Ctrl+E", "export_dialog"),
    ActionSpec("File", "preferences", "&Preferences…", "Ctrl+,", "show_preferences"),
    ActionSpec("File", "quit", "&Quit", "Ctrl+Q", "close"),
    ActionSpec("Run", "generate", "&Generate", "Ctrl+G", "generate_from_panel"),
    ActionSpec("Run", "cancel", "&Cancel run", "Esc", "cancel_run"),
    ActionSpec("Navigate", "play", "&Play / pause", "Space", "play_pause"),
    ActionSpec("Navigate", "step_back", "Previous step", "Left", "step_back"),
    ActionSpec("Navigate", "step_fwd", "Next step", "Right", "step_forward"),
    ActionSpec("Navigate", "site_up", "Previous site", "Up", "site_up"),
    ActionSpec("Navigate", "site_down", "Next site", "Down", "site_down"),
    ActionSpec("Navigate", "reset_view", "Reset &zoom (heatmap, overview, player)", "Ctrl+0", "reset_zoom"),
    ActionSpec("Help", "shortcuts", "&Keyboard shortcuts", "F1", "show_shortcuts"),
    ActionSpec("Help", "about", "&About", "", "show_about"),
)


def _unless_named(path: str | Path, exc: Exception) -> str:
    """``" <file name>"`` to add to a message about ``path`` when ``exc`` does not name it, else ``""``."""
    name = Path(path).name
    return "" if name in str(exc) else f" {name}"


def _scrollable(dock: QDockWidget) -> None:
    """Put the dock's body in a frameless, resizable scroll area, so that a small screen scrolls
    the dock instead of forcing the window wider or taller than the screen."""
    area = QScrollArea(dock)
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setWidget(dock.widget())
    dock.setWidget(area)


def autosave_path() -> Path:
    base = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation))
    base.mkdir(parents=True, exist_ok=True)
    return base / f"autosave{SESSION_SUFFIX}"


class MainWindow(QMainWindow):
    """QMainWindow with the dock panels around nothing: every view is a dock."""

    def __init__(self, model: str = "embedded", output: AudioOutput | None = None) -> None:
        super().__init__()
        self.setObjectName("aiba_main_window")
        self.setWindowTitle("AIBA Studio")
        self._fit_to_screen()
        self.setDockNestingEnabled(True)
        self.prefs = load_preferences()
        self.session_layout_state: QByteArray | None = None  # the dock layout of the session opened last
        self.workspace = Workspace(self)
        self.bridge = EngineBridge(self)
        note = ""
        if output is None:
            output, note = make_output(self.prefs.audio_output)
        self.session_path: Path | None = None
        self.run_dock = RunDock(self)
        self.run_dock.model.setCurrentText(model)
        self.run_dock.memory_budget_mb = self.prefs.memory_budget_mb
        if self.run_dock.device.findText(self.prefs.device) >= 0:
            self.run_dock.device.setCurrentText(self.prefs.device)
        self.heatmap = HeatmapDock(self.workspace, parent=self)
        self.heatmap.cmap.setCurrentText(self.prefs.colormap)
        self.overview = OverviewDock(self.workspace, self)
        self.heads = HeadsDock(self.workspace, self)
        self.player = PlayerDock(self.workspace, output, self)
        self.metrics = MetricsDock(self.workspace, self)
        self.log_dock = LogDock(self.workspace, self)
        self.player.map_provider = self.shown_map
        self.metrics.map_provider = self.shown_map
        self.steering = SteeringDock(self)
        self.patching = PatchingDock(self)
        self.sae = SAEDock(self)
        self.convergence = ConvergenceDock(self)
        self.commands = CommandsDock(self)
        for dock in (self.steering, self.patching, self.sae, self.convergence):
            dock.recipe = self.panel_recipe
        self.convergence.current_result = lambda: self.workspace.current.result if self.workspace.current else None
        self.run_dock.request_providers += [self.steering.request_fields, self.convergence.request_fields,
                                            self.heads.request_fields]
        self.docks: list[QDockWidget] = [
            self.run_dock, self.heatmap, self.overview, self.heads, self.player, self.metrics, self.log_dock,
            self.steering, self.patching, self.sae, self.convergence, self.commands,
        ]
        self._place_docks()
        self.default_state = self.saveState()
        self._build_menus()
        self._build_status()
        self._wire()
        restore_layout(self)
        self.autosave_timer = QTimer(self)
        self.autosave_timer.timeout.connect(self.autosave)
        self._apply_autosave()
        self._error_box: QMessageBox | None = None
        self._shown_before_run: RunData | None = None
        self.log("AIBA Studio ready; " + (note or f"audio: {output.name}"))

    # ---- construction ------------------------------------------------------------------------
    def _place_docks(self) -> None:
        features = (
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        for dock in self.docks:
            dock.setFeatures(features)
        left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        for dock in self.docks:
            _scrollable(dock)
        # left: Run over Heads; centre: heatmap over Player; right: analysis tabs over Steering;
        # Log / Commands tabbed under the right column. Everything shrinks (scroll areas).
        self.addDockWidget(left, self.run_dock)
        self.addDockWidget(right, self.heatmap)
        self.splitDockWidget(self.run_dock, self.heatmap, Qt.Orientation.Horizontal)
        self.splitDockWidget(self.heatmap, self.overview, Qt.Orientation.Horizontal)
        self.splitDockWidget(self.run_dock, self.heads, Qt.Orientation.Vertical)
        self.splitDockWidget(self.heatmap, self.player, Qt.Orientation.Vertical)
        self.splitDockWidget(self.overview, self.steering, Qt.Orientation.Vertical)
        self.splitDockWidget(self.steering, self.log_dock, Qt.Orientation.Vertical)
        self.tabifyDockWidget(self.log_dock, self.commands)
        tabs = (self.overview, self.metrics, self.patching, self.sae, self.convergence)
        for first, second in zip(tabs, tabs[1:], strict=False):
            self.tabifyDockWidget(first, second)
        for dock in (self.overview, self.log_dock, self.heads, self.steering):
            dock.raise_()
        width, height = self.width(), self.height()
        self.resizeDocks([self.run_dock, self.heatmap, self.overview],
                         [int(width * 0.22), int(width * 0.48), int(width * 0.30)], Qt.Orientation.Horizontal)
        self.resizeDocks([self.heatmap, self.player], [int(height * 0.62), int(height * 0.38)], Qt.Orientation.Vertical)
        self.resizeDocks([self.run_dock, self.heads], [int(height * 0.55), int(height * 0.45)], Qt.Orientation.Vertical)
        self.resizeDocks([self.overview, self.steering, self.log_dock],
                         [int(height * 0.34), int(height * 0.40), int(height * 0.26)], Qt.Orientation.Vertical)
        self._hide_stale_tab_bars()

    def _hide_stale_tab_bars(self) -> None:
        """Building the tab groups before the window is shown can leave a group's earlier, smaller
        tab bar on screen, unmanaged, over another dock (seen with Qt 6.12, also in the old layout):
        hide every bar whose tabs are a prefix of another bar's."""
        bars = [b for b in self.findChildren(QTabBar) if b.parent() is self]
        texts = {b: [b.tabText(i) for i in range(b.count())] for b in bars}
        for bar in bars:
            if any(o is not bar and len(texts[o]) > len(texts[bar]) and texts[o][:len(texts[bar])] == texts[bar]
                   for o in bars):
                bar.hide()

    def _fit_to_screen(self) -> None:
        """First-run size: 1500×950, or 94 % of the screen's available area when that is smaller."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            self.resize(1500, 950)
            return
        area = screen.availableGeometry()
        self.resize(min(1500, int(area.width() * 0.94)), min(950, int(area.height() * 0.94)))

    def _build_menus(self) -> None:
        self.actions_by_id: dict[str, QAction] = {}
        menus = {}
        for spec in ACTIONS:
            if spec.menu not in menus:
                menus[spec.menu] = self.menuBar().addMenu(f"&{spec.menu}")
            action = QAction(spec.title, self)
            if spec.shortcut:
                action.setShortcut(QKeySequence(spec.shortcut))
            action.triggered.connect(getattr(self, spec.handler))
            menus[spec.menu].addAction(action)
            self.addAction(action)
            self.actions_by_id[spec.id] = action
        self.recent_menu = menus["File"].addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        view = self.menuBar().addMenu("&View")
        for dock in self.docks:
            view.addAction(dock.toggleViewAction())
        view.addSeparator()
        reset = QAction("&Reset layout", self)
        reset.triggered.connect(self.reset_layout)
        view.addAction(reset)
        self.actions_by_id["reset_layout"] = reset
        apply = QAction("Apply the session's &layout", self)
        apply.setToolTip("the dock layout saved with the session opened last")
        apply.setEnabled(False)
        apply.triggered.connect(self.apply_session_layout)
        view.addAction(apply)
        self.actions_by_id["apply_session_layout"] = apply
        self.menuBar().insertMenu(menus["Help"].menuAction(), view)

    def _build_status(self) -> None:
        self.status_label = QLabel("idle")
        self.status_progress = QProgressBar()
        self.status_progress.setMaximumWidth(200)
        self.status_progress.setRange(0, 1)
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.status_progress)

    def _wire(self) -> None:
        b = self.bridge
        b.modelLoaded.connect(self._on_model_loaded)
        b.modelFailed.connect(self._on_model_failed)
        b.runStarted.connect(self._on_run_started)
        b.framesReady.connect(self._on_frames)
        b.stepDone.connect(self._on_step)
        b.runFinished.connect(self._on_finished)
        b.runFailed.connect(self._on_failed)
        b.runCancelled.connect(self._on_cancelled)
        b.busyChanged.connect(self.run_dock.set_busy)
        self.run_dock.cancelRequested.connect(self.cancel_run)
        self.log_dock.reopenRequested.connect(self.reopen_run)
        self.heatmap.mapChanged.connect(self.metrics.refresh)
        self.heatmap.mapChanged.connect(self.player.refresh_solo)
        self.heatmap.cursorMoved.connect(self.statusBar().showMessage)
        self.player.positionChanged.connect(self.heatmap.set_play_position)
        self.player.message.connect(self.log)
        self._wire_intervention_docks()

    def _wire_intervention_docks(self) -> None:
        """Steering / patching / SAE / convergence: jobs, cross-dock links, steer-and-listen."""
        b = self.bridge
        for dock in (self.steering, self.sae):
            b.modelLoaded.connect(dock.set_model_sites)
        self.commands.wrote.connect(self.log)
        for jobs in (self.steering.job, self.patching.job, self.sae.job, self.convergence.job,
                     self.convergence.sweep_job, self.commands.job):
            jobs.attach(b)
            jobs.failed.connect(self.show_error)
        b.jobStarted.connect(self._on_job_started)
        for sig in (b.jobFinished, b.jobFailed, b.jobCancelled):
            sig.connect(self._on_job_ended)
        self.patching.layerClicked.connect(self.steering.select_layer)
        self.patching.functionalLayers.connect(self.steering.set_functional_layers)
        self.sae.vectorsReady.connect(self.steering.add_vectors)
        self.steering.message.connect(self.log)
        self.convergence.message.connect(self.log)
        # steer and listen, and the masked-vs-unmasked A/B of Generate (after the run handlers above)
        self.listen = SteerListenController(b, self.workspace, self.player, self.steering, self.panel_recipe,
                                            self.generate, self)
        self.listen.message.connect(self.log)
        self.run_dock.generateRequested.connect(self.listen.generate_requested)

    # ---- messages ------------------------------------------------------------------------------
    @Slot(str)
    def log(self, message: str) -> None:
        self.log_dock.log(message)
        self.status_label.setText(message)

    def show_error(self, message: str) -> None:
        """Status bar + log + one non-modal message box (reused), never blocking."""
        self.log_dock.log(message, "error")
        self.status_label.setText(f"error: {message}")
        self.run_dock.show_error(message)
        if self._error_box is None:
            self._error_box = QMessageBox(QMessageBox.Icon.Warning, "AIBA Studio", message, parent=self)
            self._error_box.setModal(False)
            self._error_box.setWindowModality(Qt.WindowModality.NonModal)
        self._error_box.setText(message)
        self._error_box.show()

    # ---- runs ----------------------------------------------------------------------------------
    def shown_map(self):
        return self.heatmap.image_array

    @Slot()
    def generate_from_panel(self) -> None:
        self.run_dock.request_generate()

    @Slot(str, str, object)
    def generate(self, model: str, device: str, request: GenerationRequest) -> int | None:
        try:
            run_id = self.bridge.generate(model, device, request)
        except EngineError as exc:
            self.show_error(str(exc))
            return None
        self._shown_before_run = self.workspace.current  # shown again if this run fails
        run = RunData(run_id, model, device, request, status="running")
        self.workspace.add_run(run)
        self.status_progress.setRange(0, request.steps)
        self.status_progress.setValue(0)
        self.log(f"run #{run_id}: {model} on {device}, {request.steps} steps, “{request.prompt}”")
        return run_id

    def panel_recipe(self) -> tuple[str, str, GenerationRequest | None]:
        """Model, device and the Run panel's request (None after showing what is wrong), read from
        the panel's settings model (the engine's recipe)."""
        request = self.run_dock.build_request()
        recipe = self.run_dock.settings.recipe
        return recipe.model, recipe.device, request

    @Slot(int, str)
    def _on_job_started(self, job_id: int, name: str) -> None:
        self.log(f"job #{job_id}: {name}")

    @Slot()
    def _on_job_ended(self, *_) -> None:
        self.run_dock.progress.setRange(0, 1)
        self.run_dock.message.setText("ready")

    @Slot()
    def cancel_run(self) -> None:
        if self.bridge.cancel():
            self.log("cancelling…")

    @Slot(object)
    def _on_model_loaded(self, info: ModelInfo) -> None:
        self.log(f"loaded {info.model} ({info.family}, {len(info.sites)} attention sites) on {info.device} in {info.load_s:.1f} s")

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self.show_error(message)

    @Slot(int, object)
    def _on_run_started(self, run_id: int, info: dict) -> None:
        run = self.workspace.find(run_id)
        if run is None:
            return
        run.sites = list(info.get("sites", []))
        run.tokens = dict(info.get("tokens", {}))
        run.mel_spec = info.get("mel_spec")
        run.status = "running"
        self.run_dock.message.setText("denoising…")
        self.workspace.update_run(run)

    @Slot(int, object)
    def _on_frames(self, run_id: int, frames) -> None:
        self.workspace.add_frames(run_id, frames)

    @Slot(object)
    def _on_step(self, info) -> None:
        run = self.workspace.find(info.run_id)
        if run is not None:
            run.steps_done = info.step + 1
        self.run_dock.set_progress(info.step + 1, info.total)
        self.status_progress.setRange(0, info.total)
        self.status_progress.setValue(info.step + 1)

    @Slot(object)
    def _on_finished(self, result: RunResult) -> None:
        run = self.workspace.find(result.run_id)
        if run is None:
            return
        run.apply_result(result)
        self.workspace.update_run(run)
        for w in result.warnings:
            self.log_dock.log(w, "warn")
        self.run_dock.message.setText(f"done in {result.elapsed_s:.1f} s")
        self.log(f"run #{result.run_id} done: {len(result.audio) / result.sample_rate:.2f} s of audio, {len(result.frames)} frames, {result.elapsed_s:.1f} s")

    @Slot(int, str)
    def _on_failed(self, run_id: int, message: str) -> None:
        """The failed run stays in the history (marked failed); the run shown before it is shown
        again (maps, sites, A/B lists together), the progress goes idle, the error shows once."""
        run = self.workspace.find(run_id)
        if run is not None:
            run.status, run.message = "failed", message
            self.workspace.update_run(run)
            previous = self._shown_before_run
            if run is self.workspace.current and any(r is previous for r in self.workspace.history):
                self.workspace.set_current(previous)  # its maps, sites and A/B stay shown, consistently
        self.run_dock.set_idle()
        self.status_progress.setRange(0, 1)
        self.status_progress.setValue(0)
        self.show_error(message)

    @Slot(int)
    def _on_cancelled(self, run_id: int) -> None:
        run = self.workspace.find(run_id)
        if run is not None:
            run.status = "cancelled"
            self.workspace.update_run(run)
        self.run_dock.progress.setRange(0, 1)
        self.run_dock.message.setText("cancelled")
        self.status_progress.setRange(0, 1)
        self.log(f"run #{run_id} cancelled")

    @Slot(int)
    def reopen_run(self, run_id: int) -> None:
        run = self.workspace.find(run_id)
        if run is not None and run is not self.workspace.current:
            self.workspace.set_current(run)
            self.run_dock.set_request(run.model, run.device, run.request)
            self.log(f"reopened run #{run_id}")

    # ---- navigation --------------------------------------------------------------------------------
    @Slot()
    def play_pause(self) -> None:
        self.player.toggle_play()

    @Slot()
    def step_back(self) -> None:
        self.workspace.step_by(-1)

    @Slot()
    def step_forward(self) -> None:
        self.workspace.step_by(1)

    @Slot()
    def site_up(self) -> None:
        self.workspace.site_by(-1)

    @Slot()
    def site_down(self) -> None:
        self.workspace.site_by(1)

    @Slot()
    def reset_zoom(self) -> None:
        """The whole run again in every time plot (and each plot's full frequency / site range)."""
        self.workspace.time.reset_view()

    # ---- sessions ----------------------------------------------------------------------------------
    def current_session(self) -> Session:
        run = self.workspace.current
        if run is None:
            request = self.run_dock.build_request()
            if request is None:
                raise EngineError("nothing to save: fix the Run fields or generate first")
            model, device, result = self.run_dock.settings.recipe.model, self.run_dock.settings.recipe.device, None
        else:
            request, model, device, result = run.request, run.model, run.device, run.result
        t = self.workspace.time
        view = {"selection": self.workspace.selection.to_dict(), "heatmap": self.heatmap.view_state(),
                "time": {"start": t.start, "end": t.end, "cursor": t.cursor}, "layout": session_layout(self)}
        return Session(model, device, request, dict(self.workspace.head_masks), view, result)

    def save_session_to(self, path: str | Path, include_arrays: bool = True) -> Path:
        written = save_session(path, self.current_session(), include_arrays)
        self.session_path = written
        add_recent(str(written))
        self.log(f"saved session {written}")
        return written

    def open_session(self, path: str | Path) -> Session:
        """Load a session and show it exactly as saved. The file is read and checked before the
        window changes: a damaged one raises EngineError and leaves the window as it was."""
        session = load_session(path)
        name = Path(path).name
        try:
            session.request.validate()
        except EngineError as exc:
            raise EngineError(f"{name}: the saved recipe is not valid: {exc}") from exc
        selection, heatmap_state, time_state = session_view(session.view, name)
        layout = read_session_layout(session.view.get("layout"), name)
        masks = session.head_masks
        if not isinstance(masks, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(b, bool) for b in v)
                for k, v in masks.items()):
            raise EngineError(f"{name}: the saved head masks are damaged: save the session again")
        run = None
        if session.result is not None:
            if self.workspace.find(session.result.run_id) is not None:  # keep ids unique
                session.result.run_id = max(r.run_id for r in self.workspace.history) + 1000
            run = RunData.from_result(session.result, session.model, session.device, session.request)
        self.run_dock.set_request(session.model, session.device, session.request)
        if run is not None:
            self.workspace.add_run(run)
            self.bridge.reserve_run_ids(run.run_id)  # the next generation must not reuse (and replace) it
        self.workspace.set_head_masks(masks)
        if selection is not None:
            self.workspace.selection = selection
            self.workspace.selectionChanged.emit()
        self.heatmap.apply_view_state(heatmap_state)
        if {"start", "end"} <= time_state.keys():  # the zoom (sessions before it had none)
            self.workspace.time.set_range(time_state["start"], time_state["end"])
        if "cursor" in time_state:
            self.workspace.time.set_cursor(time_state["cursor"])
        self.session_path = Path(path)
        add_recent(str(path))
        self.log(f"opened session {path}")
        self.session_layout_state = layout
        self.actions_by_id["apply_session_layout"].setEnabled(layout is not None)
        if layout is not None and self.prefs.session_layout:
            self.apply_session_layout()
        elif session.view.get("layout") is not None and layout is None:
            self.log("the session's dock layout is from an earlier window version: the current layout is kept")
        return session

    @Slot()
    def save_session_action(self) -> None:
        if self.session_path is None:
            self.save_session_as()
            return
        try:
            self.save_session_to(self.session_path)
        except (EngineError, OSError, TypeError) as exc:
            self.show_error(f"could not save the session: {exc}")

    @Slot()
    def save_session_as(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save session", "", f"AIBA session (*{SESSION_SUFFIX})")
        if path:
            try:
                self.save_session_to(path)
            except (EngineError, OSError, TypeError) as exc:
                self.show_error(f"could not save the session: {exc}")

    @Slot()
    def open_session_dialog(self) -> QFileDialog:
        """File ▸ Open session: a non-blocking dialog; the chosen file opens through ``_open_guarded``."""
        return open_file_dialog(self, "Open session", f"AIBA session (*{SESSION_SUFFIX})", self._open_guarded)

    def _open_guarded(self, path: str) -> Session | None:
        """Open a session for the user (dialog, recent files): a file that cannot be opened is one
        error message (status bar, log, non-modal box) and the window stays as it was."""
        try:
            return self.open_session(path)
        except (EngineError, OSError) as exc:
            self.show_error(f"could not open the session{_unless_named(path, exc)}: {exc}")
        except Exception as exc:  # a bug, or a loader breaking its EngineError contract: report, never die
            log.exception("opening the session %s failed", path)
            self.show_error(f"could not open the session {Path(path).name}: unexpected {type(exc).__name__}: {exc}")
        return None

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in recent_files():
            action = self.recent_menu.addAction(path)
            action.setData(path)
            action.triggered.connect(self._open_recent)
        if not self.recent_menu.actions():
            self.recent_menu.addAction("(none)").setEnabled(False)

    @Slot()
    def _open_recent(self) -> None:
        action = self.sender()
        if isinstance(action, QAction) and action.data():
            self._open_guarded(str(action.data()))

    @Slot()
    def autosave(self) -> Path | None:
        if self.workspace.current is None or self.bridge.busy:
            return None
        try:
            path = save_session(autosave_path(), self.current_session(), include_arrays=True)
        except (EngineError, OSError, TypeError) as exc:
            self.log_dock.log(f"autosave failed: {exc}", "warn")
            return None
        self.log_dock.log(f"autosaved to {path}")
        return path

    def _apply_autosave(self) -> None:
        minutes = self.prefs.autosave_minutes
        if minutes > 0:
            self.autosave_timer.start(int(minutes * 60_000))
        else:
            self.autosave_timer.stop()

    # ---- export ---------------------------------------------------------------------------------------
    def export_to(self, path: str | Path) -> Path:
        """Export by file type: .png/.svg/.pdf the heatmap figure, .csv/.npz data, .wav/.flac audio.

        With a map shown, the figure is the publication renderer's (title, Hz axis, colour bar) of
        exactly that map, at the dock's size in pixels; before that, a grab of the dock."""
        suffix = Path(path).suffix.lower()
        run = self.workspace.current
        shown = self.heatmap.image_array
        if suffix in (".png", ".svg", ".pdf") and run is not None and shown is not None and run.mel_spec is not None:
            body = self.heatmap.widget()
            return export.export_figure(run, self.workspace.selection, shown, path,
                                        size_px=(body.width(), body.height()), cmap=self.heatmap.cmap.currentText(),
                                        levels=self.heatmap.levels(), head_masks=self.workspace.head_masks)
        if suffix == ".png":
            return export.export_png(self.heatmap.widget(), path)
        if suffix == ".svg":
            return export.export_svg(self.heatmap.widget(), path)
        if suffix == ".pdf":
            raise EngineError("no map is shown yet: wait for the first step to export a PDF figure")
        if run is None:
            raise EngineError("nothing to export yet: generate a run first")
        if suffix == ".csv":
            if self.heatmap.image_array is None:
                raise EngineError("no map is shown: wait for the first step")
            return export.export_csv(run, self.heatmap.image_array, path)
        if suffix == ".npz":
            return export.export_npz(run, self.heatmap.image_array, path)
        if suffix in (".wav", ".flac"):
            if run.result is None:
                raise EngineError("the run has no audio yet: wait for it to finish")
            src = self.player.source_audio() if self.player.solo.isChecked() else None
            audio, sr = src if src is not None else (run.result.audio, run.result.sample_rate)
            return export.export_audio(audio, sr, path)
        raise EngineError(f"cannot export {Path(path).name}: use .png, .svg, .pdf, .csv, .npz, .wav or .flac")

    @Slot()
    def export_dialog(self) -> None:
        filters = "PNG figure (*.png);;SVG figure (*.svg);;PDF figure (*.pdf);;CSV map (*.csv);;NPZ data (*.npz);;WAV audio (*.wav);;FLAC audio (*.flac)"
        path, _ = QFileDialog.getSaveFileName(self, "Export", "", filters)
        if path:
            try:
                written = self.export_to(path)
                self.log(f"exported {written}")
            except (EngineError, OSError) as exc:
                self.show_error(str(exc))

    # ---- dialogs / layout -------------------------------------------------------------------------------
    @Slot()
    def show_preferences(self) -> None:
        dialog = PreferencesDialog(self.prefs, self)
        if dialog.exec():
            self.apply_preferences(dialog.preferences())

    def apply_preferences(self, prefs) -> None:
        errors = prefs.validate()
        if errors:
            self.show_error("; ".join(errors))
            return
        self.prefs = prefs
        save_preferences(prefs)
        if self.run_dock.device.findText(prefs.device) >= 0:
            self.run_dock.device.setCurrentText(prefs.device)
        self.run_dock.memory_budget_mb = prefs.memory_budget_mb
        self.heatmap.cmap.setCurrentText(prefs.colormap)
        if prefs.audio_output != self.player.output.name and prefs.audio_output != "auto":
            self.player.close_output()
            self.player.output, note = make_output(prefs.audio_output)
            self.log(f"audio: {note}")
        self._apply_autosave()

    @Slot()
    def show_shortcuts(self) -> None:
        lines = [f"<tr><td><b>{s.shortcut}</b></td><td>{s.title.replace('&', '')}</td></tr>" for s in ACTIONS if s.shortcut]
        box = QMessageBox(QMessageBox.Icon.Information, "Keyboard shortcuts", "<table>" + "".join(lines) + "</table>", parent=self)
        box.setModal(False)
        box.show()
        self._shortcuts_box = box

    @Slot()
    def show_about(self) -> None:
        import torch

        text = f"AIBA Studio — torch {torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'}"
        box = QMessageBox(QMessageBox.Icon.Information, "About AIBA Studio", text, parent=self)
        box.setModal(False)
        box.show()
        self._about_box = box

    @Slot()
    def apply_session_layout(self) -> bool:
        """The dock layout saved with the session opened last (View menu, or on open when the
        preference says so); floating docks are brought onto this screen. False when there is none."""
        state = self.session_layout_state
        if state is None or not self.restoreState(state, LAYOUT_VERSION):
            self.log("no session layout to apply")
            return False
        keep_floating_docks_on_screen(self, self.docks)
        self.log("applied the session's dock layout")
        return True

    @Slot()
    def reset_layout(self) -> None:
        for dock in self.docks:
            dock.setFloating(False)
            dock.show()
        self.restoreState(self.default_state)
        self.log("layout reset")

    def shutdown(self) -> None:
        """Stop every timer of the window (autosave, player, a pending steering debounce that would
        start a run on a stopped engine), the player and the engine thread (joins it)."""
        for timer in self.findChildren(QTimer):
            timer.stop()
        self.player.close_output()
        self.bridge.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        save_layout(self)
        if self.bridge.busy:  # the engine ends the current step first: say so before waiting
            self.status_label.setText("stopping… (waiting for the engine to end the current step)")
            self.statusBar().repaint()
            QApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
        self.shutdown()
        super().closeEvent(event)
