"""The player's mel follows the audio it shows: a clip's own mel, else the log-mel of the audio with
the model's mel definition (a 1 kHz tone lights the band whose centre is nearest 1 kHz, as a filter
computed by hand says), and blank without either — never an earlier clip's."""

from __future__ import annotations

import numpy as np

from engine.analysis.melscale import band_centres_hz
from engine.types import MelSpec
from gui.audio_output import NullOutput
from gui.docks.player_dock import PlayerDock
from gui.mel_view import MelView
from gui.workspace import Workspace

SR = 16000
SPEC = MelSpec(sample_rate=SR, n_fft=1024, hop_length=256, n_mels=64, fmin=0.0, fmax=8000.0)


def _tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _dock(qtbot) -> PlayerDock:
    dock = PlayerDock(Workspace(), NullOutput(lambda: 0.0))
    qtbot.addWidget(dock)
    return dock


def test_a_clip_without_a_model_mel_shows_its_audios_log_mel(qtbot):
    dock = _dock(qtbot)
    for hz in (250.0, 1000.0, 3000.0):
        dock.play_clip(_tone(hz), SR, at_boundary=False, mel=MelView(None, SPEC))
        image = np.asarray(dock.mel_item.image)
        assert image.shape == (1 + SR // SPEC.hop_length, SPEC.n_mels)  # centred frames, bands
        loudest = int(np.argmax(image[5:-5].mean(axis=0)))
        centres = band_centres_hz(SPEC)
        assert abs(centres[loudest] - hz) <= 0.6 * np.diff(centres)[max(loudest - 1, 0)] + 1.0
        assert image.max() == 0.0 and image.min() >= -80.0  # dB below the peak, floored 80 dB down


def test_a_clips_own_mel_is_shown_as_it_is(qtbot):
    dock = _dock(qtbot)
    mel = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    dock.play_clip(_tone(500.0), SR, at_boundary=False, mel=MelView(mel, SPEC))
    np.testing.assert_array_equal(dock.mel_item.image, mel)


def test_no_mel_and_no_definition_leaves_the_plot_blank_not_stale(qtbot):
    dock = _dock(qtbot)
    dock.play_clip(_tone(500.0), SR, at_boundary=False, mel=MelView(None, SPEC))
    assert dock.mel_item.image is not None
    dock.play_clip(_tone(700.0), SR, at_boundary=False)
    assert dock.mel_item.image is None
