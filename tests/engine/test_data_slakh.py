"""Slakh2100 reader on a fabricated dataset: valid, broken and partial tracks, FLAC, resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from engine.data.slakh import SlakhDataset, read_track
from engine.types import EngineError

SR = 44100


def _sine(freq: float, seconds: float, on_s: float | None = None) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if on_s is not None:
        x[int(on_s * SR):] = 0.0
    return x


def _track(folder: Path, stems: dict, audio: dict[str, np.ndarray], ext: str = ".flac",
           mix: bool = True) -> None:
    (folder / "stems").mkdir(parents=True)
    meta = {"UUID": "0" * 32, "audio_dir": "stems", "midi_dir": "MIDI", "normalized": True,
            "overall_gain": 0.5, "stems": stems}
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))
    for sid, x in audio.items():
        sf.write(str(folder / "stems" / f"{sid}{ext}"), x, SR)
    if mix and audio:
        sf.write(str(folder / f"mix{ext}"), np.sum(list(audio.values()), axis=0), SR)


def _stem(cls: str, prog: int, drum: bool = False, rendered: bool = True) -> dict:
    return {"inst_class": cls, "program_num": prog, "is_drum": drum, "audio_rendered": rendered,
            "midi_program_name": "x", "plugin_name": "x.nkm", "integrated_loudness": -13.0}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "slakh2100_flac_redux"
    _track(r / "train" / "Track00001",
           {"S00": _stem("Bass", 33), "S01": _stem("Strings (continued)", 48),
            "S02": _stem("Piano", 0, rendered=False)},
           {"S00": _sine(110, 2.0), "S01": _sine(440, 2.0, on_s=1.0)})
    bad = r / "train" / "Track00002"
    bad.mkdir(parents=True)
    (bad / "metadata.yaml").write_text("stems: {S00: [unclosed\n  : :")
    _track(r / "validation" / "Track00003", {"S00": _stem("Guitar", 25), "S01": _stem("Drums", 0, True)},
           {"S00": _sine(220, 1.0)})  # S01 audio missing
    _track(r / "test" / "Track00004", {"S00": _stem("Organ", 16, rendered=False)}, {})
    (r / "test" / "Track00005" / "stems").mkdir(parents=True)  # no metadata.yaml
    _track(r / "test" / "Track00006", {"S00": _stem("Drums", 0, True)}, {"S00": _sine(60, 1.0)},
           ext=".wav", mix=False)
    return r


def test_valid_tracks_are_read_and_broken_ones_reported(root: Path):
    ds = SlakhDataset(root)
    assert [t.id for t in ds] == ["Track00001", "Track00006"]
    assert [t.split for t in ds] == ["train", "test"]
    reasons = {s.path.name: s.reason for s in ds.scan_report}
    assert set(reasons) == {"Track00002", "Track00003", "Track00004", "Track00005"}
    assert reasons["Track00002"].startswith("malformed metadata.yaml")
    assert "missing audio" in reasons["Track00003"] and "S01" in reasons["Track00003"]
    assert reasons["Track00004"] == "no rendered stems"
    assert reasons["Track00005"] == "missing metadata.yaml"


def test_track_contents_classes_and_flac(root: Path):
    t = SlakhDataset(root, split="train")[0]
    assert [s.stem_id for s in t.stems] == ["S00", "S01"]
    assert t.skipped_stems == [("S02", "audio_rendered: false")]
    assert t.classes() == ["Bass", "Strings"]  # "Strings (continued)" folds into Strings
    assert t.stems[0].audio_path.suffix == ".flac" and t.mix_path.name == "mix.flac"
    x = t.stems[0].load()
    assert x.shape == (2 * SR,) and x.dtype == np.float32
    np.testing.assert_allclose(x, _sine(110, 2.0), atol=1e-4)  # FLAC 16-bit round trip
    assert t.active_classes(0.0, 1.0) == ["Bass", "Strings"]
    assert t.active_classes(1.2, 2.0) == ["Bass"]


def test_resampling_to_16k_keeps_the_tone(root: Path):
    t = SlakhDataset(root, split="train")[0]
    y = t.stems[0].load(sr=16000)
    assert y.shape == (32000,)
    ref = 0.5 * np.sin(2 * np.pi * 110 * np.arange(32000) / 16000)
    np.testing.assert_allclose(y[1000:-1000], ref[1000:-1000], atol=2e-3)
    spec = np.abs(np.fft.rfft(y))
    assert np.argmax(spec) * 16000 / y.shape[0] == pytest.approx(110, abs=0.5)


def test_mix_falls_back_to_sum_of_stems_and_wav_stems(root: Path):
    t = SlakhDataset(root, split="test")[0]
    assert t.id == "Track00006" and t.mix_path is None and t.classes() == ["Drums"]
    np.testing.assert_allclose(t.load_mix(), t.stems[0].load())
    assert t.stems[0].audio_path.suffix == ".wav"


def test_single_track_folder_and_errors(root: Path):
    single = SlakhDataset(root / "train" / "Track00001")
    assert [t.id for t in single] == ["Track00001"]
    assert read_track(root / "test" / "Track00005").reason == "missing metadata.yaml"
    with pytest.raises(EngineError, match="split"):
        SlakhDataset(root, split="dev")
    with pytest.raises(EngineError, match="does not exist"):
        SlakhDataset(root / "nowhere")
