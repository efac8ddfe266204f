"""BS.1770 loudness against the standard's own 48 kHz filter coefficients and its sine reference."""

from __future__ import annotations

import numpy as np
from scipy.signal import freqz

from engine.data.loudness import SILENCE_LUFS, _high_pass, _shelf, integrated_loudness

# ITU-R BS.1770-4, Tables 1 and 2 (48 kHz)
SHELF_B = [1.53512485958697, -2.69169618940638, 1.19839281085285]
SHELF_A = [1.0, -1.69065929318241, 0.73248077421585]
HP_B = [1.0, -2.0, 1.0]
HP_A = [1.0, -1.99004745483398, 0.99007225036621]


def test_filters_match_the_standard_at_48k():
    b, a = _shelf(48000)
    np.testing.assert_allclose(b, SHELF_B, rtol=1e-7)
    np.testing.assert_allclose(a, SHELF_A, rtol=1e-7)
    b, a = _high_pass(48000)
    np.testing.assert_allclose(b, HP_B)
    np.testing.assert_allclose(a, HP_A, rtol=1e-7)


def test_filters_at_16k_keep_the_analog_response_below_2k():
    for design, ref_b, ref_a in ((_shelf, SHELF_B, SHELF_A), (_high_pass, HP_B, HP_A)):
        b, a = design(16000)
        freqs = np.array([50.0, 200.0, 1000.0, 2000.0])
        _, h16 = freqz(b, a, worN=freqs, fs=16000)
        _, h48 = freqz(ref_b, ref_a, worN=freqs, fs=48000)
        np.testing.assert_allclose(20 * np.log10(np.abs(h16)), 20 * np.log10(np.abs(h48)), atol=0.1)


def test_full_scale_997hz_sine_reads_minus_3_lufs():
    sr = 48000
    t = np.arange(5 * sr) / sr
    x = np.sin(2 * np.pi * 997 * t)
    assert abs(integrated_loudness(x, sr) - (-3.01)) < 0.02
    assert abs(integrated_loudness(0.1 * x, sr) - (-23.01)) < 0.02


def test_gates_ignore_silence_and_report_silence():
    sr = 16000
    t = np.arange(2 * sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 997 * t)
    padded = np.concatenate([tone, np.zeros(6 * sr)])
    # 400 ms blocks, 100 ms hop: the absolute gate drops the silent blocks; the tone fills 17 blocks
    # fully and 3 in part (75, 50, 25 %), which pass both gates: mean power is 18.5/20 of the tone's.
    expected = integrated_loudness(tone, sr) + 10 * np.log10(18.5 / 20)
    assert abs(integrated_loudness(padded, sr) - expected) < 0.01
    assert integrated_loudness(np.zeros(sr), sr) == SILENCE_LUFS
