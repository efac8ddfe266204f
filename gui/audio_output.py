"""Audio playback behind one interface: sounddevice when a device exists, a clocked null otherwise.

The real-time path (:meth:`PlaybackBuffer.fill`) only copies from a buffer prepared before
playback starts: no allocation, no I/O, no Qt. The GUI polls :meth:`AudioOutput.position`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np


class PlaybackBuffer:
    """A prepared mono float32 buffer with a read head, loop flag and gain (thread-safe enough:
    the audio thread only reads ints/floats the GUI thread writes atomically)."""

    def __init__(self) -> None:
        self.data = np.zeros(0, dtype=np.float32)
        self.frame = 0
        self.loop = False
        self.gain = 1.0
        self.playing = False

    def set_audio(self, audio: np.ndarray) -> None:
        mono = np.asarray(audio, dtype=np.float32)
        if mono.ndim == 2:
            mono = mono.mean(axis=0) if mono.shape[0] < mono.shape[1] else mono.mean(axis=1)
        self.data = np.ascontiguousarray(mono.reshape(-1))
        self.frame = 0
        self.playing = False

    def fill(self, out: np.ndarray) -> None:
        """Fill ``out`` (frames, channels) from the read head; zero-fill past the end."""
        n = out.shape[0]
        done = 0
        data = self.data
        total = data.shape[0]
        while done < n:
            if not self.playing or total == 0 or self.frame >= total:
                out[done:] = 0.0
                if self.frame >= total and not self.loop:
                    self.playing = False
                return
            take = min(n - done, total - self.frame)
            src = data[self.frame : self.frame + take]
            for ch in range(out.shape[1]):  # per channel: broadcasting would allocate a temporary
                np.multiply(src, self.gain, out=out[done : done + take, ch])
            self.frame += take
            done += take
            if self.frame >= total and self.loop:
                self.frame = 0

    def advance(self, frames: int) -> None:
        """Move the read head as if ``frames`` had been played (for clocked outputs with no device)."""
        total = self.data.shape[0]
        if not self.playing or total == 0:
            return
        pos = self.frame + frames
        if pos >= total:
            if self.loop:
                pos %= total
            else:
                pos = total
                self.playing = False
        self.frame = pos


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
