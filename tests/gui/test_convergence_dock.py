"""Convergence dock on a real engine (tiny AudioLDM2): entropy curves vs ``report_from_frames``,
the LSAC preset reaching the run's recipe, the freeze-sweep heatmap, and the docks' screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine.convergence.diagnostics import report_from_frames
from tests.gui.conftest import TEST_MODEL

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def window(engine_window):
    rd = engine_window.run_dock
    rd.model.setCurrentText(TEST_MODEL)
    rd.prompt.setPlainText("bass and drums")
    rd.seed.setText("1")
    rd.steps.setText("3")
    rd.duration.setText("0.25")
    rd.per_head.setChecked(True)
    return engine_window


@pytest.fixture(scope="module")
def diagnosed(window, request):
    from pytestqt.qtbot import QtBot

    dock = window.convergence
    with QtBot(request).waitSignal(dock.job.finished, timeout=120_000) as blocker:
        assert dock.run_diagnose() is not None
    return blocker.args[0]


def test_one_curve_per_site_with_the_frames_entropy(window, diagnosed):
    dock = window.convergence
    report, result = diagnosed
    assert len(dock.curves) == len(result.sites) == 24  # every site, self and cross
    ref = report_from_frames(result)  # independent: entropy of the recorded per-head frames
    assert len(ref.sites) == 8
    for j, site in enumerate(ref.sites):
        x, y = dock.curve_data(site)
        np.testing.assert_array_equal(x, np.arange(3))
        np.testing.assert_allclose(y, ref.entropy[:, j], rtol=2e-3)  # frames are float16
    for i, site in enumerate(report.sites):
        colour = dock.curves[site].opts["pen"].color().name()
        assert colour == ("#1f77b4" if report.stable[i] else "#ff7f0e")


def test_lsac_preset_reaches_the_run(window, diagnosed, qtbot):
    window.convergence.preset.setCurrentText("balanced")
    window.convergence.cache_dtype.setCurrentText("bfloat16")
    try:
        with qtbot.waitSignal(window.bridge.runFinished, timeout=120_000) as blocker:
            window.run_dock.request_generate()
        lsac = [iv for iv in blocker.args[0].recipe["interventions"] if iv["type"] == "lsac"]
        assert len(lsac) == 1 and lsac[0]["preset"] == "balanced" and lsac[0]["cache_dtype"] == "bfloat16"
        report = diagnosed[0]  # balanced: stable self-attention sites freeze at ⌈T/4⌉ = 1
        stable = {s for s, k in zip(report.sites, report.kinds, strict=True) if k == "self"} & set(report.stable_sites)
        assert stable and {s for s, t in lsac[0]["plan"].items() if t == 1} == stable
        assert lsac[0]["reused_calls"] > 0
    finally:
        window.convergence.preset.setCurrentText("off")
        window.convergence.cache_dtype.setCurrentText("model")
    window.convergence.preset.setCurrentText("balanced")
    window.convergence.kinds.setCurrentText("self,cross")
    try:  # cross-attention opted in: the stable cross sites freeze at step 1 too
        with qtbot.waitSignal(window.bridge.runFinished, timeout=120_000) as blocker:
            window.run_dock.request_generate()
        plan = [iv for iv in blocker.args[0].recipe["interventions"] if iv["type"] == "lsac"][0]["plan"]
        assert {s for s, t in plan.items() if t == 1} == set(report.stable_sites)
    finally:
        window.convergence.preset.setCurrentText("off")
        window.convergence.kinds.setCurrentText("self")
    with qtbot.waitSignal(window.bridge.runFinished, timeout=120_000) as blocker:
        window.run_dock.request_generate()
    assert blocker.args[0].recipe["interventions"] == []


def test_freeze_sweep_heatmap_and_screenshot(window, qtbot, tmp_path):
    dock = window.convergence
    with qtbot.waitSignal(dock.sweep_job.finished, timeout=300_000) as blocker:
        assert dock.run_sweep() is not None
    sweep = blocker.args[0]
    assert sweep.freeze_steps == [1] and len(sweep.sites) == 24
    shown = dock.sweep_image.image
    assert shown.shape == (1, 24)
    np.testing.assert_allclose(shown[0], np.nan_to_num(sweep.metrics["mel_distance"][:, 0],
                                                       nan=np.nanmin(sweep.metrics["mel_distance"])), rtol=1e-6)
    # the screenshot: steering (left) and the patching/convergence tabs (right)
    dock.tabs.setCurrentIndex(0)
    window.steering.raise_()
    dock.raise_()
    window.resize(1600, 1000)
    qtbot.wait(200)
    # the docs screenshot is refreshed only on request (AIBA_UPDATE_SCREENSHOTS=1), never as a side effect
    docs_shot = ROOT / "docs" / "img" / "steering-docks.png"
    out = docs_shot if os.environ.get("AIBA_UPDATE_SCREENSHOTS") == "1" else tmp_path / "steering-docks.png"
    assert window.grab().save(str(out))
    assert out.stat().st_size > 10_000
