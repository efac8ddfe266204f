"""Audio output: the real-time fill copies from the prepared buffer; the null output keeps time."""

from __future__ import annotations

import numpy as np
import pytest

from gui import audio_output as ao


def test_fill_copies_applies_gain_and_zero_fills_the_tail():
    buf = ao.PlaybackBuffer()
    buf.set_audio(np.arange(10, dtype=np.float32))
    buf.gain = 0.5
    buf.playing = True
    out = np.full((4, 2), 9.0, dtype=np.float32)
    buf.fill(out)
    np.testing.assert_array_equal(out, np.array([[0, 0], [0.5, 0.5], [1, 1], [1.5, 1.5]], np.float32))
    buf.frame = 8
    buf.fill(out)
    np.testing.assert_array_equal(out[:, 0], [4.0, 4.5, 0.0, 0.0])
    assert not buf.playing and buf.frame == 10


def test_fill_wraps_around_when_looping():
    buf = ao.PlaybackBuffer()
    buf.set_audio(np.arange(5, dtype=np.float32))
    buf.loop, buf.playing, buf.frame = True, True, 3
    out = np.zeros((6, 1), dtype=np.float32)
    buf.fill(out)
    np.testing.assert_array_equal(out[:, 0], [3, 4, 0, 1, 2, 3])
    assert buf.frame == 4 and buf.playing


def test_fill_does_not_allocate_per_call():
    import tracemalloc

    buf = ao.PlaybackBuffer()
    buf.set_audio(np.random.default_rng(0).standard_normal(48000).astype(np.float32))
    buf.playing, buf.loop = True, True
    out = np.zeros((8192, 2), dtype=np.float32)
    buf.fill(out)
    tracemalloc.start()
    for _ in range(50):
        buf.fill(out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4096  # far below one channel of the block (8192 * 4 B = 32 KiB)


def test_null_output_follows_its_clock():
    now = {"t": 100.0}
    out = ao.NullOutput(lambda: now["t"])
    out.load(np.zeros(16000, dtype=np.float32), 16000)
    assert out.duration == pytest.approx(1.0)
    out.play()
    now["t"] += 0.25
    assert out.position() == pytest.approx(0.25)
    out.pause()
    now["t"] += 5.0
    assert out.position() == pytest.approx(0.25)
    out.seek(0.9)
    out.play()
    now["t"] += 0.5
    assert out.position() == pytest.approx(1.0) and not out.is_playing()
    out.set_loop(True)
    out.seek(0.9)
    out.play()
    now["t"] += 0.3
    assert out.position() == pytest.approx(0.2) and out.is_playing()


def test_make_output_falls_back_to_null_when_sounddevice_fails(monkeypatch):
    def broken(*a, **k):
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(ao, "SoundDeviceOutput", broken)
    out, note = ao.make_output("auto")
    assert isinstance(out, ao.NullOutput) and "PortAudio library not found" in note
    out, note = ao.make_output("null")
    assert isinstance(out, ao.NullOutput) and "chosen" in note
    with pytest.raises(ValueError, match="unknown audio output"):
        ao.make_output("speaker")


def test_sounddevice_output_on_this_machine_works_or_refuses_cleanly():
    try:
        out = ao.SoundDeviceOutput()
    except Exception as exc:  # no PortAudio or no output device: the refusal must be an error, not a crash
        assert isinstance(exc, (OSError, ValueError)) or type(exc).__name__ == "PortAudioError"
        return
    out.load(np.zeros(1600, dtype=np.float32), 16000)
    out.play()
    out.close()
    assert not out.is_playing()
