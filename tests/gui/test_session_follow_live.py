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


def test_zoom_window_and_time_cursor_survive_save_and_reopen(make_window, isolated_settings, qtbot, tmp_path):
    window = make_window(model=TEST_MODEL)
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000):
        assert window.generate(TEST_MODEL, "cpu", REQUEST) is not None
    qtbot.wait(20)
    t = window.workspace.time
    t.set_range(0.05, 0.15)
    t.set_cursor(0.1)
    saved = (t.start, t.end, t.cursor)
    assert t.zoomed and saved[1] - saved[0] < t.duration
    path = window.save_session_to(tmp_path / "s.aiba")
    other = make_window(model=TEST_MODEL)
    other.open_session(path)
    o = other.workspace.time
    assert (o.start, o.end, o.cursor) == pytest.approx(saved)
    lo, hi = other.heatmap.plot.getViewBox().viewRange()[0]
    assert (lo, hi) == pytest.approx(saved[:2], abs=1e-6)


def test_a_damaged_time_window_is_one_message_and_changes_nothing(make_window, isolated_settings, tmp_path):
    import json
    import zipfile

    from engine.types import EngineError

    window = make_window(model=TEST_MODEL)
    path = window.save_session_to(tmp_path / "s.aiba", include_arrays=False)
    before = (window.workspace.time.start, window.workspace.time.end)
    with zipfile.ZipFile(path) as z:
        names = {n: z.read(n) for n in z.namelist()}
    key = next(n for n, b in names.items() if n.endswith(".json") and b"selection" in b)
    data = json.loads(names[key])
    data["view"]["time"] = {"start": "soon", "end": 1.0}
    names[key] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, b in names.items():
            z.writestr(n, b)
    with pytest.raises(EngineError, match="the saved view is damaged"):
        window.open_session(path)
    assert (window.workspace.time.start, window.workspace.time.end) == before
