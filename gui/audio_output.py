"""Audio playback behind one interface: sounddevice when a device exists, a clocked null otherwise.

The real-time path (:meth:`PlaybackBuffer.fill`) only copies from a buffer prepared before
playback starts: no allocation, no I/O, no Qt. The GUI polls :meth:`AudioOutput.position`.
:meth:`AudioOutput.swap` changes the clip while it plays (at the loop boundary or in place),
without stopping the stream.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np


def as_mono(audio: np.ndarray) -> np.ndarray:
    """``audio`` as one contiguous float32 channel (channels averaged)."""
    mono = np.asarray(audio, dtype=np.float32)
    if mono.ndim == 2:
        mono = mono.mean(axis=0) if mono.shape[0] < mono.shape[1] else mono.mean(axis=1)
    return np.ascontiguousarray(mono.reshape(-1))


class PlaybackBuffer:
    """A prepared mono float32 buffer with a read head, loop flag and gain (thread-safe enough:
    the audio thread only reads ints/floats the GUI thread writes atomically).

    :meth:`queue` hands over the next clip without stopping: the real-time side takes it at the
    end of the current clip (the loop boundary: the next sample played is the new clip's first),
    or at its next block when ``at_boundary`` is False (the read head keeps its place). The GUI
    thread only writes ``_queued``; the real-time side only writes what it reads from it.
    """

    def __init__(self) -> None:
        self.data = np.zeros(0, dtype=np.float32)
        self.frame = 0
        self.loop = False
        self.gain = 1.0
        self.playing = False
        self.swaps = 0  # clips taken from the queue so far (the GUI redraws when it changes)
        self._queued: tuple[int, np.ndarray, bool] | None = None  # (number, clip, at_boundary)
        self._queued_n = 0  # written by the GUI thread
        self._taken_n = 0  # written by the real-time side

    def set_audio(self, audio: np.ndarray) -> None:
        self._queued = None
        self.data = as_mono(audio)
        self.frame = 0
        self.playing = False

    def queue(self, audio: np.ndarray, at_boundary: bool = True) -> None:
        """Play ``audio`` next: from the loop boundary, or (``at_boundary`` False) at once, in place."""
        self._queued_n += 1
        self._queued = (self._queued_n, as_mono(audio), bool(at_boundary))

    @property
    def pending(self) -> bool:
        """A queued clip has not been taken yet."""
        q = self._queued
        return q is not None and q[0] != self._taken_n

    def _take(self, boundary: bool) -> bool:
        q = self._queued
        if q is None or q[0] == self._taken_n or (q[2] and not boundary):
            return False
        self._taken_n = q[0]
        self.data = q[1]
        if boundary:
            self.frame = 0
        self.swaps += 1
        return True

    def _wrap(self) -> None:
        """The read head reached the end: the queued clip, or the loop, starts at 0; else stop."""
        if self._take(boundary=True) or self.loop:
            self.frame = 0
        else:
            self.playing = False

    def fill(self, out: np.ndarray) -> None:
        """Fill ``out`` (frames, channels) from the read head; zero-fill past the end."""
        n = out.shape[0]
        done = 0
        if self.playing:
            self._take(boundary=False)
        while done < n:
            if self.playing and self.frame >= self.data.shape[0]:
                self._wrap()
            data = self.data
            total = data.shape[0]
            if not self.playing or total == 0:
                out[done:] = 0.0
                return
            take = min(n - done, total - self.frame)
            src = data[self.frame : self.frame + take]
            for ch in range(out.shape[1]):  # per channel: broadcasting would allocate a temporary
                np.multiply(src, self.gain, out=out[done : done + take, ch])
            self.frame += take
            done += take

    def advance(self, frames: int) -> None:
        """Move the read head as if ``frames`` had been played (for clocked outputs with no device)."""
        if not self.playing:
            return
        self._take(boundary=False)
        left = int(frames)
        while self.playing and self.data.shape[0]:
            total = self.data.shape[0]
            if self.frame >= total:
                if left == 0 and (self.loop or self.pending):
                    break  # exactly at the boundary: the next sample decides
                self._wrap()
                continue
            step = min(left, total - self.frame)
            if step == 0:
                break
            self.frame += step
            left -= step


class AudioOutput(ABC):
    """Play one mono clip with play / pause / seek / loop; position polled by the GUI."""

    name = "abstract"

    def __init__(self) -> None:
        self.buffer = PlaybackBuffer()
        self.sample_rate = 0

    def load(self, audio: np.ndarray, sample_rate: int) -> None:
        self.stop()
        self.buffer.set_audio(audio)
        self.sample_rate = int(sample_rate)

    @property
    def duration(self) -> float:
        return self.buffer.data.shape[0] / self.sample_rate if self.sample_rate else 0.0

    def swap(self, audio: np.ndarray, sample_rate: int, at_boundary: bool = True) -> bool:
        """Play ``audio`` next without stopping: from the loop boundary (the end of the clip
        playing), or at once in place (``at_boundary`` False). True when it was queued on the
        playing clip; when nothing plays, or the sample rate differs, it is loaded instead (False;
        playback goes on from its start if it was playing)."""
        playing = self.is_playing()
        if not playing or int(sample_rate) != self.sample_rate or self.buffer.data.shape[0] == 0:
            self.load(audio, sample_rate)
            if playing:
                self.play()
            return False
        self.buffer.queue(audio, at_boundary)
        return True

    def set_loop(self, loop: bool) -> None:
        self.buffer.loop = bool(loop)

    def seek(self, seconds: float) -> None:
        total = self.buffer.data.shape[0]
        self.buffer.frame = int(np.clip(round(seconds * self.sample_rate), 0, total)) if self.sample_rate else 0

    def position(self) -> float:
        """Seconds of the clip that are currently audible."""
        return self.buffer.frame / self.sample_rate if self.sample_rate else 0.0

    def is_playing(self) -> bool:
        return self.buffer.playing

    @abstractmethod
    def play(self) -> None: ...

    @abstractmethod
    def pause(self) -> None: ...

    def stop(self) -> None:
        self.pause()
        self.buffer.frame = 0

    def close(self) -> None:
        self.stop()


class NullOutput(AudioOutput):
    """Plays silently in real time against ``clock`` (seconds); for machines with no sound device."""

    name = "null"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._last = clock()

    def _sync(self) -> None:
        now = self._clock()
        if self.buffer.playing and self.sample_rate:
            self.buffer.advance(int(round((now - self._last) * self.sample_rate)))
        self._last = now

    def play(self) -> None:
        self._sync()
        if self.buffer.frame >= self.buffer.data.shape[0]:
            self.buffer.frame = 0
        self.buffer.playing = self.buffer.data.shape[0] > 0

    def pause(self) -> None:
        self._sync()
        self.buffer.playing = False

    def seek(self, seconds: float) -> None:
        self._sync()
        super().seek(seconds)

    def position(self) -> float:
        self._sync()
        return super().position()

    def is_playing(self) -> bool:
        self._sync()
        return self.buffer.playing


class SoundDeviceOutput(AudioOutput):
    """Plays through PortAudio (sounddevice, imported lazily). Raises ``OSError`` when unusable."""

    name = "sounddevice"

    def __init__(self, device: int | str | None = None) -> None:
        super().__init__()
        import sounddevice as sd  # OSError when PortAudio is missing

        self._sd = sd
        self._device = device
        self._stream = None
        self._lock = threading.Lock()
        sd.query_devices(device, kind="output")  # PortAudioError / ValueError when no output

    def _callback(self, outdata, frames, time_info, status) -> None:  # audio thread
        self.buffer.fill(outdata)

    def load(self, audio: np.ndarray, sample_rate: int) -> None:
        super().load(audio, sample_rate)
        with self._lock:
            if self._stream is not None:
                self._stream.close()
            self._stream = self._sd.OutputStream(
                samplerate=self.sample_rate,
                channels=1,
                dtype="float32",
                device=self._device,
                callback=self._callback,
            )
            self._stream.start()

    def play(self) -> None:
        if self.buffer.frame >= self.buffer.data.shape[0]:
            self.buffer.frame = 0
        self.buffer.playing = self.buffer.data.shape[0] > 0

    def pause(self) -> None:
        self.buffer.playing = False

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None


def make_output(kind: str = "auto", clock: Callable[[], float] = time.monotonic) -> tuple[AudioOutput, str]:
    """The output asked for (``"auto"``, ``"sounddevice"`` or ``"null"``) and a note on what happened."""
    if kind not in ("auto", "sounddevice", "null"):
        raise ValueError(f"unknown audio output {kind!r}: use auto, sounddevice or null")
    if kind == "null":
        return NullOutput(clock), "silent output (chosen in preferences)"
    try:
        return SoundDeviceOutput(), "sound device"
    except Exception as exc:  # OSError (no PortAudio), PortAudioError, ValueError (no device)
        return NullOutput(clock), f"no sound device ({type(exc).__name__}: {exc}); playing silently"
