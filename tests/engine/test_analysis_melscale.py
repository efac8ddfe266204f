"""Mel scale, filterbank and spectrogram against hand values, transformers and scipy."""

import numpy as np
import pytest
from scipy.signal import get_window, stft
from transformers.audio_utils import mel_filter_bank, spectrogram

from engine.analysis import melscale as ms
from engine.types import EngineError, MelSpec

AUDIOLDM2 = MelSpec(16000, 1024, 160, 64, 0.0, 8000.0, "slaney")


def test_slaney_hand_values():
    assert ms.hz_to_mel(1000.0) == pytest.approx(15.0, abs=1e-12)
    assert ms.hz_to_mel(500.0) == pytest.approx(7.5, abs=1e-12)  # linear: 200/3 Hz per mel
    assert ms.hz_to_mel(6400.0) == pytest.approx(42.0, abs=1e-12)  # 15 + 27 log-steps of 6.4^(1/27)
    assert ms.mel_to_hz(42.0) == pytest.approx(6400.0, rel=1e-12)


def test_htk_hand_values_and_roundtrip():
    assert ms.hz_to_mel(700.0, "htk") == pytest.approx(2595.0 * np.log10(2.0), rel=1e-12)
    f = np.array([0.0, 20.0, 440.0, 999.0, 1000.0, 1001.0, 7999.0])
    for scale in ("slaney", "htk"):
        np.testing.assert_allclose(ms.mel_to_hz(ms.hz_to_mel(f, scale), scale), f, atol=1e-9)
    with pytest.raises(EngineError):
        ms.hz_to_mel(1.0, "bark")


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_filterbank_matches_transformers(scale, norm):
    ours = ms.mel_filterbank(16000, 1024, 64, 0.0, 8000.0, scale, norm)
    ref = mel_filter_bank(513, 64, 0.0, 8000.0, 16000, norm=norm, mel_scale=scale)
    np.testing.assert_allclose(ours, ref.T, rtol=1e-9, atol=1e-12)


def test_band_centres_edges_and_grid_hz():
    pts = ms.mel_points(64, 0.0, 8000.0)
    assert pts[0] == 0.0 and pts[-1] == pytest.approx(8000.0)
    np.testing.assert_allclose(ms.band_centres_hz(AUDIOLDM2), pts[1:-1])
    lo, hi = ms.band_edges_hz(AUDIOLDM2)
    np.testing.assert_allclose(lo[1:], ms.band_centres_hz(AUDIOLDM2)[:-1])
    np.testing.assert_allclose(hi[:-1], ms.band_centres_hz(AUDIOLDM2)[1:])
    np.testing.assert_allclose(ms.grid_hz(AUDIOLDM2, 64), ms.band_centres_hz(AUDIOLDM2))
    # 32 bins on 64 bands: bin j sits midway (in mel) between band centres 2j and 2j+1
    cm = ms.hz_to_mel(ms.band_centres_hz(AUDIOLDM2))
    np.testing.assert_allclose(ms.grid_hz(AUDIOLDM2, 32), ms.mel_to_hz((cm[0::2] + cm[1::2]) / 2))
    edges = ms.grid_edges_hz(AUDIOLDM2, 32)
    assert edges.shape == (33,) and np.all(np.diff(edges) > 0)
    g = ms.grid_hz(AUDIOLDM2, 32)
    assert np.all((edges[:-1] < g) & (g < edges[1:]))


def test_power_spectrogram_matches_scipy_stft():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000)
    ours = ms.power_spectrogram(x, 512, 128, center=True)
    padded = np.pad(x, 256, mode="reflect")
    win = get_window("hann", 512)
    _, _, z = stft(
        padded,
        window=win,
        nperseg=512,
        noverlap=512 - 128,
        boundary=None,
        padded=False,
        detrend=False,
        scaling="spectrum",
    )
    ref = np.abs(z * win.sum()).T ** 2
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_mel_spectrogram_matches_transformers_and_finds_a_sine():
    sr = 16000
    t = np.arange(sr) / sr
    x = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    ours = ms.mel_spectrogram(x, AUDIOLDM2)
    fb = ms.mel_filterbank(sr, 1024, 64, 0.0, 8000.0)
    ref = spectrogram(
        x,
        get_window("hann", 1024),
        1024,
        160,
        power=2.0,
        center=True,
        pad_mode="reflect",
        mel_filters=fb.T,
        mel_floor=1e-30,
        dtype=np.float64,
    ).T
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)  # transformers frames in float32
    peak = np.argmax(ours.mean(axis=0))
    assert peak == np.argmin(np.abs(ms.band_centres_hz(AUDIOLDM2) - 1000.0))
    # the same tone at 44.1 kHz lands in the same band after resampling
    t44 = np.arange(44100) / 44100
    other = ms.mel_spectrogram(0.5 * np.sin(2 * np.pi * 1000.0 * t44), AUDIOLDM2, sample_rate=44100)
    assert np.argmax(other.mean(axis=0)) == peak


def test_power_to_db_hand_values():
    db = ms.power_to_db(np.array([1.0, 0.1, 1e-12]), top_db=80.0)
    np.testing.assert_allclose(db, [0.0, -10.0, -80.0])
    np.testing.assert_allclose(
        ms.power_to_db(np.array([4.0]), ref=2.0, top_db=None), [10 * np.log10(2)]
    )
