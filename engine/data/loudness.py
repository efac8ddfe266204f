"""Integrated loudness (ITU-R BS.1770-4, mono) for stem normalisation and Slakh's metadata."""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

SILENCE_LUFS = -70.0
# Analog prototypes of the BS.1770 filters (they reproduce the standard's 48 kHz coefficients).
_SHELF_FC, _SHELF_GAIN_DB, _SHELF_Q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
_HP_FC, _HP_Q = 38.13547087602444, 0.5003270373238773


def _shelf(sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1 of K-weighting: the +4 dB high shelf, bilinear-transformed for ``sr``."""
    k = math.tan(math.pi * _SHELF_FC / sr)
    vh = 10.0 ** (_SHELF_GAIN_DB / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / _SHELF_Q + k * k
    b = np.array([vh + vb * k / _SHELF_Q + k * k, 2.0 * (k * k - vh), vh - vb * k / _SHELF_Q + k * k]) / a0
    a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _SHELF_Q + k * k) / a0])
    return b, a


def _high_pass(sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2 of K-weighting: the ~38 Hz high-pass (RLB), bilinear-transformed for ``sr``."""
    k = math.tan(math.pi * _HP_FC / sr)
    a0 = 1.0 + k / _HP_Q + k * k
    b = np.array([1.0, -2.0, 1.0])
    a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _HP_Q + k * k) / a0])
    return b, a


def k_weight(x: np.ndarray, sr: int) -> np.ndarray:
    """BS.1770 K-weighting: a +4 dB shelf above ~1.5 kHz, then a ~38 Hz high-pass."""
    b1, a1 = _shelf(sr)
    b2, a2 = _high_pass(sr)
    return lfilter(b2, a2, lfilter(b1, a1, np.asarray(x, dtype=np.float64)))


def integrated_loudness(x: np.ndarray, sr: int) -> float:
    """Gated integrated loudness in LUFS of mono audio; ``SILENCE_LUFS`` when nothing passes the gates."""
    y = k_weight(x, sr)
    block, hop = int(round(0.4 * sr)), int(round(0.1 * sr))
    if y.shape[0] < block:
        return SILENCE_LUFS
    n_blocks = 1 + (y.shape[0] - block) // hop
    sq = np.concatenate([[0.0], np.cumsum(y * y)])
    starts = np.arange(n_blocks) * hop
    z = (sq[starts + block] - sq[starts]) / block
    with np.errstate(divide="ignore"):
        lk = -0.691 + 10.0 * np.log10(z)
    z = z[lk > SILENCE_LUFS]
    if z.size == 0:
        return SILENCE_LUFS
    rel_gate = -0.691 + 10.0 * math.log10(z.mean()) - 10.0
    with np.errstate(divide="ignore"):
        kept = z[-0.691 + 10.0 * np.log10(z) > rel_gate]
    return float(-0.691 + 10.0 * math.log10(kept.mean()))
