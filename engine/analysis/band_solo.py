"""“Solo the attended band”: filter audio by an attention map with a time–frequency mask (STFT).

The map is ``(T, F)`` on the analysis grid (``T`` tiles the clip's duration, ``F`` tiles the
model's mel axis, low first). Each STFT cell takes the gain of the grid cell it falls in: 1 where
the min–max normalised map is at least ``threshold``, ``floor`` elsewhere; the STFT is then
inverted (overlap-add with a Hann window, which reconstructs exactly when the gain is 1).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import istft, stft

from engine.analysis.melscale import grid_edges_hz
from engine.analysis.metrics import normalise_map
from engine.types import EngineError, MelSpec


def tf_gain(
    tf_map: np.ndarray,
    spec: MelSpec,
    freqs_hz: np.ndarray,
    times_s: np.ndarray,
    duration_s: float,
    threshold: float = 0.5,
    floor: float = 0.0,
) -> np.ndarray:
    """Gain ``(len(freqs_hz), len(times_s))`` of each STFT cell from the grid cell it lies in."""
    g = np.asarray(tf_map, dtype=np.float64)
    if g.ndim != 2 or min(g.shape) < 1:
        raise EngineError(
            f"the attention map must be a 2-D (time, frequency) array, got shape {g.shape}"
        )
    if not 0.0 <= threshold <= 1.0 or not 0.0 <= floor <= 1.0:
        raise EngineError("threshold and floor must lie in [0, 1]")
    if duration_s <= 0:
        raise EngineError("the clip has no duration: generate audio first")
    n_t, n_f = g.shape
    keep = normalise_map(g) >= threshold  # (T, F)
    edges = grid_edges_hz(spec, n_f)
    f_idx = np.clip(np.searchsorted(edges, freqs_hz, side="right") - 1, 0, n_f - 1)
    t_idx = np.clip((np.asarray(times_s) / duration_s * n_t).astype(np.int64), 0, n_t - 1)
    return np.where(keep[t_idx][:, f_idx].T, 1.0, floor)


def band_solo(
    audio: np.ndarray,
    sample_rate: int,
    tf_map: np.ndarray,
    spec: MelSpec,
    threshold: float = 0.5,
    floor: float = 0.0,
    n_fft: int = 1024,
    hop: int = 256,
) -> np.ndarray:
    """``audio`` with only the time–frequency cells where the map is strong (float32, same length)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise EngineError("no audio to filter: generate a clip first")
    if sample_rate <= 0:
        raise EngineError(f"sample rate must be positive, got {sample_rate}")
    nper = min(n_fft, max(16, 1 << int(np.floor(np.log2(x.size)))))
    over = nper - min(hop, nper // 2)
    freqs, times, z = stft(
        x, fs=sample_rate, window="hann", nperseg=nper, noverlap=over, boundary="even", padded=True
    )
    gain = tf_gain(tf_map, spec, freqs, times, x.size / sample_rate, threshold, floor)
    _, y = istft(
        z * gain, fs=sample_rate, window="hann", nperseg=nper, noverlap=over, boundary=True
    )
    out = np.zeros(x.size, dtype=np.float32)
    n = min(x.size, y.size)
    out[:n] = y[:n]
    return out
