"""Run panel validation: every bad field gives a clear message in the GUI, never a crash."""

from __future__ import annotations

import pytest

from engine.types import GenerationRequest
from gui.docks.run_dock import RunDock, parse_fields

GOOD = {
    "model": "embedded", "prompt": "bass and drums", "negative_prompt": "", "seed": "3",
    "steps": "10", "guidance": "2.5", "duration": "1.0",
}


def test_good_fields_build_the_request():
    request, errors = parse_fields(GOOD, {"per_head": True})
    assert errors == {}
    assert request == GenerationRequest(prompt="bass and drums", seed=3, steps=10, guidance=2.5, duration=1.0, per_head=True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt", "   ", "empty prompt"),
        ("prompt", "x" * 2001, "the limit is 2000"),
        ("model", "", "choose a model"),
        ("model", "/no/such/folder", "does not exist"),
        ("seed", "-1", "between 0 and 4294967295"),
        ("seed", "1.5", "whole number"),
        ("steps", "0", "between 1 and 1000"),
        ("steps", "ten", "whole number"),
        ("guidance", "nan", "finite number at least 0 and at most 100"),
        ("guidance", "abc", "must be a number"),
        ("duration", "0", "above 0 and at most 600"),
        ("duration", "1e9", "above 0 and at most 600"),
    ],
)
def test_each_bad_field_is_named_with_a_message(field, value, message):
    request, errors = parse_fields({**GOOD, field: value})
    assert request is None
    assert list(errors) == [field]
    assert message in errors[field]


def test_the_dock_shows_errors_and_emits_nothing(qtbot):
    dock = RunDock()
    qtbot.addWidget(dock)
    emitted = []
    dock.generateRequested.connect(lambda *a: emitted.append(a))
    dock.steps.setText("-3")
    dock.duration.setText("x")
    dock.generate_button.click()
    assert emitted == []
    assert "steps must be between 1 and 1000" in dock.message.text()
    assert "duration must be a number" in dock.message.text()
    assert "d33" in dock.steps.styleSheet() and dock.seed.styleSheet() == ""
    dock.steps.setText("4")
    dock.duration.setText("0.5")
    dock.generate_button.click()
    assert len(emitted) == 1 and emitted[0][2].steps == 4
    assert dock.message.text() == "" and dock.steps.styleSheet() == ""


def test_a_model_that_cannot_load_is_reported_in_the_gui(qtbot, make_window, isolated_settings):
    window = make_window()
    window.run_dock.model.setCurrentText("nobody/no-such-model")
    window.run_dock.steps.setText("2")
    with qtbot.waitSignal(window.bridge.runFailed, timeout=60_000) as blocker:
        window.actions_by_id["generate"].trigger()
    message = blocker.args[1]
    assert "nobody/no-such-model" in message and "\n" not in message
    assert window.workspace.current.status == "failed"
    assert message in window.run_dock.message.text()
    assert message in window.log_dock.text.toPlainText()
    assert window._error_box is not None and not window._error_box.isModal()
    assert window.run_dock.generate_button.isEnabled() and not window.bridge.busy
    window.run_dock.steps.setText("0")  # an invalid field never reaches the engine
    window.actions_by_id["generate"].trigger()
    assert not window.bridge.busy and len(window.workspace.history) == 1
