"""Band templates on the mel grid and data-driven ground truth from synthetic stems."""

import numpy as np
import pytest

from engine.analysis import templates as tp
from engine.analysis.melscale import grid_hz
from engine.types import EngineError, MelSpec

SPEC = MelSpec(16000, 1024, 160, 64, 0.0, 8000.0, "slaney")


def slaney_hz(mel):  # independent hand formula for the test
    mel = np.asarray(mel, float)
    return np.where(mel < 15, mel * 200 / 3, 1000 * 6.4 ** ((mel - 15) / 27))


def slaney_mel(hz):
    hz = np.asarray(hz, float)
    return np.where(
        hz < 1000, hz * 3 / 200, 15 + 27 * np.log(np.maximum(hz, 1e-9) / 1000) / np.log(6.4)
    )


def test_every_slakh_class_has_a_template():
    for name in [
        "Bass",
        "Drums",
        "Guitar",
        "Piano",
        "Strings",
        "Organ",
        "Brass",
        "Reed",
        "Pipe",
        "Synth Lead",
        "Synth Pad",
        "Chromatic Percussion",
    ]:
        t = tp.band_template(name)
        assert 0 < t.band[0] < t.band[1] and t.fundamental[0] < t.fundamental[1] and t.basis
    assert tp.band_template("guitars").name == "Guitar"
    assert tp.band_template("Strings (continued)").name == "Strings"
    assert tp.band_template("Synth Pad").convention
    with pytest.raises(EngineError):
        tp.band_template("kazoo")


def test_bass_mask_matches_hand_computed_centres():
    centres = slaney_hz(np.linspace(0, slaney_mel(8000.0), 66)[1:-1])
    mask = tp.band_mask("Bass", SPEC, 64)
    np.testing.assert_array_equal(mask, (centres >= 40.0) & (centres <= 1000.0))
    assert mask[0] and not mask[-1]  # lowest centre ~46 Hz (linear part: 46.4 Hz apart)
    # by hand: (15 + 27·ln 8 / ln 6.4) / 65 mel = 0.69608 mel = 46.406 Hz
    assert grid_hz(SPEC, 64)[0] == pytest.approx(46.4058, abs=1e-4)
    pipe = tp.band_mask("Pipe", SPEC, 64)
    assert not pipe[:5].any() and pipe[-1]
    # 32 bins: a low region still starts at the bottom, and the T-F version repeats over time
    tf = tp.band_tf_mask("low", SPEC, (10, 32))
    assert tf.shape == (10, 32) and tf[:, 0].all() and (tf == tf[0]).all()
    # a narrow band between two centres still gets the bin that holds it
    narrow = tp.hz_range_mask(2010.0, 2020.0, SPEC, 64)
    assert narrow.sum() == 1


def _tone(hz, seconds, sr=16000, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * hz * t)


def test_frequency_profile_normalises_per_frame():
    # loud 200 Hz for 1 s, then a 20 dB quieter 2 kHz tone for 1 s
    x = np.concatenate([_tone(200.0, 1.0, amp=1.0), _tone(2000.0, 1.0, amp=0.1)])
    prof = tp.frequency_profile(x, 16000, SPEC, 64)
    assert prof.sum() == pytest.approx(1.0)
    centres = slaney_hz(np.linspace(0, slaney_mel(8000.0), 66)[1:-1])
    low = np.abs(centres - 200) < 100
    high = np.abs(centres - 2000) < 500
    # per-frame normalisation: both halves weigh about the same despite the 20 dB difference
    assert prof[low].sum() == pytest.approx(0.5, abs=0.06)
    assert prof[high].sum() == pytest.approx(0.5, abs=0.06)


def test_activity_mask_follows_the_stem():
    x = np.concatenate([_tone(1000.0, 1.0), np.zeros(16000)])
    mask = tp.activity_mask(x, 16000, SPEC, shape=(20, 64), threshold_db=-30.0)
    assert mask.shape == (20, 64)
    assert mask[1:9].any(axis=1).all()  # first second active
    assert not mask[11:].any()  # silence (past the window overlap) is off
    centres = slaney_hz(np.linspace(0, slaney_mel(8000.0), 66)[1:-1])
    assert mask[5, np.argmin(np.abs(centres - 1000))]
    assert not mask[5, centres < 500].any()
    # cropping to the clip's duration keeps only the active part
    short = tp.activity_mask(x, 16000, SPEC, shape=(10, 64), duration=0.9)
    assert short[1:-1].any(axis=1).all()
    grid = tp.stem_mel_grid(x, 16000, SPEC, (20, 64))
    assert grid.shape == (20, 64) and grid[15].sum() < 1e-6 * grid[5].sum()


def test_region_masks_follow_the_low_mid_high_edges():
    centres = slaney_hz(np.linspace(0, slaney_mel(8000.0), 66)[1:-1])
    low, mid, high = centres < 250.0, (centres >= 250.0) & (centres < 2000.0), centres >= 2000.0
    np.testing.assert_array_equal(tp.band_mask("Bass", SPEC, 64, "region"), low)
    np.testing.assert_array_equal(tp.band_mask("Drums", SPEC, 64, "region"), low | high)
    for c in ("Guitar", "Piano", "Strings", "Organ"):
        np.testing.assert_array_equal(tp.band_mask(c, SPEC, 64, "region"), mid)
    np.testing.assert_array_equal(tp.band_mask("high", SPEC, 64, "region"), high)
    assert low.any() and mid.any() and high.any()
    # the regions are the discriminative ground truth: no main class covers the whole grid
    for c in ("Bass", "Drums", "Guitar", "Piano", "Strings", "Organ"):
        assert tp.band_mask(c, SPEC, 64, "region").mean() < 0.6
    # the fundamental range of Bass: E1 41.2 Hz to G4 392 Hz, centre by centre
    np.testing.assert_array_equal(tp.band_mask("Bass", SPEC, 64, "fundamental"),
                                  (centres >= 41.2) & (centres <= 392.0))
    with pytest.raises(EngineError, match="region"):
        tp.band_mask("Bass", SPEC, 64, "octave")
    assert set(tp.CLASS_REGIONS) == set(tp.INSTRUMENT_BANDS)
