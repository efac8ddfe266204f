"""The window fits laptop screens: its minimum size fits 1366×768 and 1280×720, and at those sizes
every dock (each tab raised in turn) shows a non-empty area inside the window."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import QTabBar


def _shown_rect(window, dock) -> QRect:
    """The dock's content on screen, in window coordinates; empty when hidden or tabbed away (Qt
    parks a tab that is not current outside the window)."""
    body = dock.widget()
    if not dock.isVisible() or not body.isVisible():
        return QRect()
    return QRect(body.mapTo(window, QPoint(0, 0)), body.size())


@pytest.mark.parametrize("size", [(1366, 768), (1280, 720)])
def test_every_dock_is_reachable_on_a_laptop_screen(make_window, isolated_settings, qtbot, size):
    window = make_window()
    hint = window.minimumSizeHint()
    assert hint.width() <= size[0] and hint.height() <= size[1], f"minimum {hint.toTuple()} > {size}"
    window.resize(*size)
    qtbot.waitUntil(lambda: window.size().toTuple() == size, timeout=5000)
    inside = QRect(QPoint(0, 0), window.size())
    for dock in window.docks:
        assert not dock.isHidden() and not dock.isFloating(), dock.objectName()
        dock.raise_()  # a tab behind another one: what clicking its tab does
        qtbot.waitUntil(lambda d=dock: inside.contains(d.geometry()), timeout=2000)
        rect = _shown_rect(window, dock)
        assert rect.width() > 20 and rect.height() > 20, f"{dock.objectName()} shows {rect}"
        assert inside.contains(rect), f"{dock.objectName()} at {rect} is outside the window {inside}"
    status = window.statusBar().geometry()
    assert inside.contains(status) and status.height() > 0
    # one tab bar per tab group: no stale bar left painted over another dock
    groups = [tuple(b.tabText(i) for i in range(b.count())) for b in window.findChildren(QTabBar)
              if b.parent() is window and b.isVisible()]
    assert len(groups) == len(set(groups)) == 2 and all(not any(g[:len(o)] == o for o in groups if o != g) for g in groups)


def test_first_run_size_fits_the_available_screen(make_window, isolated_settings):
    window = make_window()
    area = window.screen().availableGeometry()
    assert window.width() <= area.width() and window.height() <= area.height()
    assert window.width() >= min(1500, int(area.width() * 0.9))


def test_steering_sliders_are_visible_without_scrolling_at_full_hd(make_window, isolated_settings, qtbot):
    window = make_window()
    window.resize(1920, 1080)
    qtbot.waitUntil(lambda: window.size().toTuple() == (1920, 1080), timeout=5000)
    window.reset_layout()
    dock = window.steering
    assert window.tabifiedDockWidgets(dock) == [] and dock.isVisible()
    sliders = dock.sliders_box
    top_left = sliders.mapTo(dock, QPoint(0, 0))
    bottom = top_left.y() + sliders.height()
    assert sliders.isVisible() and bottom <= dock.height(), f"sliders end at {bottom}, dock is {dock.height()} high"
    assert dock.widget().verticalScrollBar().value() == 0
