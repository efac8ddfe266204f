"""Choosing the stem window of an evaluation item *before* anything is generated.

A class's stem can be silent for whole bars (renders of MIDI parts rest, real Slakh stems too), so
a fixed ``--offset`` window often holds no ground truth. The window is chosen from the stem audio
itself, which works for any Slakh-format track (no per-bar metadata needed): frames of ``frame_s``
seconds are *active* when the summed class stems' RMS exceeds ``threshold_db`` dBFS (the rule of
:meth:`engine.data.slakh.Track.active_classes`). Candidate starts run from ``offset`` in steps of
``step_s`` while the window fits in the track; the first window whose share of active frames is
within ``tolerance`` of the best share is chosen (``search=False``: only the ``offset`` window is
tried). A best share below ``min_active`` refuses the item with an :class:`EngineError` that says
how active the class was at best.

Short tracks: only windows that end inside the audio are candidates (``WINDOW_SLACK_S`` of rounding
allowed). When not even the window at ``offset`` fits — a track shorter than ``offset + duration``
— the item is refused with the track's length, never scored against padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.slakh import Track
from engine.types import EngineError

WINDOW_SLACK_S = 0.01  # a window may run this far past the end of the audio (rounding, resampling)


@dataclass(frozen=True)
class Window:
    """A chosen stem window: ``start_s`` and the share of its frames in which the class sounds."""

    start_s: float
    active_share: float


def class_track_audio(track: Track, inst_class: str, sample_rate: int) -> np.ndarray:
    """Sum of all of the track's ``inst_class`` stems over the whole track (mono float64)."""
    stems = [s for s in track.stems if s.inst_class == inst_class]
    if not stems:
        raise EngineError(f"track {track.id} has no {inst_class} stem")
    parts = [s.load(sample_rate).astype(np.float64) for s in stems]
    total = np.zeros(max(p.size for p in parts))
    for p in parts:
        total[: p.size] += p
    return total


def frame_activity(audio: np.ndarray, sample_rate: int, frame_s: float = 0.1,
                   threshold_db: float = -45.0) -> np.ndarray:
    """``(n_frames,)`` bool: frames of ``frame_s`` s whose RMS exceeds ``threshold_db`` dBFS."""
    hop = max(1, int(round(frame_s * sample_rate)))
    n = audio.size // hop
    if n == 0:
        return np.zeros(0, dtype=bool)
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1))
    return rms > 10.0 ** (threshold_db / 20.0)


def choose_window(audio: np.ndarray, sample_rate: int, duration: float, offset: float = 0.0,
                  search: bool = True, min_active: float = 0.25, step_s: float = 0.5,
                  frame_s: float = 0.1, threshold_db: float = -45.0, tolerance: float = 0.05,
                  label: str = "the class") -> Window:
    """The first window of ``duration`` s from ``offset`` whose active share is (nearly) the best."""
    if not 0.0 < min_active <= 1.0:
        raise EngineError(f"--min-active must be in (0, 1] (got {min_active})")
    active = frame_activity(audio, sample_rate, frame_s, threshold_db)
    per_window = max(1, int(round(duration / frame_s)))
    total_s = audio.size / sample_rate
    if offset + duration > total_s + WINDOW_SLACK_S:
        raise EngineError(f"{label}: the stem audio is {total_s:.2f} s long, too short for a "
                          f"{duration:g} s window from {offset:g} s: not generated; use a shorter "
                          "--duration or a smaller --offset")
    starts = [offset]
    if search:
        starts = list(np.arange(offset, max(offset, total_s - duration) + 1e-9, step_s))
    shares = []
    for start in starts:
        first = int(round(start / frame_s))
        shares.append(float(active[first: first + per_window].sum()) / per_window)
    best = max(shares)
    if best >= min_active:
        i = next(i for i, v in enumerate(shares) if v >= best - tolerance)
        return Window(float(starts[i]), shares[i])
    where = (f"any {duration:g} s window from {offset:g} s" if search
             else f"the {duration:g} s window at {offset:g} s")
    raise EngineError(f"{label} sounds in at most {100 * best:.0f}% of {where} (need "
                      f"{100 * min_active:.0f}%): not generated; lower --min-active or use another track")
