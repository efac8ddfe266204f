"""band_solo: a time–frequency mask from an attention map applied through the STFT."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analysis.band_solo import band_solo
from engine.analysis.melscale import grid_hz
from engine.types import EngineError, MelSpec

SPEC = MelSpec(16000, 1024, 256, 64, 0.0, 8000.0)
SR = 16000


def _tones() -> np.ndarray:
    t = np.arange(SR) / SR
    return (np.sin(2 * np.pi * 200 * t) + np.sin(2 * np.pi * 3000 * t)).astype(np.float32)


def _amp(x: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) / (x.size / 4)
    return float(spectrum[int(round(hz * x.size / SR))])


def test_full_mask_reconstructs_the_input():
    x = _tones()
    y = band_solo(x, SR, np.ones((16, 64)), SPEC, threshold=0.0)
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_low_band_mask_keeps_200hz_and_removes_3khz():
    x = _tones()
    low = (grid_hz(SPEC, 64) < 1000.0).astype(float)[None, :].repeat(16, axis=0)
    y = band_solo(x, SR, low, SPEC, threshold=0.5)
    assert _amp(x, 200) == pytest.approx(1.0, abs=0.05)
    assert _amp(y, 200) == pytest.approx(_amp(x, 200), rel=0.05)
    assert _amp(y, 3000) < 0.01 * _amp(x, 3000)


def test_time_mask_silences_the_second_half():
    x = _tones()
    first = np.zeros((16, 64))
    first[:8] = 1.0
    y = band_solo(x, SR, first, SPEC)
    late = y[SR // 2 + 1024 :]
    early = y[: SR // 2 - 1024]
    assert np.sqrt(np.mean(late**2)) < 0.01
    np.testing.assert_allclose(early, x[: SR // 2 - 1024], atol=1e-4)


def test_bad_input_is_refused():
    with pytest.raises(EngineError, match="2-D"):
        band_solo(_tones(), SR, np.ones(5), SPEC)
    with pytest.raises(EngineError, match="no audio"):
        band_solo(np.zeros(0), SR, np.ones((2, 2)), SPEC)
