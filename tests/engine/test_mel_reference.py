"""The engine's mel definition against reference values computed once with librosa 0.11.0 (an
independent implementation, not a dependency: see docs/NOTES.md). Tolerances: 1e-12 relative
for the scale and filterbanks (float64), 1e-9 relative / 1e-6 dB for the mel power and its dB
(float64 FFTs), 2e-5 relative for the embedded model's float32 torch transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.analysis import melscale as ms
from engine.models.embedded.melspec import MelConfig, MelTransform, slaney_filterbank
from engine.types import MelSpec

HZ = np.array([0.0, 440.0, 1000.0, 2000.0, 7999.0])
SLANEY_MEL = [0.0, 6.6, 14.999999999999998, 25.08188015730832, 45.24382222346884]
HTK_MEL = [0.0, 549.6386753811499, 999.9855371396244, 1521.3595541555756, 2839.893499701964]
# (band, fft bin, weight): sr 16 kHz, n_fft 1024, 64 bands 0-8 kHz, Slaney scale and norm
FB_SLANEY = [(0, 3, 0.021331152321304517), (0, 4, 0.014075511476160587),
             (10, 33, 0.019152301250668167), (10, 34, 0.011896660405524229),
             (40, 162, 0.00785470689680177), (40, 163, 0.007561124194271601),
             (63, 488, 0.0027300215116008676), (63, 489, 0.0026329476824997226)]
# sr 22.05 kHz, n_fft 2048, 128 bands 30-11025 Hz, HTK scale, no norm
FB_HTK = [(5, 13, 0.4832268976686039), (100, 532, 0.9286608960819875), (127, 1002, 0.94875928717572)]
# (frame, band, power, dB re max floored at -80) of 1 s of sin(440 Hz) + 0.25 sin(3 kHz) at 16 kHz:
# librosa.stft (reflect padding) with the float64 filterbank above, then librosa.power_to_db
MEL = [(30, 43, 21.951378936228387, -16.991809648390912), (30, 9, 1019.8667065616092, -0.32099357156984),
       (30, 8, 1098.1020562871893, -6.687848106423644e-07), (30, 30, 5.107212113449626e-10, -80.0),
       (0, 8, 881.8736921709138, -0.9523638464115969)]
SPEC = MelSpec(16000, 1024, 256, 64, 0.0, 8000.0, "slaney")


def _two_tones() -> np.ndarray:
    t = np.arange(16000) / 16000
    return np.sin(2 * np.pi * 440 * t) + 0.25 * np.sin(2 * np.pi * 3000 * t)


def test_mel_scales_match_the_reference() -> None:
    np.testing.assert_allclose(ms.hz_to_mel(HZ, "slaney"), SLANEY_MEL, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ms.hz_to_mel(HZ, "htk"), HTK_MEL, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ms.mel_to_hz(np.array(SLANEY_MEL), "slaney"), HZ, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("args", "expected"), [
    ((16000, 1024, 64, 0.0, 8000.0, "slaney", "slaney"), FB_SLANEY),
    ((22050, 2048, 128, 30.0, 11025.0, "htk", None), FB_HTK),
])
def test_filterbanks_match_the_reference(args: tuple, expected: list) -> None:
    fb = ms.mel_filterbank(*args)
    for band, k, weight in expected:
        assert fb[band, k] == pytest.approx(weight, rel=1e-12), (band, k)


def test_embedded_filterbank_is_the_engine_filterbank_in_float32() -> None:
    emb = MelConfig().filterbank()
    assert emb.dtype == np.float32
    assert np.array_equal(emb, ms.mel_filterbank(16000, 1024, 64, 0.0, 8000.0).astype(np.float32))
    assert np.array_equal(slaney_filterbank(22050, 2048, 128, 20.0, 11025.0),
                          ms.mel_filterbank(22050, 2048, 128, 20.0, 11025.0).astype(np.float32))


def test_mel_power_and_db_match_the_reference() -> None:
    mel = ms.mel_spectrogram(_two_tones(), SPEC)
    db = ms.power_to_db(mel, top_db=80.0)
    assert mel.shape == (63, 64)
    for frame, band, power, decibels in MEL:
        assert mel[frame, band] == pytest.approx(power, rel=1e-9), (frame, band)
        assert db[frame, band] == pytest.approx(decibels, abs=1e-6), (frame, band)


def test_embedded_torch_mel_matches_the_reference() -> None:
    mel = MelTransform(MelConfig())(torch.from_numpy(_two_tones().astype(np.float32))).numpy()
    assert mel.shape == (63, 64)
    for frame, band, power, _ in MEL[:3] + MEL[4:]:  # the -80 dB cell is float32 rounding noise
        assert mel[frame, band] == pytest.approx(power, rel=2e-5), (frame, band)
