"""Steering, patching and SAE docks on a real engine (tiny AudioLDM2): CAA job, α slider →
regenerate → A/B, patching bars and click-to-steer; references are direct engine runs."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from engine.backends.registry import load_backend
from engine.interventions.caa import Steer, compute_caa
from engine.types import GenerationRequest
from tests.gui.conftest import TEST_MODEL

POS, NEG = ["bass and drums"], ["bass and piano"]
FIELDS = {"prompt": "guitar and drums", "seed": 3, "steps": 2, "guidance": 3.0, "duration": 0.25}


@pytest.fixture(scope="module")
def reference():
    return load_backend(TEST_MODEL, device="cpu")


@pytest.fixture(scope="module")
def window(engine_window):
    rd = engine_window.run_dock
    rd.prompt.setPlainText(FIELDS["prompt"])
    rd.seed.setText(str(FIELDS["seed"]))
    rd.steps.setText(str(FIELDS["steps"]))
    rd.guidance.setText(str(FIELDS["guidance"]))
    rd.duration.setText(str(FIELDS["duration"]))
    return engine_window


@pytest.fixture(scope="module")
def caa_row(window, request):
    from pytestqt.qtbot import QtBot

    dock = window.steering
    dock.concept.setText("drums")
    dock.positive.setPlainText("\n".join(POS))
    dock.negative.setPlainText("\n".join(NEG))
    with QtBot(request).waitSignal(dock.job.finished, timeout=120_000):
        assert dock.compute() is not None
    return dock.rows[-1]


def _drag(slider, value: int) -> None:
    """What a mouse drag does: press, move, release (release emits sliderReleased)."""
    slider.setSliderDown(True)
    slider.setValue(value)
    slider.setSliderDown(False)


def _request(**extra) -> GenerationRequest:
    return GenerationRequest(prompt=FIELDS["prompt"], seed=FIELDS["seed"], steps=FIELDS["steps"],
                             guidance=FIELDS["guidance"], duration=FIELDS["duration"], per_head=True, **extra)


def test_caa_job_gives_the_engines_vectors(window, caa_row, reference):
    ref = compute_caa(reference, POS, NEG, None, FIELDS["steps"], FIELDS["guidance"], FIELDS["duration"], [0])
    got = caa_row.vectors
    assert got.sites == ref.sites and len(got.sites) == 8
    for site in ref.sites:
        np.testing.assert_allclose(got.vectors[site], ref.vectors[site], rtol=1e-5, atol=1e-6)
        assert np.linalg.norm(got.vectors[site]) == pytest.approx(1.0, abs=1e-5)
    assert window.steering.checked_layers() == ref.sites  # every layer checked by default


def test_slider_release_regenerates_steered_audio_equal_to_the_engine(window, caa_row, reference, qtbot):
    dock = window.steering
    layers = dock.cross_sites[2:4]
    dock.check_layers(layers)
    n_before = len(window.workspace.history)
    _drag(caa_row.slider, 150)  # α = 15
    assert caa_row.alpha == 15.0 and caa_row.value.text() == "α = 15.0"
    qtbot.waitUntil(lambda: len(window.workspace.history) >= n_before + 2
                    and window.workspace.history[-1].status == "done" and not window.bridge.busy, timeout=120_000)
    base, steered = window.workspace.history[-2], window.workspace.history[-1]
    assert base.request.interventions == ()  # the baseline is unsteered
    assert [iv.describe()["type"] for iv in steered.request.interventions] == ["steer"]
    assert steered.result.recipe["interventions"][0]["alpha"] == 15.0
    assert steered.result.recipe["interventions"][0]["sites"] == layers
    assert base.request.seed == steered.request.seed == FIELDS["seed"]
    direct = reference.generate(_request(interventions=(Steer(caa_row.vectors, 15.0, layers),)))
    plain = reference.generate(_request())
    scale = float(np.abs(plain.audio).max())  # the tiny random model's audio is ~1e-8
    assert scale > 0
    np.testing.assert_allclose(steered.result.audio, direct.audio, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(base.result.audio, plain.audio, rtol=1e-5, atol=1e-5 * scale)
    assert np.abs(steered.result.audio - base.result.audio).max() > 0.05 * scale  # steering changed it
    p = window.player  # A = baseline, B = steered, B playing
    assert (p.a_run.currentData(), p.b_run.currentData()) == (base.run_id, steered.run_id)
    assert p.ab.isChecked() and p.output.is_playing()
    np.testing.assert_array_equal(p.loaded_audio, np.asarray(steered.result.audio, dtype=np.float32))


def test_alpha_zero_reproduces_the_baseline(window, caa_row, qtbot):
    n_before = len(window.workspace.history)
    _drag(caa_row.slider, 0)
    qtbot.waitUntil(lambda: len(window.workspace.history) == n_before + 1
                    and window.workspace.history[-1].status == "done" and not window.bridge.busy, timeout=120_000)
    run = window.workspace.history[-1]
    base = window.workspace.find(window.player.a_run.currentData())
    assert run.result.recipe["interventions"] == []
    assert base is not run and base.request.interventions == ()
    np.testing.assert_array_equal(run.result.audio, base.result.audio)


def test_bad_alpha_is_refused_with_a_clear_message(window, caa_row):
    from engine.types import EngineError

    with pytest.raises(EngineError, match="out of range"):
        window.steering.set_alpha(0, 500.0)


def test_patching_chart_has_the_engines_impact_and_a_click_sets_the_layer(window, qtbot):
    dock = window.patching
    i = dock.concept.findText("embedded: drums", Qt.MatchFlag.MatchStartsWith)
    assert i >= 0
    dock.concept.setCurrentIndex(i)
    dock.max_pairs.setValue(1)
    # the instrument scorer (the default) hears no drums in a random tiny model: every impact would be
    # 0/0; the band-template scorer gives the random model a non-degenerate Eq. 9 to check
    dock.scorer.setText("band-template")
    with qtbot.waitSignal(dock.job.finished, timeout=120_000):
        assert dock.run_sweep() is not None
    report = dock.report
    assert report.sites == window.steering.cross_sites and len(report.sites) == 8
    heights = dock.bar_heights()
    assert heights.shape == (8,)
    # Eq. 9 by hand from the report's similarities
    hand = (report.sim_patched.mean(axis=(1, 2)) - report.sim_source.mean()) / (
        report.sim_target.mean() - report.sim_source.mean())
    assert np.isfinite(hand).all()
    np.testing.assert_allclose(heights, hand, rtol=1e-9)
    assert sorted(window.steering.checked_layers()) == sorted(report.functional_layers(2))  # pre-filled
    # a real mouse click on bar 5
    dock.raise_()
    qtbot.waitUntil(dock.plot.isVisible, timeout=5000)
    qtbot.wait(50)
    vb = dock.plot.getPlotItem().vb
    target = 5
    y = max(heights[target] / 2, 1e-6) if heights[target] >= 0 else heights[target] / 2
    scene_pt = vb.mapViewToScene(pg_point(target, y))
    view_pt = dock.plot.mapFromScene(scene_pt)
    with qtbot.waitSignal(dock.layerClicked, timeout=5000) as blocker:
        qtbot.mouseClick(dock.plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(int(view_pt.x()), int(view_pt.y())))
    assert blocker.args == [report.sites[target]]
    assert window.steering.checked_layers() == [report.sites[target]]


def pg_point(x: float, y: float):
    from PySide6.QtCore import QPointF

    return QPointF(float(x), float(y))
