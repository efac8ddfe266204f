"""Sessions keep the heatmap's "follow live" toggle: saved on or off after a real run, reopened in
a new window, the toggle (and the workspace's selection) is as it was saved."""

from __future__ import annotations

import pytest

from engine.session import load_session
from engine.types import GenerationRequest
from tests.gui.conftest import TEST_MODEL

REQUEST = GenerationRequest(prompt="bass and drums", steps=3, duration=0.25, seed=2)


@pytest.mark.parametrize("follow", [True, False])
def test_follow_live_survives_save_and_reopen(make_window, isolated_settings, qtbot, tmp_path, follow):
    window = make_window(model=TEST_MODEL)
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000):
        assert window.generate(TEST_MODEL, "cpu", REQUEST) is not None
    qtbot.wait(20)
    window.heatmap.follow.setChecked(not follow)  # a user click, then the state to save
    window.heatmap.follow.setChecked(follow)
    assert window.workspace.selection.follow_live is follow
    path = window.save_session_to(tmp_path / "s.aiba")
    assert load_session(path).view["selection"]["follow_live"] is follow
    other = make_window(model=TEST_MODEL)
    other.heatmap.follow.setChecked(not follow)  # the new window starts the other way
    other.open_session(path)
    assert other.heatmap.follow.isChecked() is follow
    assert other.workspace.selection.follow_live is follow
