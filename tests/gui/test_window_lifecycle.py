"""Window shutdown: nothing of a closed window keeps running (no active timer, no engine thread),
so nothing fires into a window that is gone, in the app or in the next test."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QTimer

from engine.interventions.caa import SteeringVectors
from tests.gui.conftest import TEST_MODEL


def _active_timers(window) -> list[str]:
    return [f"{t.parent().objectName() or type(t.parent()).__name__}: {t.interval()} ms"
            for t in window.findChildren(QTimer) if t.isActive()]


def test_shutdown_stops_every_timer_of_the_window_and_joins_the_engine(make_window, isolated_settings):
    window = make_window(model=TEST_MODEL)
    vectors = SteeringVectors({"down_blocks.1.attentions.0.transformer_blocks.0.attn2": np.ones(8, np.float32)},
                              TEST_MODEL, concept="drums")
    window.steering.add_vectors(vectors)
    window.steering.set_alpha(0, 1.5)  # a keyboard change: regenerates after the debounce pause
    assert window.steering._debounce.isActive() and window.autosave_timer.isActive()
    assert window.bridge._thread.isRunning()
    window.shutdown()
    assert _active_timers(window) == []
    assert window.bridge._thread.isFinished()


def test_closing_the_window_shuts_it_down(make_window, isolated_settings):
    window = make_window(model=TEST_MODEL)
    window.steering.add_vectors(SteeringVectors({"site": np.ones(4, np.float32)}, TEST_MODEL, concept="x"))
    window.steering.set_alpha(0, -1.0)
    window.close()
    assert _active_timers(window) == []
    assert window.bridge._thread.isFinished()


def test_after_shutdown_runs_jobs_and_loads_are_refused_not_queued(make_window, isolated_settings):
    """A stopped engine thread would never answer: the bridge refuses instead of staying busy."""
    import pytest

    from engine.types import EngineError, GenerationRequest

    window = make_window(model=TEST_MODEL)
    window.shutdown()
    for attempt in (lambda: window.bridge.generate(TEST_MODEL, "cpu", GenerationRequest(prompt="bass", steps=1)),
                    lambda: window.bridge.submit("job", TEST_MODEL, "cpu", lambda backend, progress: None),
                    lambda: window.bridge.load(TEST_MODEL, "cpu")):
        with pytest.raises(EngineError, match="engine has stopped"):
            attempt()
    assert not window.bridge.busy and _active_timers(window) == []
    assert window.generate(TEST_MODEL, "cpu", GenerationRequest(prompt="bass", steps=1)) is None  # shown, not raised
