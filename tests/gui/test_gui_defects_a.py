"""GUI defects: a failed run, the self-test's Run panel, the Heads hint, closing during a run."""

from __future__ import annotations

from engine.types import GenerationRequest
from tests.gui.conftest import TEST_MODEL

REQUEST = GenerationRequest(prompt="bass and drums", steps=2, duration=0.25, seed=3)


def _sites(window) -> list[str]:
    combo = window.heatmap.site
    return [combo.itemText(i) for i in range(combo.count())]


def _ab(window) -> list[list[int]]:
    p = window.player
    return [[c.itemData(i) for i in range(c.count())] for c in (p.a_run, p.b_run)]


def _errors(window) -> int:
    return sum(" ERROR " in line for line in window.log_dock.text.toPlainText().splitlines())


def test_a_failed_run_keeps_the_previous_run_shown_and_the_window_ready(make_window, isolated_settings, qtbot,
                                                                          tmp_path):
    window = make_window(model=TEST_MODEL)
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000):
        first = window.generate(TEST_MODEL, "cpu", REQUEST)
    sites, ab, prompt_h = _sites(window), _ab(window), window.run_dock.prompt.height()
    assert sites and ab[0] == [first]
    rd = window.run_dock
    rd.model.setCurrentText(str(tmp_path / "no-such-folder" / ("a-long-folder-name-" * 8)))
    rd.request_generate()  # refused by the panel: the message wraps, the prompt keeps its height
    assert "does not exist" in rd.message.text() and not window.bridge.busy
    qtbot.wait(50)
    assert rd.prompt.height() >= prompt_h and rd.message.width() <= rd.prompt.parentWidget().width()
    rd.model.setCurrentText("nobody/no-such-model")
    with qtbot.waitSignal(window.bridge.runFailed, timeout=60_000):
        rd.request_generate()
    qtbot.wait(50)
    assert window.workspace.current.run_id == first  # the previous run, shown consistently
    assert _sites(window) == sites and _ab(window) == ab
    assert (rd.progress.minimum(), rd.progress.maximum()) == (0, 1)  # idle, not the busy indicator
    assert rd.generate_button.isEnabled() and not rd.cancel_button.isEnabled()
    assert "nobody/no-such-model" in rd.message.text() and _errors(window) == 1  # logged once (the folder was refused in the panel)
    assert rd.prompt.height() >= prompt_h
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000):
        again = window.generate(TEST_MODEL, "cpu", REQUEST)
    assert again is not None and window.workspace.current.run_id == again
    assert _errors(window) == 1


def test_the_self_test_shows_the_recipe_it_runs_in_the_run_panel(make_window, isolated_settings, qtbot):
    from gui import app

    window = make_window(model=TEST_MODEL)
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000):
        run_id = app.start_self_test_run(window, TEST_MODEL)
    ran = window.workspace.find(run_id).request
    rd = window.run_dock
    assert (ran.steps, ran.duration) == (app.SELF_TEST_STEPS, app.SELF_TEST_DURATION)
    assert (int(rd.steps.text()), float(rd.duration.text())) == (ran.steps, ran.duration)
    assert rd.model.currentText() == TEST_MODEL and rd.prompt.toPlainText() == ran.prompt


def test_the_heads_hint_matches_whether_scores_are_shown(make_window, isolated_settings, qtbot):
    from gui.docks.heads_dock import NO_SCORES, SCORES
    from gui.workspace import RunData

    window = make_window(model=TEST_MODEL)
    heads, ws = window.heads, window.workspace
    heads.rebuild()
    assert heads.tree.topLevelItemCount() == 0 and heads.note.text() == NO_SCORES
    request = GenerationRequest(prompt="bass and drums", steps=3, duration=0.25, seed=3, per_head=True)
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000):
        window.generate(TEST_MODEL, "cpu", request)
    assert heads.tree.topLevelItemCount() > 0 and heads.note.text() == SCORES
    done = ws.current
    # the same data as a run still going on: first without frames, then with the frames so far
    live = RunData(done.run_id + 1, TEST_MODEL, "cpu", request, sites=done.sites, tokens=done.tokens,
                   lattices=done.lattices, status="running")
    ws.add_run(live)
    assert heads.tree.topLevelItemCount() == 0 and heads.note.text() == NO_SCORES
    live.frames = {k: v for k, v in done.frames.items() if k[0] == done.steps[0]}
    ws.update_run(live)
    assert heads.tree.topLevelItemCount() > 0
    assert heads.note.text().startswith(SCORES) and "finishes" not in heads.note.text()


def test_closing_during_a_run_says_stopping_before_waiting(make_window, isolated_settings, qtbot):
    window = make_window(model=TEST_MODEL)
    request = GenerationRequest(prompt="bass and drums", steps=80, duration=1.0, seed=3)
    with qtbot.waitSignal(window.bridge.stepDone, timeout=180_000):
        window.generate(TEST_MODEL, "cpu", request)
    assert window.bridge.busy
    window.close()  # joins the engine thread; nothing has repainted the status bar since
    assert window.bridge._thread.isFinished()
    assert window.status_label.text().startswith("stopping…")
