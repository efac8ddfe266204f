"""The heatmap's and the player's control rows wrap at narrow widths: at 1280×720 and 1366×768,
with the docks at their default size, every control lies inside its dock's visible area (no
control is clipped or needs horizontal scrolling), and the rows still fit in one line when wide."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QLabel,
    QWidget,
)

CONTROLS = (QComboBox, QAbstractSpinBox, QAbstractButton, QAbstractSlider, QLabel)


def _controls(dock, above) -> list:
    """The dock's controls placed above the widget ``above`` (its plot): the control rows."""
    body = dock.widget().widget()
    limit = above.mapTo(body, QPoint(0, 0)).y()
    return [w for w in body.findChildren(QWidget) if isinstance(w, CONTROLS) and w.isVisible()
            and w.mapTo(body, QPoint(0, 0)).y() < limit]


def _outside(dock, widgets) -> list[str]:
    """Controls not wholly inside the dock's visible (scroll-area viewport) area."""
    viewport = dock.widget().viewport()
    shown = QRect(QPoint(0, 0), viewport.size())
    out = []
    for w in widgets:
        rect = QRect(w.mapTo(viewport, QPoint(0, 0)), w.size())
        if not shown.contains(rect):
            out.append(f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r} at {rect.getRect()} not in {shown.getRect()}")
    return out


@pytest.mark.parametrize("size", [(1280, 720), (1366, 768)])
def test_every_heatmap_and_player_control_is_inside_its_dock(make_window, isolated_settings, qtbot, size):
    window = make_window()
    window.resize(*size)
    qtbot.waitUntil(lambda: window.size().toTuple() == size, timeout=5000)
    window.reset_layout()
    qtbot.wait(50)
    for dock, plot, least in ((window.heatmap, window.heatmap.plot, 14), (window.player, window.player.wave, 9)):
        assert dock.isVisible() and not dock.isFloating()
        controls = _controls(dock, plot)
        assert len(controls) >= least, [type(w).__name__ for w in controls]
        assert _outside(dock, controls) == [], dock.objectName()
        assert dock.widget().horizontalScrollBar().maximum() == 0  # nothing to scroll to sideways
    # the plots keep a usable height below the wrapped controls (no vertical scrolling either)
    assert window.heatmap.plot.height() > 150 and window.heatmap.widget().verticalScrollBar().maximum() == 0
    assert window.player.wave.height() >= 60 and window.player.mel_plot.height() >= 90


def _rows(dock) -> tuple[int, int, int]:
    """(rows, width, one-row width) of the dock's control flow layout."""
    layout = dock.control_flow
    width = layout.geometry().width()
    return len(layout.rows(width)), width, layout.sizeHint().width()


def test_controls_wrap_only_when_the_dock_is_narrow(make_window, isolated_settings, qtbot):
    window = make_window()
    window.resize(1920, 1080)
    qtbot.waitUntil(lambda: window.size().toTuple() == (1920, 1080), timeout=5000)
    window.reset_layout()
    qtbot.wait(50)
    rows, width, one_row = _rows(window.player)
    assert one_row <= width and rows == 1  # room for one line: one line
    window.resize(1280, 720)
    qtbot.waitUntil(lambda: window.size().toTuple() == (1280, 720), timeout=5000)
    qtbot.wait(50)
    rows, width, one_row = _rows(window.heatmap)
    assert one_row > width and rows >= 2  # no room: wrapped, and (test above) nothing clipped


@pytest.mark.parametrize("size", [(1280, 720), (1366, 768)])
def test_no_dock_scrolls_sideways_on_a_laptop_screen(make_window, isolated_settings, qtbot, size):
    """Every dock (each tab raised in turn) fits its width: its scroll areas have nothing to the
    right (the Steering and Convergence top rows wrap, the Run form puts labels above fields)."""
    from PySide6.QtWidgets import QScrollArea

    window = make_window()
    window.resize(*size)
    qtbot.waitUntil(lambda: window.size().toTuple() == size, timeout=5000)
    window.reset_layout()
    wide = []
    for dock in window.docks:
        dock.raise_()
        qtbot.wait(20)
        areas = [a for a in dock.findChildren(QScrollArea) if type(a) is QScrollArea and a.widget() is not None]
        assert areas, dock.objectName()
        wide += [f"{dock.objectName()}: {a.horizontalScrollBar().maximum()} px" for a in areas
                 if a.horizontalScrollBar().maximum() > 0]
    assert wide == []
