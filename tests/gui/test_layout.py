"""Dock layout: saved per user with a version, restored in a new window, reset to the default."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt

from gui import settings as st


def test_every_dock_is_named_movable_floatable_closable_and_in_the_view_menu(make_window, isolated_settings):
    window = make_window()
    try:
        names = [d.objectName() for d in window.docks]
        assert len(set(names)) == len(names) == 12 and all(n.startswith("dock_") for n in names)
        feats = window.docks[0].features().__class__
        view_titles = {a.text() for m in window.menuBar().actions() if m.text() == "&View" for a in m.menu().actions()}
        for dock in window.docks:
            f = dock.features()
            assert f & feats.DockWidgetMovable and f & feats.DockWidgetFloatable and f & feats.DockWidgetClosable
            assert dock.windowTitle() in view_titles
    finally:
        window.shutdown()


def test_layout_survives_a_restart_and_reset_restores_the_default(make_window, isolated_settings):
    first = make_window()
    try:
        default_area = first.dockWidgetArea(first.metrics)
        assert first.overview in first.tabifiedDockWidgets(first.metrics)
        first.log_dock.toggleViewAction().trigger()  # hide the log via the View menu
        first.removeDockWidget(first.metrics)
        first.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, first.metrics)
        first.metrics.show()
        assert default_area != Qt.DockWidgetArea.RightDockWidgetArea
        first.close()  # closeEvent saves the layout
    finally:
        first.shutdown()
    assert int(QSettings(st.ORG, st.APP).value("layout/version")) == st.LAYOUT_VERSION

    second = make_window()
    try:
        assert second.log_dock.isHidden()
        assert second.dockWidgetArea(second.metrics) == Qt.DockWidgetArea.RightDockWidgetArea
        assert second.tabifiedDockWidgets(second.metrics) == []
        second.actions_by_id["reset_layout"].trigger()
        assert not second.log_dock.isHidden()
        assert second.dockWidgetArea(second.metrics) == default_area
        assert second.overview in second.tabifiedDockWidgets(second.metrics)
    finally:
        second.shutdown()


def test_a_layout_of_another_version_is_ignored(make_window, isolated_settings):
    window = make_window()
    try:
        window.log_dock.hide()
        st.save_layout(window)
        QSettings(st.ORG, st.APP).setValue("layout/version", st.LAYOUT_VERSION - 1)
        window.log_dock.show()
        assert st.restore_layout(window) is False
        assert not window.log_dock.isHidden()
        QSettings(st.ORG, st.APP).setValue("layout/version", st.LAYOUT_VERSION)
        assert st.restore_layout(window) is True
        assert window.log_dock.isHidden()
    finally:
        window.shutdown()


def test_preferences_and_recent_files_persist(make_window, isolated_settings):
    prefs = st.Preferences(device="cpu", audio_output="null", colormap="magma", memory_budget_mb=512.0, autosave_minutes=0.0)
    st.save_preferences(prefs)
    assert st.load_preferences() == prefs
    for stored, meant in (("false", False), ("true", True), (False, False), (True, True)):  # ini files keep strings
        QSettings(st.ORG, st.APP).setValue("prefs/session_layout", stored)
        assert st.load_preferences().session_layout is meant
    QSettings(st.ORG, st.APP).setValue("prefs/memory_budget_mb", "-5")  # damaged: defaults come back
    assert st.load_preferences() == st.Preferences()
    for i in range(st.MAX_RECENT + 3):
        st.add_recent(f"/tmp/s{i}.aiba")
    files = st.recent_files()
    assert len(files) == st.MAX_RECENT and files[0] == f"/tmp/s{st.MAX_RECENT + 2}.aiba"
    window = make_window()
    try:
        window.apply_preferences(prefs)
        assert window.heatmap.cmap.currentText() == "magma" and not window.autosave_timer.isActive()
        window.apply_preferences(st.Preferences(audio_output="speaker"))
        assert "choose auto, sounddevice or null" in window.status_label.text()
    finally:
        window.shutdown()


def test_preferences_dialog_returns_what_was_chosen(qtbot, isolated_settings):
    from gui.preferences_dialog import PreferencesDialog

    dialog = PreferencesDialog(st.Preferences())
    qtbot.addWidget(dialog)
    dialog.audio.setCurrentText("null")
    dialog.colormap.setCurrentText("cividis")
    dialog.memory.setValue(300.0)
    dialog.autosave.setValue(2.5)
    assert dialog.preferences() == st.Preferences("cpu", "null", "cividis", 300.0, 2.5)


def test_hz_ticks_do_not_crowd_the_linear_low_mel_range():
    import numpy as np
    import pytest

    from engine.analysis.melscale import band_centres_hz
    from engine.types import MelSpec
    from gui.hz_axis import hz_axis_ticks

    centres = band_centres_hz(MelSpec(16000, 1024, 256, 64, 0.0, 8000.0))
    ticks = hz_axis_ticks(centres, 64)
    ys = [y for y, _ in ticks]
    assert ys == sorted(ys) and min(np.diff(ys)) >= 0.04 * 64
    labels = [t for _, t in ticks]
    assert {"1k", "2k", "4k"} <= set(labels) and not {"50", "100"} <= set(labels)
    # every kept tick sits on its frequency: row centre of the band at that Hz
    y_1k = dict((t, y) for y, t in ticks)["1k"]
    assert y_1k == pytest.approx(float(np.interp(1000.0, centres, np.arange(64))) + 0.5)
