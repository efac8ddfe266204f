"""The patching panel goes through the ``patch`` command's rule (engine.interventions.patching.
sweep_query): a concept the instrument scorer cannot rate is refused at once, with the command's
own one-line message, before any model is loaded or generated (it used to fail after generating)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from engine.interventions.commands import PatchOptions, run_patch
from engine.types import EngineError
from tests.gui.conftest import TEST_MODEL


def test_an_unratable_concept_is_refused_before_generating(make_window, isolated_settings, tmp_path):
    window = make_window(model=TEST_MODEL)
    window.run_dock.steps.setText("2")
    dock = window.patching
    i = dock.concept.findText("instruments: flute", Qt.MatchFlag.MatchStartsWith)
    assert i >= 0
    dock.concept.setCurrentIndex(i)
    dock.scorer.setText("")  # the shipped instrument scorer
    assert dock.run_sweep() is None
    assert not window.bridge.busy and dock.report is None
    with pytest.raises(EngineError) as command:
        run_patch(PatchOptions(model=TEST_MODEL, concept="flute", out=str(tmp_path / "p"), steps=2, duration=0.25))
    assert str(command.value) in dock.job.message.text() and "not 'flute'" in str(command.value)
    assert not (tmp_path / "p").exists()
