"""What the docks share, on a real window after a tiny AudioLDM2 run: zoom, pan and one time
cursor across the heatmap, the overview and the player (a wheel zoom in one plot moves the
others' time axes, a click sets the cursor everywhere and the playback position, "reset zoom"
shows the whole run again), and one short site name in every dock with the full name as tooltip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from engine.site_labels import site_label
from engine.types import GenerationRequest
from gui.docks.overview_dock import GAP, THUMB_GRID
from tests.gui.conftest import TEST_MODEL

REQUEST = GenerationRequest(prompt="bass and drums", steps=3, duration=0.5, seed=1, per_head=True)


@pytest.fixture(scope="module")
def ran(engine_window, request):
    from pytestqt.qtbot import QtBot

    qtbot = QtBot(request)
    engine_window.resize(1400, 900)
    for dock in (engine_window.heatmap, engine_window.overview, engine_window.player):
        dock.show()
        dock.raise_()
    with qtbot.waitSignal(engine_window.bridge.runFinished, timeout=180_000):
        assert engine_window.generate(TEST_MODEL, "cpu", REQUEST) is not None
    qtbot.wait(50)
    return engine_window


def _x_range(plot) -> tuple[float, float]:
    return tuple(plot.getViewBox().viewRange()[0])


def _scene_point(plot, t: float) -> QPoint:
    """Widget pixel of time ``t`` (s), half-way up ``plot``."""
    lo, hi = plot.getViewBox().viewRange()[1]
    scene = plot.getViewBox().mapViewToScene(QPointF(t, (lo + hi) / 2))
    return plot.mapFromScene(scene)


def _wheel(plot, at: QPoint, clicks: int) -> None:
    """A real mouse-wheel event (``clicks`` notches up = zoom in) on the plot's viewport."""
    pos = QPointF(at)
    event = QWheelEvent(pos, QPointF(plot.mapToGlobal(at)), QPoint(0, 0), QPoint(0, 120 * clicks),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(plot.viewport(), event)


def _reference_cell(probs, lattice, n_time: int, rows: slice) -> np.ndarray:
    """Independent reference of an overview cell: head mean → token mean → time-major lattice →
    torch bilinear to (n_time, F) → the window's time rows → min–max → the mosaic's orientation."""
    a = np.asarray(probs, dtype=np.float64).mean(axis=0).mean(axis=1).reshape(lattice)
    m = torch.nn.functional.interpolate(torch.from_numpy(a)[None, None], size=(n_time, THUMB_GRID[1]),
                                        mode="bilinear", align_corners=False)[0, 0].numpy()[rows]
    m = (m - m.min()) / (m.max() - m.min())
    return m.T[::-1]


def test_wheel_zoom_in_the_heatmap_moves_player_and_overview(ran, qtbot):
    window = ran
    run, heat = window.workspace.current, window.heatmap.plot
    duration = run.duration()
    assert _x_range(heat) == pytest.approx((0.0, duration), abs=1e-6)
    _wheel(heat, _scene_point(heat, 0.25 * duration), clicks=3)
    lo, hi = _x_range(heat)
    assert lo >= 0.0 and hi <= duration + 1e-9 and hi - lo < 0.8 * duration, (lo, hi)
    for plot in (window.player.wave, window.player.mel_plot):
        assert _x_range(plot) == pytest.approx((lo, hi), abs=1e-6)
    assert (window.workspace.time.start, window.workspace.time.end) == pytest.approx((lo, hi))
    qtbot.waitUntil(lambda: window.overview.window_s == pytest.approx((lo, hi)) and not window.overview.cells_pending,
                    timeout=5000)
    # every overview cell shows that window: checked on one cell against an independent reference
    ov = window.overview
    site, step = ov.sites[0], ov.columns[-1]
    r, c = ov.cell_origin(site, step)
    t, f = THUMB_GRID
    n = int(np.ceil(t / ((hi - lo) / duration)))
    i0, i1 = int(np.floor(lo / duration * n)), int(np.ceil(hi / duration * n))
    rows = np.linspace(i0, i1 - 1, t).round().astype(int)
    ref = _reference_cell(run.frames[(step, site)], run.lattices[site], n, rows)
    np.testing.assert_allclose(ov.mosaic[r : r + f, c : c + t], ref, atol=2e-3)  # frames are stored in float16
    # pan in the player (the view range set as a drag sets it) → the heatmap follows
    window.player.wave.getViewBox().translateBy(x=0.1 * (hi - lo))
    lo2, hi2 = _x_range(window.player.wave)
    assert lo2 > lo and _x_range(heat) == pytest.approx((lo2, hi2), abs=1e-6)
    window.actions_by_id["reset_view"].trigger()
    for plot in (heat, window.player.wave, window.player.mel_plot):
        assert _x_range(plot) == pytest.approx((0.0, duration), abs=1e-6)
    qtbot.waitUntil(lambda: window.overview.window_s == pytest.approx((0.0, duration)), timeout=2000)


def test_a_click_sets_the_cursor_in_every_view_and_the_playback_position(ran, qtbot):
    window = ran
    duration = window.workspace.current.duration()
    target = 0.3 * duration
    heat = window.heatmap.plot
    qtbot.mouseClick(heat.viewport(), Qt.MouseButton.LeftButton, pos=_scene_point(heat, target))
    cursor = window.workspace.time.cursor
    assert cursor == pytest.approx(target, abs=duration / 100)  # within a pixel or two
    assert window.heatmap.play_line.value() == pytest.approx(cursor)
    assert [line.value() for line in window.player.cursors] == pytest.approx([cursor, cursor])
    assert window.player.output.position() == pytest.approx(cursor, abs=1.0 / 16000)
    xs, _ = window.overview.cursor.getData()
    t = THUMB_GRID[0]
    expected = [c * (t + GAP) + cursor / duration * t for c in range(len(window.overview.columns))]
    np.testing.assert_allclose(xs[0::2], expected, rtol=1e-6)
    # playback moves it: the null output's clock advances and the player polls
    clock, player = window.test_clock, window.player
    player.stop()
    clock["t"] = 100.0
    player.toggle_play()
    clock["t"] = 100.0 + 0.2 * duration
    player.poll()
    player.toggle_play()
    assert window.workspace.time.cursor == pytest.approx(0.2 * duration, abs=1.0 / 16000)
    assert window.heatmap.play_line.value() == pytest.approx(0.2 * duration, abs=1.0 / 16000)
    # dragging the player's cursor line (its position set as a drag does) moves the heatmap's
    player.cursors[0].setPos(0.7 * duration)
    assert window.heatmap.play_line.value() == pytest.approx(0.7 * duration)
    assert player.output.position() == pytest.approx(0.7 * duration, abs=1.0 / 16000)


def test_every_dock_names_a_site_by_the_same_short_label_with_the_full_name_as_tooltip(ran):
    window = ran
    run = window.workspace.current
    names = run.site_names
    assert len(names) > 2 and all(site_label(n) != n for n in names)
    combo = window.heatmap.site
    assert [combo.itemText(i) for i in range(combo.count())] == [site_label(n) for n in names]
    assert [combo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(combo.count())] == names
    ticks = window.overview.plot.getAxis("left")._tickLevels[0]
    assert [text for _y, text in ticks] == [site_label(n) for n in names]
    tree = window.heads.tree
    tops = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
    assert tops and all(t.text(0) == site_label(t.toolTip(0)) and t.toolTip(0) in names for t in tops)
    cross = [s.name for s in run.sites if s.kind == "cross"]
    window.steering.set_model_sites(run.sites)
    window.sae.set_model_sites(run.sites)
    steer = window.steering.layers
    assert [steer.item(i).text() for i in range(steer.count())] == [f"L{i}  {site_label(n)}" for i, n in enumerate(cross)]
    assert [steer.item(i).toolTip() for i in range(steer.count())] == cross
    sae = window.sae.layer
    assert [sae.itemText(i) for i in range(sae.count())] == [f"L{i}  {site_label(n)}" for i, n in enumerate(cross)]
    assert [sae.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(sae.count())] == cross
    site = names[1]
    window.workspace.select(mode="site", site=site, follow_live=False)
    assert not window.metrics.shown and not window.metrics.label.text().startswith(site_label(site) + " ·")
    window.metrics.raise_()  # what clicking its tab does
    assert window.metrics.label.text().startswith(site_label(site) + " ·")
    assert site in window.metrics.label.toolTip()
    report = window.convergence.report_current_run()
    assert report is not None
    assert window.convergence.curves
    for s, curve in window.convergence.curves.items():
        assert curve.toolTip().startswith(f"{site_label(s)}: {s} (")


def test_live_heads_scores_and_overview_cells_equal_a_fresh_computation_at_the_end(ran):
    """The Heads scores (read frame by frame during the run) and the overview's cells (computed once
    and reused while the sites of the first step came in) equal the engine on the finished run."""
    from engine.analysis.heads import label_free_relevance

    window = ran
    run, sel = window.workspace.current, window.workspace.selection
    context = run.context_of(sel.site)
    frames = {k: v for k, v in run.result.frames.items() if run.context_of(k[1]) == context}
    n_tokens = len(run.tokens_for(sel.site))
    ref = label_free_relevance([frames], [list(range(1, n_tokens))])
    assert set(window.heads.scores) == set(ref)
    for site, rel in ref.items():
        np.testing.assert_allclose(window.heads.scores[site], rel.score, rtol=1e-9)
    ov = window.overview
    window.workspace.time.reset_view()
    duration = run.duration()
    for site in ov.sites:
        for step in ov.columns:
            r, c = ov.cell_origin(site, step)
            ref_cell = _reference_cell(run.frames[(step, site)], run.lattices[site], THUMB_GRID[0],
                                       slice(0, THUMB_GRID[0]))
            np.testing.assert_allclose(ov.mosaic[r : r + THUMB_GRID[1], c : c + THUMB_GRID[0]], ref_cell, atol=2e-3,
                                       err_msg=f"{site} step {step} ({duration} s)")
