"""Listening while steering, on a real window and engine (tiny AudioLDM2): a dragged α slider plays
a fast preview that the release refines, newer requests cancel older ones, the idle engine
prefetches the α grid that a later move plays at once, previews come in at the loop boundary,
Space plays / pauses, and masked heads play against the unmasked run. References are direct
engine runs."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.backends.registry import load_backend
from engine.interventions.caa import Steer, random_directions
from engine.types import GenerationRequest
from gui.docks.steering_dock import ALPHA_SCALE
from gui.steer_listen_state import ClipCache, PendingAB, prefetch_grid, preview_steps
from tests.gui.conftest import TEST_MODEL

FIELDS = {"prompt": "bass and drums", "seed": 7, "steps": 8, "guidance": 3.0, "duration": 0.25}
PREVIEW_STEPS = 2  # a quarter of 8


@pytest.fixture(scope="module")
def reference():
    return load_backend(TEST_MODEL, device="cpu")


@pytest.fixture(scope="module")
def vectors(reference):
    """Unit steering vectors for every cross-attention site (a fixed random direction each)."""
    return random_directions(reference, concept="test")


@pytest.fixture(scope="module")
def window(engine_window, vectors):
    rd = engine_window.run_dock
    rd.prompt.setPlainText(FIELDS["prompt"])
    for name in ("seed", "steps", "guidance", "duration"):
        getattr(rd, name).setText(str(FIELDS[name]))
    engine_window.steering.add_vectors(vectors, "test vectors")
    return engine_window


@pytest.fixture
def row(window):
    return window.steering.rows[0]


def _request(steps: int = FIELDS["steps"], **extra) -> GenerationRequest:
    fields = {**FIELDS, "steps": steps}
    return GenerationRequest(**fields, capture=False, **extra)


def _direct(reference, vectors, alpha: float, steps: int = FIELDS["steps"]) -> np.ndarray:
    steers = (Steer(vectors, alpha),) if alpha else ()
    return np.asarray(reference.generate(_request(steps, interventions=steers)).audio)


def _close(got, want) -> None:
    want = np.asarray(want)
    scale = float(np.abs(want).max())
    assert scale > 0
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5 * scale)


def _ticks(alpha: float) -> int:
    return round(alpha * ALPHA_SCALE)


def _release_and_wait_ab(window, row, qtbot):
    with qtbot.waitSignal(window.listen.abShown, timeout=180_000) as blocker:
        row.slider.setSliderDown(False)  # sliderReleased: the full run
    return blocker.args[0]


def test_preview_steps_cache_and_grid_helpers():
    assert [preview_steps(GenerationRequest(prompt="x", steps=s)) for s in (1, 2, 8, 25, 100)] == [1, 2, 2, 3, 12]
    assert prefetch_grid(3.0) == [4.0, 2.0, 5.0, 1.0]
    assert prefetch_grid(199.5) == [198.5, 197.5]  # within ±200
    cache = ClipCache(capacity=2)
    for key in ("a", "b"):
        cache.put(key, key)
    cache.get("a")  # a is now the most recent
    cache.put("c", "c")
    assert len(cache) == 2 and "a" in cache and "c" in cache and "b" not in cache


def test_the_run_cache_keeps_few_whole_results_within_its_frame_budget():
    from types import SimpleNamespace

    from gui.steer_listen_state import RunCache, RunSpec

    def result(mb: float):
        return SimpleNamespace(frames={(0, "s"): np.zeros(int(mb * 1e6), dtype=np.uint8)})

    spec = [RunSpec("m", "cpu", _request()).changed(seed=i) for i in range(4)]
    cache = RunCache(capacity=2, max_mb=3.0)
    assert cache.put(spec[0], result(1.0)) and cache.put(spec[1], result(1.0))
    assert cache.put(spec[2], result(1.5))  # over the count and the bytes: spec[0], the oldest, goes
    assert len(cache) == 2 and cache.nbytes == 2_500_000 and cache.take(spec[0]) is None
    assert not cache.put(spec[3], result(3.5)) and len(cache) == 2  # alone over the budget: not kept
    assert cache.take(spec[1]) is not None and cache.take(spec[1]) is None  # taken once
    other_capture = spec[2].changed(per_head=True)
    assert cache.take(other_capture) is None and cache.take(spec[2]) is not None  # same audio, other frames


def test_drag_plays_a_fast_preview_and_the_release_refines_it(window, row, reference, vectors, qtbot):
    window.player.loop.setChecked(False)
    row.slider.setSliderDown(True)
    with qtbot.waitSignal(window.listen.clipPlayed, timeout=180_000) as blocker:
        row.slider.setValue(_ticks(10.0))
    clip = blocker.args[0]
    assert clip.kind == "preview" and clip.alphas == (10.0,) and clip.steps == PREVIEW_STEPS
    preview = _direct(reference, vectors, 10.0, steps=PREVIEW_STEPS)
    _close(clip.audio, preview)
    p = window.player
    assert p.output.is_playing()
    np.testing.assert_array_equal(p.loaded_audio, np.asarray(clip.audio, dtype=np.float32))
    assert not window.workspace.history  # a preview is not a run of the history
    direct_mel = reference.generate(_request(PREVIEW_STEPS, interventions=(Steer(vectors, 10.0),))).mel
    np.testing.assert_allclose(p.mel_item.image, np.asarray(direct_mel, np.float32), rtol=1e-4, atol=1e-4)

    pair = _release_and_wait_ab(window, row, qtbot)
    a, b = window.workspace.find(pair.a_id), window.workspace.find(pair.b_id)
    assert pair.kind == "steer" and a.request.interventions == ()
    assert b.request.steps == FIELDS["steps"] and b.result.recipe["interventions"][0]["alpha"] == 10.0
    full = _direct(reference, vectors, 10.0)
    _close(b.result.audio, full)
    _close(a.result.audio, _direct(reference, vectors, 0.0))
    assert np.abs(full - preview).max() > 0.01 * np.abs(full).max()  # the refinement is heard
    assert p.ab.isChecked() and p.output.is_playing()
    np.testing.assert_array_equal(p.loaded_audio, np.asarray(b.result.audio, dtype=np.float32))
    np.testing.assert_array_equal(p.mel_item.image, np.asarray(b.result.mel, np.float32))  # B's mel, not the preview's


def test_a_newer_move_cancels_the_older_preview(window, row, qtbot):
    bridge, listen = window.bridge, window.listen
    cancelled, played = [], []
    bridge.backgroundCancelled.connect(cancelled.append)
    listen.clipPlayed.connect(played.append)
    try:
        row.slider.setSliderDown(True)
        row.slider.setValue(_ticks(13.3))
        first = listen.render
        row.slider.setValue(_ticks(14.7))
        second = listen.render
        assert first is not None and second is not None and first.kind == second.kind == "preview"
        assert second.job_id != first.job_id and first.job_id in cancelled
        qtbot.waitUntil(lambda: bool(played), timeout=120_000)
        qtbot.wait(300)  # a late end of the first render would arrive now: it must not play
        assert [c.alphas for c in played] == [(14.7,)]
        _release_and_wait_ab(window, row, qtbot)
    finally:
        bridge.backgroundCancelled.disconnect(cancelled.append)
        listen.clipPlayed.disconnect(played.append)


def test_a_move_while_the_steered_run_goes_on_cancels_it(window, row, qtbot):
    listen = window.listen
    row.slider.setSliderDown(True)
    row.slider.setValue(_ticks(16.0))
    row.slider.setSliderDown(False)  # release: the steered B starts (its A is in the history)
    pending = listen.pending
    assert isinstance(pending, PendingAB) and pending.b_id is not None
    assert window.bridge.current_run_id == pending.b_id
    with qtbot.waitSignal(window.bridge.runCancelled, timeout=60_000) as blocker:
        row.slider.setSliderDown(True)
        row.slider.setValue(_ticks(17.0))
    assert blocker.args == [pending.b_id]
    qtbot.waitUntil(lambda: listen.last_clip is not None and listen.last_clip.alphas == (17.0,), timeout=120_000)
    assert window.workspace.find(pending.b_id).status == "cancelled"
    pair = _release_and_wait_ab(window, row, qtbot)
    assert window.workspace.find(pair.b_id).result.recipe["interventions"][0]["alpha"] == 17.0


def test_a_newer_release_cancels_the_steered_run_and_refines_the_newest(window, row, qtbot):
    listen, steering = window.listen, window.steering
    steering.preview.setChecked(False)  # releases only: no preview in between
    steering.auto.setChecked(False)  # no debounce: the test emits the releases
    try:
        steering.set_alpha(0, 20.0)
        steering.steerRequested.emit()
        first = listen.pending
        assert first is not None and first.b_id is not None and window.bridge.current_run_id == first.b_id
        steering.set_alpha(0, 17.0)
        with qtbot.waitSignal(window.bridge.runCancelled, timeout=60_000) as cancelled:
            steering.steerRequested.emit()
        assert cancelled.args == [first.b_id]
        with qtbot.waitSignal(listen.abShown, timeout=120_000) as shown:
            pass
    finally:
        steering.preview.setChecked(True)
        steering.auto.setChecked(True)
    refined = window.workspace.find(shown.args[0].b_id)
    assert refined.run_id != first.b_id and refined.result.recipe["interventions"][0]["alpha"] == 17.0


def test_prefetched_alpha_plays_at_once_without_a_generation(window, row, reference, vectors, qtbot):
    listen = window.listen
    centre = row.alpha
    assert centre == 17.0 and window.player.output.is_playing()
    qtbot.waitUntil(lambda: set(prefetch_grid(centre)) <= set(listen.cached_alphas()), timeout=180_000)
    qtbot.waitUntil(lambda: window.bridge.idle, timeout=60_000)
    history = len(window.workspace.history)
    row.slider.setSliderDown(True)
    row.slider.setValue(_ticks(centre + 1.0))  # onto a rendered α
    clip = listen.last_clip
    assert clip.kind == "prefetch" and clip.alphas == (18.0,) and clip.steps == FIELDS["steps"]
    assert window.bridge.idle and listen.render is None  # nothing was generated for it
    out = window.player.output
    out.position()  # the null output takes the in-place swap at its next block
    _close(out.buffer.data, _direct(reference, vectors, 18.0))
    assert out.is_playing() and len(window.workspace.history) == history
    started = []
    window.bridge.runStarted.connect(started.append)
    try:
        pair = _release_and_wait_ab(window, row, qtbot)  # adopts the kept result: no generation
    finally:
        window.bridge.runStarted.disconnect(started.append)
    adopted = window.workspace.find(pair.b_id)
    assert not started and not window.bridge.busy and len(window.workspace.history) == history + 1
    assert window.workspace.current is adopted and adopted.status == "done" and adopted.run_id == pair.b_id
    assert pair.a_id not in (None, pair.b_id) and adopted.result.run_id == pair.b_id
    np.testing.assert_array_equal(adopted.result.audio, clip.audio)
    direct = reference.generate(adopted.request)  # what the refine would have generated
    _close(adopted.result.audio, direct.audio)
    assert adopted.request.capture and set(adopted.frames) == set(direct.frames) and adopted.frames
    for key, frame in direct.frames.items():
        np.testing.assert_allclose(adopted.frames[key].astype(np.float32), frame.astype(np.float32), atol=2e-3)
    assert adopted.result.recipe["interventions"][0]["alpha"] == 18.0
    assert window.heatmap.image_array is not None  # its maps are shown at once


def test_a_new_request_cancels_the_prefetch(window, row, qtbot):
    listen, bridge = window.listen, window.bridge
    row.slider.setSliderDown(True)
    row.slider.setValue(_ticks(30.0))  # a new α: its full run, then a new grid to prefetch
    _release_and_wait_ab(window, row, qtbot)
    qtbot.waitUntil(lambda: listen.render is not None and listen.render.kind == "prefetch", timeout=60_000)
    job = listen.render.job_id
    assert bridge.background_job_id == job and not bridge.busy
    with qtbot.waitSignal(bridge.backgroundCancelled, timeout=5_000) as blocker:
        window.run_dock.generate_button.click()
    assert blocker.args == [job] and listen.render is None
    assert bridge.current_run_id is not None  # the new run started at once
    with qtbot.waitSignal(bridge.runFinished, timeout=120_000):
        pass


def test_a_preview_comes_in_at_the_loop_boundary(window, row, qtbot):
    p, clock = window.player, window.test_clock
    qtbot.waitUntil(lambda: not window.bridge.busy, timeout=120_000)
    p.loop.setChecked(True)
    out = p.output
    if not out.is_playing():
        p.toggle_play()
    out.seek(0.1)
    before = out.buffer.data.copy()
    row.slider.setSliderDown(True)
    with qtbot.waitSignal(window.listen.clipPlayed, timeout=120_000) as blocker:
        row.slider.setValue(_ticks(-12.0))
    clip = blocker.args[0]
    assert clip.kind == "preview"
    assert out.buffer.pending and out.position() == pytest.approx(0.1)
    np.testing.assert_array_equal(out.buffer.data, before)  # the playing clip goes on to its end
    clock["t"] += (out.duration - 0.1) + 0.05  # past the boundary
    assert out.position() == pytest.approx(0.05) and out.is_playing()
    np.testing.assert_array_equal(out.buffer.data, np.asarray(clip.audio, dtype=np.float32))
    _release_and_wait_ab(window, row, qtbot)
    p.loop.setChecked(False)


def test_the_prefetch_waits_for_a_listener(window, row, qtbot):
    listen, p = window.listen, window.player
    qtbot.waitUntil(lambda: not window.bridge.busy, timeout=120_000)

    def pause(_pair) -> None:  # the user stops listening as B arrives
        if p.output.is_playing():
            p.toggle_play()

    listen.abShown.connect(pause)
    try:
        row.slider.setSliderDown(True)
        row.slider.setValue(_ticks(-14.0))
        _release_and_wait_ab(window, row, qtbot)
    finally:
        listen.abShown.disconnect(pause)
    assert not p.output.is_playing() and listen.render is None and window.bridge.idle
    p.toggle_play()  # listening again: the idle engine prefetches, nearest α first
    assert listen.render is not None and listen.render.kind == "prefetch" and listen.render.alphas == (-13.0,)


def test_space_plays_and_pauses_unless_a_text_field_has_focus(window, qtbot):
    p = window.player
    window.activateWindow()
    rd = window.run_dock

    def press(widget) -> bool:
        widget.setFocus()
        before = p.output.is_playing()
        qtbot.keyClick(widget, Qt.Key.Key_Space)
        return p.output.is_playing() != before

    assert press(window.heatmap.widget())
    assert press(window.steering.rows[0].slider)
    assert press(p.play_button)
    seed = rd.seed.text()
    try:
        assert not press(rd.seed) and rd.seed.text() != seed  # the space went into the field
        assert not press(rd.prompt)
    finally:
        rd.seed.setText(seed)
        rd.prompt.setPlainText(FIELDS["prompt"])


def test_masked_heads_play_against_the_unmasked_run(window, row, reference, vectors, qtbot):
    qtbot.waitUntil(lambda: not window.bridge.busy, timeout=120_000)
    window.steering.auto.setChecked(False)
    row.slider.setValue(0)  # unsteered: A and B differ by the mask only
    window.steering.auto.setChecked(True)
    masks = {s.name: [False] + [True] * (s.heads - 1) for s in reference.sites() if s.kind == "cross"}
    window.workspace.set_head_masks(masks)
    window.heads.apply_box.setChecked(True)
    try:
        with qtbot.waitSignal(window.listen.abShown, timeout=180_000) as blocker:
            window.run_dock.generate_button.click()
    finally:
        window.heads.apply_box.setChecked(False)
        window.workspace.set_head_masks({})
    pair = blocker.args[0]
    a, b = window.workspace.find(pair.a_id), window.workspace.find(pair.b_id)
    assert pair.kind == "mask" and a.request.head_mask is None
    assert b.request.head_mask == {k: tuple(v) for k, v in masks.items()}
    assert a.request.seed == b.request.seed == FIELDS["seed"] and a.request.interventions == ()
    unmasked = np.asarray(reference.generate(_request()).audio)
    masked = np.asarray(reference.generate(_request(head_mask=masks)).audio)
    _close(a.result.audio, unmasked)
    _close(b.result.audio, masked)
    assert np.abs(masked - unmasked).max() > 0.01 * np.abs(unmasked).max()
    p = window.player
    assert (p.a_run.currentData(), p.b_run.currentData()) == (a.run_id, b.run_id)
    assert p.ab.isChecked() and p.output.is_playing()
    np.testing.assert_array_equal(p.loaded_audio, np.asarray(b.result.audio, dtype=np.float32))
