"""A run reopened from a session keeps its place in the history when the next generation starts
(the engine numbered its first run #1 too, and the workspace replaced the reopened run)."""

from __future__ import annotations

from engine.backends.registry import load_backend
from engine.session import Session, save_session
from engine.types import GenerationRequest
from tests.gui.conftest import TEST_MODEL


def test_generating_after_reopening_a_session_keeps_the_reopened_run(make_window, isolated_settings, qtbot,
                                                                     tmp_path):
    request = GenerationRequest(prompt="bass and drums", steps=2, duration=0.25, seed=3)
    result = load_backend(TEST_MODEL).generate(request, run_id=1)  # a first run of an earlier window
    path = save_session(tmp_path / "s.aiba", Session(TEST_MODEL, "cpu", request, {}, {}, result))
    window = make_window(model=TEST_MODEL)
    window.open_session(path)
    assert [r.run_id for r in window.workspace.history] == [1]
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000):
        new_id = window.generate(TEST_MODEL, "cpu", request)
    assert new_id not in (None, 1)
    assert [r.run_id for r in window.workspace.history] == [1, new_id]
    assert window.workspace.find(1).result is not None and window.workspace.current.run_id == new_id
