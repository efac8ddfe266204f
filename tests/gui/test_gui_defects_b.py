"""Plot labelling on a real window and tiny AudioLDM2 runs: the "no run yet" placeholders of the
heatmap and overview, the player's seconds / Hz axes, and the convergence legend."""

from __future__ import annotations

import re

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtGui import QFont, QFontMetrics

from engine.types import GenerationRequest
from tests.gui.conftest import TEST_MODEL

REQUEST = GenerationRequest(prompt="bass and drums", steps=2, duration=0.25, seed=3)
AXES = ("left", "bottom")


def _generate(window, qtbot) -> None:
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000):
        assert window.generate(TEST_MODEL, "cpu", REQUEST) is not None


def _si_scaled(plot) -> list[str]:
    """Axes of ``plot`` that rescale their values (an SI prefix or a "(x0.001)" label)."""
    return [name for name in AXES if plot.getAxis(name).autoSIPrefix or plot.getAxis(name).autoSIPrefixScale != 1.0
            or "(x" in plot.getAxis(name).labelString()]


def _placeholders(plot) -> list[bool]:
    """Visibility of each "no run yet" text on ``plot``."""
    return [item.isVisible() for item in plot.getPlotItem().items
            if isinstance(item, pg.TextItem) and item.textItem.toPlainText() == "no run yet"]


def test_heatmap_and_overview_show_a_placeholder_until_the_first_run(make_window, isolated_settings, qtbot):
    window = make_window(model=TEST_MODEL)
    qtbot.wait(50)
    docks = (window.heatmap, window.overview)
    for dock in docks:
        assert _placeholders(dock.plot) == [True]
        assert _si_scaled(dock.plot) == []
        assert not any(dock.plot.getAxis(name).style["showValues"] for name in AXES)
    _generate(window, qtbot)
    for dock in docks:
        assert _placeholders(dock.plot) == [False]
        assert all(dock.plot.getAxis(name).style["showValues"] for name in AXES)
        assert _si_scaled(dock.plot) == []
    assert window.heatmap.plot.getAxis("bottom").labelString().endswith(">time (s)</span>")


@pytest.fixture(scope="module")
def ran(engine_window, request):
    from pytestqt.qtbot import QtBot

    _generate(engine_window, QtBot(request))
    return engine_window


def test_player_axes_are_seconds_and_mel_hz(ran, qtbot):
    player = ran.player
    assert player.output.duration == pytest.approx(0.25, abs=0.05)
    for plot in (player.wave, player.mel_plot):
        axis = plot.getAxis("bottom")
        assert axis.labelString().endswith(">time (s)</span>"), axis.labelString()
        assert _si_scaled(plot) == []
    left = player.mel_plot.getAxis("left")
    assert "Hz" in left.labelString()
    assert left._tickLevels is not None, "the mel axis shows band numbers"
    labels = [text for _y, text in left._tickLevels[0]]
    assert labels and all(re.fullmatch(r"\d+k?", t) for t in labels), labels
    vb = player.mel_plot.getViewBox()
    y0, y1 = vb.viewRange()[1]
    px = np.array([y for y, _ in left._tickLevels[0]]) * vb.height() / (y1 - y0)
    assert np.all(np.diff(px) >= QFontMetrics(QFont()).height()), (px, labels)  # as many as fit, none overlapping
    fit = int((vb.height() - QFontMetrics(QFont()).height()) // (QFontMetrics(QFont()).height() + 4))
    assert len(labels) >= min(fit, 2), (vb.height(), labels)


def test_convergence_legend_names_the_classes_and_the_measure(ran):
    from engine.convergence.diagnostics import report_from_frames

    dock = ran.convergence
    report = dock.report_current_run()
    assert report is not None
    ref = report_from_frames(ran.workspace.current.result)
    for kind in set(report.kinds):
        n_stable = sum(1 for k, s in zip(ref.kinds, ref.stable, strict=True) if k == kind and s)
        n_fast = sum(1 for k, s in zip(ref.kinds, ref.stable, strict=True) if k == kind and not s)
        legend = dock.plots[kind].getPlotItem().legend
        labels = [label.text for _sample, label in legend.items]
        want = []
        if n_stable:
            want.append(f"stable layers: small entropy change ({n_stable} site{'' if n_stable == 1 else 's'})")
        if n_fast:
            want.append(f"fast layers: large entropy change ({n_fast} site{'' if n_fast == 1 else 's'})")
        assert sorted(labels) == sorted(want)
