"""Loop playback swaps in a new clip at the loop boundary without stopping: checked sample by
sample on the PortAudio path (a fake sound card behind ``sounddevice``'s interface, the only fake)
and on the clocked null output."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from gui import audio_output as ao

SR = 16000
BLOCK = 256


class FakeStream:
    """Stands in for ``sounddevice.OutputStream``: keeps the callback; the test pulls blocks."""

    made: list[FakeStream] = []
    refuse: int | None = None  # a sample rate the card does not take

    def __init__(self, samplerate, channels, dtype, device, callback) -> None:
        if samplerate == FakeStream.refuse:
            raise OSError(f"Invalid sample rate {samplerate}")
        self.samplerate, self.channels, self.callback = samplerate, channels, callback
        self.started = self.closed = False
        FakeStream.made.append(self)

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True

    def pull(self, blocks: int) -> np.ndarray:
        """What the sound card would play over ``blocks`` callbacks, as one array."""
        out = []
        for _ in range(blocks):
            block = np.full((BLOCK, self.channels), np.nan, dtype=np.float32)
            self.callback(block, BLOCK, None, None)
            out.append(block[:, 0].copy())
        return np.concatenate(out)


@pytest.fixture
def card(monkeypatch):
    fake = types.ModuleType("sounddevice")
    fake.OutputStream = FakeStream
    fake.query_devices = lambda device=None, kind=None: {"name": "fake card"}
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    FakeStream.made, FakeStream.refuse = [], None
    out = ao.SoundDeviceOutput()
    yield out
    out.close()


def _ramp(n: int, sign: float = 1.0) -> np.ndarray:
    return (sign * np.arange(1, n + 1)).astype(np.float32)  # no zero: a gap would show as 0


def test_swap_on_a_looping_stream_starts_the_new_clip_exactly_at_the_boundary(card):
    a, b = _ramp(1000), _ramp(700, -1.0)
    card.load(a, SR)
    card.set_loop(True)
    card.play()
    stream = FakeStream.made[-1]
    head = stream.pull(3)  # 768 samples of A
    assert card.swap(b, SR) is True
    tail = stream.pull(6)  # 1536 more: the rest of A (232), then B, B looping
    played = np.concatenate([head, tail])
    expected = np.concatenate([a, b, b])[: played.size]
    np.testing.assert_array_equal(played, expected)
    assert len(FakeStream.made) == 1 and not stream.closed  # the stream never stopped
    assert card.buffer.swaps == 1 and card.is_playing()


def test_several_swaps_before_the_boundary_play_only_the_newest(card):
    a, b, c = _ramp(600), _ramp(500, -1.0), _ramp(400) * 10
    card.load(a, SR)
    card.set_loop(True)
    card.play()
    stream = FakeStream.made[-1]
    head = stream.pull(1)
    card.swap(b, SR)
    card.swap(c, SR)
    played = np.concatenate([head, stream.pull(4)])
    np.testing.assert_array_equal(played, np.concatenate([a, c, c, c])[: played.size])


def test_swap_in_place_keeps_the_read_head(card):
    a, b = _ramp(2000), _ramp(2000, -1.0)
    card.load(a, SR)
    card.play()
    stream = FakeStream.made[-1]
    head = stream.pull(2)  # 512 samples
    card.swap(b, SR, at_boundary=False)
    tail = stream.pull(2)
    np.testing.assert_array_equal(head, a[:512])
    np.testing.assert_array_equal(tail, b[512:1024])  # B from where A was, no restart


def test_swap_when_stopped_loads_the_clip(card):
    a, b = _ramp(100), _ramp(300, -1.0)
    card.load(a, SR)
    assert card.swap(b, SR) is False
    assert card.duration == pytest.approx(300 / SR) and not card.is_playing()
    card.play()
    np.testing.assert_array_equal(FakeStream.made[-1].pull(2)[:300], b)


def test_null_output_crosses_into_the_swapped_clip_at_the_boundary():
    now = {"t": 0.0}
    out = ao.NullOutput(lambda: now["t"])
    out.load(_ramp(SR), SR)  # 1 s
    out.set_loop(True)
    out.play()
    now["t"] = 0.75
    assert out.swap(_ramp(SR // 2, -1.0), SR) is True
    assert out.duration == pytest.approx(1.0)  # A plays on until the boundary
    now["t"] = 1.10  # 0.25 s of A left at the swap, then 0.10 s into B (0.5 s long)
    assert out.position() == pytest.approx(0.10) and out.duration == pytest.approx(0.5)
    now["t"] = 1.70  # B loops: 0.70 s into a 0.5 s clip
    assert out.position() == pytest.approx(0.20) and out.is_playing()


def test_player_plays_on_silently_when_the_card_refuses_the_new_clips_rate(card, qtbot):
    from gui.docks.player_dock import PlayerDock
    from gui.workspace import Workspace

    dock = PlayerDock(Workspace(), card)
    qtbot.addWidget(dock)
    messages: list[str] = []
    dock.message.connect(messages.append)
    try:
        dock.play_clip(_ramp(1000), SR, at_boundary=True)
        assert dock.output is card and card.is_playing()
        FakeStream.refuse = 22050
        dock.play_clip(_ramp(500), 22050, at_boundary=True)  # no exception escapes
        assert isinstance(dock.output, ao.NullOutput) and dock.output.is_playing()
        assert dock.output.sample_rate == 22050 and "playing silently" in messages[-1]
    finally:
        dock.close_output()
