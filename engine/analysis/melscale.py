"""Mel scale: Hz ↔ mel (Slaney, HTK), band centres and edges, filterbank, mel spectrogram.

Conventions: every mel array is ``(frames, bands)`` with band 0 the lowest frequency. A target
grid of ``F`` bins maps *proportionally* onto the model's ``n_mels`` mel bands: bin ``j`` covers
mel-band positions ``[j·n/F, (j+1)·n/F)``, so its centre lies at fractional band index
``(j + 0.5)·n/F − 0.5`` and its Hz value is read off the (linear-in-mel) band-centre line.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import get_window, resample_poly

from engine.types import EngineError, MelSpec

# Slaney (Auditory Toolbox) scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_SLANEY_F_SP = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # = 15 mel
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def _check_scale(scale: str) -> None:
    if scale not in ("slaney", "htk"):
        raise EngineError(f"unknown mel scale {scale!r}: use 'slaney' or 'htk'")


def hz_to_mel(hz: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    """Hz → mel. HTK: ``2595·log10(1 + f/700)``; Slaney: ``f/(200/3)`` below 1 kHz, log above."""
    _check_scale(scale)
    f = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    lin = f / _SLANEY_F_SP
    with np.errstate(divide="ignore", invalid="ignore"):
        log = (
            _SLANEY_MIN_LOG_MEL
            + np.log(np.maximum(f, 1e-12) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
        )
    return np.where(f >= _SLANEY_MIN_LOG_HZ, log, lin)


def mel_to_hz(mel: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    """mel → Hz, the exact inverse of :func:`hz_to_mel`."""
    _check_scale(scale)
    m = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lin = m * _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (m - _SLANEY_MIN_LOG_MEL))
    return np.where(m >= _SLANEY_MIN_LOG_MEL, log, lin)


def mel_points(n_mels: int, fmin: float, fmax: float, scale: str = "slaney") -> np.ndarray:
    """The ``n_mels + 2`` Hz points equally spaced in mel from ``fmin`` to ``fmax``.

    Band ``i`` is the triangle with feet at points ``i`` and ``i+2`` and its peak (centre) at ``i+1``.
    """
    if n_mels < 1 or not 0.0 <= fmin < fmax:
        raise EngineError(
            f"bad mel range n_mels={n_mels}, fmin={fmin}, fmax={fmax}: need n_mels ≥ 1 and 0 ≤ fmin < fmax"
        )
    m = np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2)
    return mel_to_hz(m, scale)


def band_centres_hz(spec: MelSpec) -> np.ndarray:
    """Centre frequency (Hz) of each of the model's ``n_mels`` bands, lowest first."""
    return mel_points(spec.n_mels, spec.fmin, spec.fmax, spec.mel_scale)[1:-1]


