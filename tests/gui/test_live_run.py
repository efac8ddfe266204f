"""The workstation on a real engine (tiny AudioLDM2 from configs): live views, cancel, heads,
export and sessions. One window per module; each test drives it through its public methods."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import soundfile as sf
import torch
from PySide6.QtGui import QImage

from engine.types import EngineError, GenerationRequest
from gui.export import frames_from_npz
from tests.gui.conftest import TEST_MODEL

GRID = (128, 64)


def reference_map(probs, lattice, head_mask=None, token_ids=None, pooling="max") -> np.ndarray:
    """Independent reference: head mean → token max/mean → time-major lattice → torch bilinear."""
    p = np.asarray(probs, dtype=np.float64)
    if head_mask is not None:
        p = p[np.asarray(head_mask, dtype=bool)]
    a = p.mean(axis=0)
    if token_ids is not None:
        a = a[:, token_ids]
    q = (a.max(axis=1) if pooling == "max" else a.mean(axis=1)).reshape(lattice)
    t = torch.from_numpy(q)[None, None]
    out = torch.nn.functional.interpolate(t, size=GRID, mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def _run(qtbot, window, steps=4, duration=0.25, seed=0, prompt="bass and drums", timeout=180_000):
    request = GenerationRequest(prompt=prompt, steps=steps, duration=duration, seed=seed, per_head=True)
    with qtbot.waitSignal(window.bridge.runFinished, timeout=timeout) as blocker:
        run_id = window.generate(TEST_MODEL, "cpu", request)
        assert run_id is not None
    return blocker.args[0]


@pytest.fixture(scope="module")
def first_run(engine_window, request):
    """A finished 5-step run, with what the heatmap showed at every live repaint."""
    from pytestqt.qtbot import QtBot

    window = engine_window
    shown = []

    def on_step(info):
        # record the (step, site) the heatmap's image was made from (``shown_key``), not the
        # workspace selection: the view may be one step ahead of ``info.step``, and the selection
        # may already have moved to a step whose first frames have not arrived (no repaint yet)
        img, key = window.heatmap.image_array, window.heatmap.shown_key
        if img is not None and key is not None:
            sel = key[1]
            shown.append((sel.step, sel.site, img.copy()))

    window.bridge.stepDone.connect(on_step)
    try:
        result = _run(QtBot(request), window, steps=5)
    finally:
        window.bridge.stepDone.disconnect(on_step)
    return result, shown


def test_live_heatmap_changes_at_each_step_and_matches_the_engine(engine_window, first_run):
    window = engine_window
    result, shown = first_run
    live = []
    for s, site, img in shown:  # one record per step shown (two step signals may show the same one)
        if img is not None and (not live or live[-1][0] != s):
            live.append((s, site, img))
    assert len(live) >= 2, f"only {len(live)} live repaints"
    for (_, _, a), (_, _, b) in zip(live, live[1:], strict=False):
        assert not np.array_equal(a, b), "the heatmap did not change between two live steps"
    steps_seen = [s for s, _, _ in live]
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] == 4
    for step, site, img in live:  # every live image is that step's map of the engine's frames
        ref = reference_map(result.frames[(step, site)], result.lattices[site])
        np.testing.assert_allclose(img, ref, rtol=1e-4, atol=1e-6)
    run = window.workspace.current
    assert run.status == "done" and run.result is result
    for key, probs in result.frames.items():  # frames that crossed threads equal the result
        assert np.array_equal(run.frames[key], probs)
    assert window.player.output.duration == pytest.approx(len(result.audio) / result.sample_rate)
    assert window.bridge.dropped_stale == 0


def test_overview_click_focuses_the_heatmap(engine_window, first_run):
    window = engine_window
    ov = window.overview
    site, step = ov.sites[-1], ov.columns[1]
    ov.focus(site, step)
    sel = window.workspace.selection
    assert (sel.site, sel.step, sel.mode) == (site, step, "site")
    result = first_run[0]
    ref = reference_map(result.frames[(step, site)], result.lattices[site])
    np.testing.assert_allclose(window.heatmap.image_array, ref, rtol=1e-4, atol=1e-6)
    r, c = ov.cell_origin(site, step)
    cell = ov.mosaic[r : r + 16, c : c + 24]
    assert np.isfinite(cell).all() and cell.max() == pytest.approx(1.0)


def test_cursor_readout_names_time_frequency_value_site_step_head(engine_window, first_run):
    from engine.analysis.melscale import grid_hz

    window = engine_window
    run = window.workspace.current
    site = run.site_names[2]
    window.workspace.select(mode="site", site=site, step=3, head=1, tokens=None, follow_live=False)
    img = window.heatmap.image_array
    n_rows = run.mel_spec.n_mels
    t_s, fi, ti = 0.6 * run.duration(), 40, int(0.6 * GRID[0])
    y = (fi + 0.5) * n_rows / GRID[1]
    text = window.heatmap.describe(t_s, y)
    hz = grid_hz(run.mel_spec, GRID[1])[fi]
    assert f"t={t_s:.3f} s" in text and f"f={hz:.0f} Hz" in text
    assert f"value={img[ti, fi]:.4g}" in text and f"site={site}" in text and "step=3" in text and "head=1" in text
    ref = reference_map(first_run[0].frames[(3, site)], run.lattices[site], head_mask=[h == 1 for h in range(4)])
    np.testing.assert_allclose(img, ref, rtol=1e-4, atol=1e-6)
    window.workspace.select(head=None)


def test_keyboard_navigation_moves_step_and_site(engine_window, first_run, qtbot):
    window = engine_window
    run = window.workspace.current
    window.workspace.select(site=run.site_names[0], step=2, follow_live=False)
    window.actions_by_id["step_back"].trigger()
    assert window.workspace.selection.step == 1
    window.actions_by_id["step_fwd"].trigger()
    window.actions_by_id["step_fwd"].trigger()
    assert window.workspace.selection.step == 3
    window.actions_by_id["site_down"].trigger()
    assert window.workspace.selection.site == run.site_names[1]
    window.actions_by_id["site_up"].trigger()
    assert window.workspace.selection.site == run.site_names[0]
    shortcuts = {a.shortcut().toString() for a in window.actions_by_id.values()}
    assert {"Space", "Left", "Right", "Up", "Down", "Ctrl+G", "Esc", "Ctrl+S", "Ctrl+E"} <= shortcuts


def test_head_toggles_change_the_aggregated_map(engine_window, first_run):
    window, ws = engine_window, engine_window.workspace
    result = first_run[0]
    run = ws.current
    site = run.site_names[0]
    ws.set_head_masks({})
    ws.select(mode="aggregate", site=site, step=max(run.steps), tokens=(1,), follow_live=False)
    context_sites = [n for n in run.site_names if run.context_of(n) == run.context_of(site)]
    before = window.heatmap.image_array.copy()
    ref_all = np.mean([reference_map(result.frames[(s, n)], result.lattices[n], token_ids=[1])
                       for (s, n) in result.frames if n in context_sites], axis=0)
    np.testing.assert_allclose(before, ref_all, rtol=1e-4, atol=1e-6)

    heads = window.heads
    top = next(heads.tree.topLevelItem(i) for i in range(heads.tree.topLevelItemCount())
               if heads.tree.topLevelItem(i).toolTip(0) == site)
    top.child(0).setCheckState(0, top.child(0).checkState(0).__class__.Unchecked)  # a user click
    n_heads = result.frames[(0, site)].shape[0]
    assert ws.head_masks[site] == [False] + [True] * (n_heads - 1)
    after = window.heatmap.image_array
    assert not np.allclose(after, before)
    ref_masked = np.mean([
        reference_map(result.frames[(s, n)], result.lattices[n], ws.head_masks[site] if n == site else None, [1])
        for (s, n) in result.frames if n in context_sites
    ], axis=0)
    np.testing.assert_allclose(after, ref_masked, rtol=1e-4, atol=1e-6)

    heads.preset("none")
    assert np.all(window.heatmap.image_array == 0)
    heads.preset("all")
    np.testing.assert_allclose(window.heatmap.image_array, before, rtol=1e-6, atol=1e-9)
    heads.k.setValue(3)
    heads.preset("topk")
    assert sum(sum(m) for m in ws.head_masks.values()) == 3
    ws.set_head_masks({})
    ws.select(mode="site", tokens=None)


def test_exports_round_trip(engine_window, first_run, tmp_path):
    window = engine_window
    result = first_run[0]
    run = window.workspace.current
    window.workspace.select(mode="site", site=run.site_names[0], step=4, tokens=(1,))
    shown = window.heatmap.image_array.copy()

    png = window.export_to(tmp_path / "map.png")
    img = QImage(str(png))
    assert img.width() == window.heatmap.widget().width() and img.height() > 100
    ptr = img.convertToFormat(QImage.Format.Format_RGB32).constBits()
    pixels = np.frombuffer(ptr, dtype=np.uint32, count=img.width() * img.height())
    assert len(np.unique(pixels)) > 50  # not blank: a colour map and text

    svg = window.export_to(tmp_path / "map.svg")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(list(root.iter())) > 20

    csv = window.export_to(tmp_path / "map.csv")
    table = np.loadtxt(csv, delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 1:], shown, rtol=1e-6)
    np.testing.assert_allclose(table[:, 0], (np.arange(GRID[0]) + 0.5) * run.duration() / GRID[0], rtol=1e-6)

    npz = window.export_to(tmp_path / "data.npz")
    frames = frames_from_npz(npz)
    assert set(frames) == set(result.frames)
    for key, arr in result.frames.items():
        assert frames[key].dtype == arr.dtype and np.array_equal(frames[key], arr)
    with np.load(npz) as z:
        assert np.array_equal(z["audio"], result.audio)
        assert np.array_equal(z["shown_map"], shown)

    wav = window.export_to(tmp_path / "audio.wav")
    audio, sr = sf.read(wav, dtype="float32")
    assert sr == result.sample_rate and np.array_equal(audio, np.asarray(result.audio, dtype=np.float32))
    flac = window.export_to(tmp_path / "audio.flac")
    audio24, _ = sf.read(flac, dtype="float64")
    np.testing.assert_allclose(audio24, np.clip(result.audio, -1, 1), atol=2.0**-23)

    with pytest.raises(EngineError, match="cannot export audio.mp3"):
        window.export_to(tmp_path / "audio.mp3")
    with pytest.raises(EngineError, match="does not exist"):
        window.export_to(tmp_path / "missing" / "x.wav")
    window.workspace.select(tokens=None)


def test_session_save_and_reopen_restores_the_same_state(engine_window, first_run, tmp_path):
    window, ws = engine_window, engine_window.workspace
    run = ws.current
    site = run.site_names[1]
    ws.set_head_masks({site: [True, False, True, False]})
    ws.select(mode="site", site=site, step=3, head=None, tokens=(2,), follow_live=False)
    window.heatmap.cmap.setCurrentText("magma")
    window.heatmap.levels_mode.setCurrentText("percentile")
    shown = window.heatmap.image_array.copy()
    saved_sel, saved_masks = ws.selection, dict(ws.head_masks)
    path = window.save_session_to(tmp_path / "s")
    assert path.suffix == ".aiba"

    ws.set_head_masks({})
    ws.select(site=run.site_names[0], step=0, tokens=None)
    window.heatmap.cmap.setCurrentText("viridis")
    window.heatmap.levels_mode.setCurrentText("auto")
    assert not np.array_equal(window.heatmap.image_array, shown)

    window.open_session(path)
    assert ws.selection == saved_sel and ws.head_masks == saved_masks
    assert window.heatmap.cmap.currentText() == "magma"
    assert window.heatmap.levels_mode.currentText() == "percentile"
    np.testing.assert_array_equal(window.heatmap.image_array, shown)
    reopened = ws.current
    assert reopened.request == run.request and reopened.run_id != run.run_id
    for key, arr in first_run[0].frames.items():
        assert np.array_equal(reopened.frames[key], arr)
    from gui.settings import recent_files

    assert recent_files()[0] == str(path)
    ws.set_head_masks({})


def test_levels_auto_percentile_and_manual(engine_window, first_run):
    hm = engine_window.heatmap
    engine_window.workspace.select(mode="site", step=4, head=None, tokens=(0,))
    img = hm.image_array
    hm.levels_mode.setCurrentText("auto")
    assert hm.levels() == (float(img.min()), float(img.max()))
    hm.levels_mode.setCurrentText("percentile")
    hm.percentile.setValue(95.0)
    lo, hi = hm.levels()
    assert lo == pytest.approx(np.percentile(img, 5.0)) and hi == pytest.approx(np.percentile(img, 95.0))
    assert hm.item.levels is not None and tuple(np.asarray(hm.item.levels)) == pytest.approx((lo, hi))
    hm.levels_mode.setCurrentText("manual")
    hm.lo.setValue(0.1)
    hm.hi.setValue(0.2)
    assert hm.levels() == (pytest.approx(0.1), pytest.approx(0.2))
    assert tuple(hm.colorbar.levels()) == pytest.approx((0.1, 0.2))
    hm.levels_mode.setCurrentText("auto")
    engine_window.workspace.select(tokens=None)


def test_autosave_writes_a_session_that_reopens(engine_window, first_run):
    from engine.session import load_session

    path = engine_window.autosave()
    assert path is not None and path.is_file()
    session = load_session(path)
    assert session.result is not None and session.request == engine_window.workspace.current.request
    assert set(session.result.frames) == set(first_run[0].frames)


def test_player_cursor_follows_the_null_clock(engine_window, first_run, qtbot):
    window = engine_window
    player, clock = window.player, window.test_clock
    player.stop()
    clock["t"] = 10.0
    player.toggle_play()
    assert player.output.is_playing() and player.play_button.text() == "Pause"
    clock["t"] = 10.1
    player.poll()
    assert player.output.position() == pytest.approx(0.1, abs=1.0 / 16000)
    assert window.heatmap.play_line.value() == pytest.approx(0.1, abs=1.0 / 16000)
    clock["t"] = 20.0
    player.poll()  # past the end without loop: stops at the end
    assert not player.output.is_playing() and player.play_button.text() == "Play"
    player.seek(0.05)
    assert window.heatmap.play_line.value() == pytest.approx(0.05, abs=1.0 / 16000)
    player.solo.setChecked(True)  # the band solo of the shown map is what plays now
    audio, _ = player.source_audio()
    assert audio.shape == first_run[0].audio.shape and not np.array_equal(audio, first_run[0].audio)
    player.solo.setChecked(False)


def test_ab_switch_plays_the_other_run(engine_window, first_run, qtbot):
    window = engine_window
    second = _run(qtbot, window, steps=2, seed=5)
    player = window.player
    assert player.a_run.currentData() == second.run_id
    assert player.b_run.currentData() == first_run[0].run_id
    player.ab.setChecked(True)
    np.testing.assert_array_equal(player.loaded_audio, first_run[0].audio)
    player.ab.setChecked(False)
    np.testing.assert_array_equal(player.loaded_audio, second.audio)
    window.log_dock.reopenRequested.emit(first_run[0].run_id)  # reopen from history
    assert window.workspace.current.run_id == first_run[0].run_id


def test_cancel_stops_the_run_and_the_engine_stays_usable(engine_window, qtbot):
    window = engine_window
    request = GenerationRequest(prompt="drums", steps=400, duration=0.25, per_head=False)
    with qtbot.waitSignal(window.bridge.stepDone, timeout=120_000):
        run_id = window.generate(TEST_MODEL, "cpu", request)
    assert window.run_dock.cancel_button.isEnabled()
    with qtbot.waitSignal(window.bridge.runCancelled, timeout=60_000) as blocker:
        window.actions_by_id["cancel"].trigger()
    assert blocker.args == [run_id]
    run = window.workspace.find(run_id)
    assert run.status == "cancelled" and run.result is None and run.steps_done < 400
    assert not window.bridge.busy and window.run_dock.generate_button.isEnabled()
    again = _run(qtbot, window, steps=2, seed=1)
    assert again.run_id == run_id + 1 and len(again.audio) > 0


def test_frames_of_a_stale_run_are_dropped(engine_window, first_run):
    from engine.types import AttentionFrame, readonly

    window = engine_window
    run = window.workspace.current
    before = dict(run.frames)
    dropped = window.bridge.dropped_stale
    site = run.site_names[0]
    probs = readonly(np.ones_like(run.frames[(0, site)]))
    window.bridge._worker.frame.emit(AttentionFrame(run.run_id, 0, site, probs, run.lattices[site], "t5", False))
    assert window.bridge.dropped_stale == dropped + 1  # no run going on: every payload is stale
    assert run.frames.keys() == before.keys() and run.frames[(0, site)] is before[(0, site)]


def test_digest_helper_is_sensitive():  # guards the self-test's change detector
    from gui.app import _digest

    a = np.zeros((4, 4), np.float32)
    b = a.copy()
    b[0, 0] = 1e-7
    assert _digest(a) != _digest(b) and _digest(a) == hashlib.sha1(a.tobytes()).hexdigest()
