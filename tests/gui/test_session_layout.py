"""Sessions keep the dock layout: saved with the session, applied on open when the preference
says so (else from View ▸ "Apply the session's layout"), floating docks brought onto the screen;
a damaged layout is one message and changes nothing; one of an older window version is left out."""

from __future__ import annotations

import json
import zipfile

import pytest
from PySide6.QtCore import Qt

from engine.types import EngineError
from tests.gui.conftest import TEST_MODEL


def _layout_of(window) -> dict:
    return {d.objectName(): (d.isVisible(), d.isFloating(), window.dockWidgetArea(d)) for d in window.docks}


def _rewrite_view(path, change) -> None:
    with zipfile.ZipFile(path) as z:
        names = {n: z.read(n) for n in z.namelist()}
    key = next(n for n, b in names.items() if n.endswith(".json") and b"selection" in b)
    data = json.loads(names[key])
    change(data["view"])
    names[key] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, b in names.items():
            z.writestr(n, b)


def _saved_with_changed_layout(make_window, tmp_path):
    window = make_window(model=TEST_MODEL)
    window.steering.hide()
    window.removeDockWidget(window.log_dock)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, window.log_dock)
    window.log_dock.show()
    saved = _layout_of(window)
    path = window.save_session_to(tmp_path / "s.aiba", include_arrays=False)
    return path, saved


def test_the_layout_is_applied_on_open_when_the_preference_says_so(make_window, isolated_settings, tmp_path):
    path, saved = _saved_with_changed_layout(make_window, tmp_path)
    other = make_window(model=TEST_MODEL)
    default = _layout_of(other)
    assert default != saved
    other.prefs.session_layout = True
    other.open_session(path)
    assert _layout_of(other) == saved
    assert other.actions_by_id["apply_session_layout"].isEnabled()


def test_without_the_preference_the_view_menu_applies_it(make_window, isolated_settings, tmp_path):
    path, saved = _saved_with_changed_layout(make_window, tmp_path)
    other = make_window(model=TEST_MODEL)
    default = _layout_of(other)
    assert not other.prefs.session_layout and not other.actions_by_id["apply_session_layout"].isEnabled()
    other.open_session(path)
    assert _layout_of(other) == default
    other.actions_by_id["apply_session_layout"].trigger()
    assert _layout_of(other) == saved


def test_floating_docks_of_a_bigger_screen_come_onto_this_one(make_window, isolated_settings, tmp_path):
    window = make_window(model=TEST_MODEL)
    window.player.setFloating(True)
    window.player.move(5000, 3000)  # where a second monitor was
    path = window.save_session_to(tmp_path / "s.aiba", include_arrays=False)
    other = make_window(model=TEST_MODEL)
    other.open_session(path)
    other.apply_session_layout()
    area = other.screen().availableGeometry()
    assert other.player.isFloating() and area.contains(other.player.frameGeometry())


def test_a_damaged_layout_is_one_message_and_an_old_one_is_left_out(make_window, isolated_settings, tmp_path):
    path, _ = _saved_with_changed_layout(make_window, tmp_path)
    other = make_window(model=TEST_MODEL)
    other.prefs.session_layout = True
    default = _layout_of(other)
    _rewrite_view(path, lambda v: v["layout"].update(state="not base64!"))
    with pytest.raises(EngineError, match="the saved dock layout is damaged"):
        other.open_session(path)
    assert _layout_of(other) == default and other.session_path is None
    _rewrite_view(path, lambda v: v["layout"].update(version=1, state="AAAA"))
    other.open_session(path)  # an older window's layout: the session opens, the layout stays
    assert _layout_of(other) == default and not other.actions_by_id["apply_session_layout"].isEnabled()
