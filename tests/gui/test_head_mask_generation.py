"""Heads dock "apply to generation": the workspace's head masks ablate heads in the next run
(real window, real tiny AudioLDM2 engine); an all-on mask changes nothing; no head → no run."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

FIELDS = {"prompt": "bass and drums", "seed": "5", "steps": "2", "guidance": "3.0", "duration": "0.25"}


@pytest.fixture(scope="module")
def window(engine_window):
    rd = engine_window.run_dock
    rd.prompt.setPlainText(FIELDS["prompt"])
    for name in ("seed", "steps", "guidance", "duration"):
        getattr(rd, name).setText(FIELDS[name])
    rd.per_head.setChecked(True)
    return engine_window


def _generate(qtbot, window):
    """Click Generate and wait for the run to finish; returns the finished RunData."""
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000) as blocker:
        window.run_dock.generate_button.click()
    run = window.workspace.find(blocker.args[0].run_id)
    assert run is not None and run.status == "done"
    return run


def _untick(dock, site: str, head: int) -> None:
    """What a click on a head's check box does."""
    for i in range(dock.tree.topLevelItemCount()):
        top = dock.tree.topLevelItem(i)
        if top.data(0, Qt.ItemDataRole.UserRole)[0] == site:
            top.child(head).setCheckState(0, Qt.CheckState.Unchecked)
            return
    raise AssertionError(f"{site} is not in the Heads tree")


@pytest.fixture(scope="module")
def baseline(window, request):
    """An unmasked run (switch off); it also fills the Heads tree with the model's heads."""
    from pytestqt.qtbot import QtBot

    window.heads.apply_box.setChecked(False)
    run = _generate(QtBot(request), window)
    assert run.request.head_mask is None
    assert window.heads.scores, "the Heads tree is empty after a per-head run"
    return run


def test_switch_off_leaves_masks_out_of_the_request(window, baseline):
    heads = window.heads
    heads.preset("none")
    heads.apply_box.setChecked(False)
    request = window.run_dock.build_request()
    assert request is not None and request.head_mask is None
    heads.preset("all")


def test_all_on_mask_gives_identical_audio(window, baseline, qtbot):
    heads = window.heads
    heads.preset("all")
    heads.apply_box.setChecked(True)
    try:
        run = _generate(qtbot, window)
    finally:
        heads.apply_box.setChecked(False)
    assert run.request.head_mask and all(all(f) for f in run.request.head_mask.values())
    assert set(run.request.head_mask) == set(heads.scores)
    np.testing.assert_array_equal(run.result.audio, baseline.result.audio)


def test_ablated_heads_change_the_audio(window, baseline, qtbot):
    heads = window.heads
    heads.preset("all")
    sites = list(heads.scores)
    for site in sites:  # every site loses its head 0
        _untick(heads, site, 0)
    heads.apply_box.setChecked(True)
    try:
        run = _generate(qtbot, window)
    finally:
        heads.apply_box.setChecked(False)
        heads.preset("all")
    mask = run.request.head_mask
    assert mask is not None and set(mask) == set(sites)
    assert all(flags[0] is False and all(flags[1:]) for flags in mask.values())
    a = np.asarray(baseline.result.audio)
    b = np.asarray(run.result.audio)
    scale = float(np.abs(a).max())
    assert scale > 0 and a.shape == b.shape
    assert np.abs(b - a).max() > 0.01 * scale, "ablating heads left the audio unchanged"


def test_no_head_at_all_is_a_message_and_no_run(window, baseline, qtbot):
    heads = window.heads
    heads.preset("none")
    heads.apply_box.setChecked(True)
    n_runs = len(window.workspace.history)  # MainWindow.generate adds a run at once
    try:
        window.run_dock.generate_button.click()
        qtbot.wait(300)
        message = window.run_dock.message.text()
    finally:
        heads.apply_box.setChecked(False)
        heads.preset("all")
    assert "every head is off" in message and "apply to generation" in message
    assert len(window.workspace.history) == n_runs and not window.bridge.busy