def band_edges_hz(spec: MelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper foot (Hz) of each band's triangle, both ``(n_mels,)``."""
    p = mel_points(spec.n_mels, spec.fmin, spec.fmax, spec.mel_scale)
    return p[:-2], p[2:]


def _grid_mel(spec: MelSpec, positions: np.ndarray) -> np.ndarray:
    """Hz at fractional band-index ``positions`` (index i = centre of band i)."""
    lo, hi = hz_to_mel(spec.fmin, spec.mel_scale), hz_to_mel(spec.fmax, spec.mel_scale)
    step = (hi - lo) / (spec.n_mels + 1)
    return mel_to_hz(lo + (positions + 1.0) * step, spec.mel_scale)


def grid_hz(spec: MelSpec, n_bins: int) -> np.ndarray:
    """Centre Hz of each of ``n_bins`` target-grid bins mapped proportionally onto the mel axis.

    With ``n_bins == spec.n_mels`` this equals :func:`band_centres_hz`.
    """
    if n_bins < 1:
        raise EngineError(f"grid needs at least one frequency bin, got {n_bins}")
    j = np.arange(n_bins, dtype=np.float64)
    return _grid_mel(spec, (j + 0.5) * spec.n_mels / n_bins - 0.5)


def grid_edges_hz(spec: MelSpec, n_bins: int) -> np.ndarray:
    """The ``n_bins + 1`` Hz boundaries between target-grid bins (tiles of the mel axis)."""
    if n_bins < 1:
        raise EngineError(f"grid needs at least one frequency bin, got {n_bins}")
    j = np.arange(n_bins + 1, dtype=np.float64)
    return _grid_mel(spec, j * spec.n_mels / n_bins - 0.5)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float,
    fmax: float,
    scale: str = "slaney",
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filterbank ``(n_mels, n_fft//2 + 1)`` with triangles in Hz.

    ``norm="slaney"`` divides each triangle by half its Hz width (constant energy per band);
    ``norm=None`` leaves peaks at 1.
    """
    if norm not in ("slaney", None):
        raise EngineError(f"unknown filterbank norm {norm!r}: use 'slaney' or None")
    if fmax > sample_rate / 2 + 1e-9:
        raise EngineError(f"fmax {fmax} Hz is above Nyquist ({sample_rate / 2} Hz): lower fmax")
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    pts = mel_points(n_mels, fmin, fmax, scale)
    lower, centre, upper = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= 2.0 / (upper - lower)
    return weights


def power_spectrogram(
    audio: np.ndarray, n_fft: int, hop_length: int, center: bool = True
) -> np.ndarray:
    """|STFT|² with a periodic Hann window, ``(frames, n_fft//2 + 1)``; ``center`` pads by reflection."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:  # (channels, samples) or (samples, channels): mix to mono
        x = x.mean(axis=0) if x.shape[0] < x.shape[1] else x.mean(axis=1)
    if x.ndim != 1 or x.size == 0:
        raise EngineError(
            f"audio must be a non-empty mono or stereo array, got shape {np.shape(audio)}"
        )
    if center:
        pad = n_fft // 2
        mode = "reflect" if x.size > pad else "constant"
        x = np.pad(x, pad, mode=mode)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    n_frames = 1 + (x.size - n_fft) // hop_length
    idx = np.arange(n_fft)[None, :] + hop_length * np.arange(n_frames)[:, None]
    window = get_window("hann", n_fft, fftbins=True)
    spec = np.fft.rfft(x[idx] * window[None, :], axis=1)
    return spec.real**2 + spec.imag**2


def resample_audio(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling from ``sr_in`` to ``sr_out`` (mono, float64)."""
    x = np.asarray(audio, dtype=np.float64)
    if sr_in == sr_out:
        return x
    g = np.gcd(int(sr_in), int(sr_out))
    return resample_poly(x, int(sr_out) // g, int(sr_in) // g, axis=-1)


def mel_spectrogram(audio: np.ndarray, spec: MelSpec, sample_rate: int | None = None) -> np.ndarray:
    """Mel power spectrogram ``(frames, n_mels)`` of ``audio`` with the model's mel definition.

    ``sample_rate`` (default ``spec.sample_rate``) is the audio's rate; it is resampled to the
    spec's rate first so stems at 44.1 kHz land on a 16 kHz model's mel axis.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0) if x.shape[0] < x.shape[1] else x.mean(axis=1)
    if sample_rate is not None and sample_rate != spec.sample_rate:
        x = resample_audio(x, sample_rate, spec.sample_rate)
    power = power_spectrogram(x, spec.n_fft, spec.hop_length)
    fb = mel_filterbank(
        spec.sample_rate, spec.n_fft, spec.n_mels, spec.fmin, spec.fmax, spec.mel_scale
    )
    return power @ fb.T


def power_to_db(
    power: np.ndarray, ref: float | None = None, amin: float = 1e-10, top_db: float | None = 80.0
) -> np.ndarray:
    """``10·log10(power/ref)`` with ``ref`` = max by default, floored ``top_db`` below the peak."""
    p = np.maximum(np.asarray(power, dtype=np.float64), amin)
    r = float(np.max(p)) if ref is None else max(float(ref), amin)
    db = 10.0 * np.log10(p / r)
    if top_db is not None:
        db = np.maximum(db, db.max() - top_db)
    return db
