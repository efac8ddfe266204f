"""Slakh2100 reader on hand-made tracks in the released forms (flac_redux, original, BabySlakh) and
on broken ones: paths resolved as the release writes them, unrendered stems, "(continued)" classes,
FLAC / WAV, resampling and the per-track report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from engine.data.classes import canonical_class
from engine.data.slakh import SlakhDataset, read_track, resolve_dir
from engine.types import EngineError
from tests.engine.slakh_release import ReleaseStem, metadata_text, noise_hits, sine, write_track

SR = 44100


def _stems(seconds: float = 2.0, sr: int = SR) -> dict[str, ReleaseStem]:
    return {
        "S00": ReleaseStem("Bass", 33, "Electric Bass (finger)", "scarbee_jay_bass_both.nkm",
                           sine(110, seconds, sr)),
        "S01": ReleaseStem("Drums", 128, "Drums", "session_kit_full.nkm", noise_hits(seconds, sr),
                           is_drum=True),
        "S02": ReleaseStem("Strings (continued)", 52, "Choir Aahs", "choir_o.nkm",
                           np.concatenate([sine(440, seconds / 2, sr), np.zeros(int(seconds / 2 * sr))])),
        "S03": ReleaseStem("Sound Effects", 103, "FX 8 (sci-fi)", "None", None),
    }


@pytest.fixture
def redux(tmp_path: Path) -> Path:
    root = tmp_path / "slakh2100_flac_redux"
    write_track(root / "train" / "Track00001", _stems(), SR)
    write_track(root / "validation" / "Track01501", _stems(1.0), SR)
    (root / "validation" / "Track01501" / "stems" / "S01.flac").unlink()  # a rendered stem lost
    write_track(root / "test" / "Track01876", _stems(1.0), SR, audio_dir="Track00001/stems")
    bad = root / "test" / "Track01877"
    bad.mkdir(parents=True)
    (bad / "metadata.yaml").write_text("stems: {S00: [unclosed\n  : :")
    write_track(root / "test" / "Track01878", {"S00": _stems()["S03"]}, SR)  # nothing rendered
    (root / "omitted" / "Track00049" / "stems").mkdir(parents=True)  # no metadata.yaml
    return root


def test_metadata_fixture_is_in_release_form():
    text = metadata_text("Track00001", _stems(0.1), "Track00001/stems", "Track00001/MIDI")
    meta = yaml.safe_load(text)
    assert list(meta) == ["UUID", "audio_dir", "lmd_midi_dir", "midi_dir", "normalization_factor",
                          "normalized", "overall_gain", "stems", "target_peak"]
    assert list(meta["stems"]["S00"]) == ["audio_rendered", "inst_class", "integrated_loudness",
                                          "is_drum", "midi_program_name", "midi_saved",
                                          "plugin_name", "program_num"]
    assert "integrated_loudness" not in meta["stems"]["S03"]  # as for unrendered stems in the release
    assert meta["stems"]["S03"]["plugin_name"] == "None" and meta["stems"]["S01"]["program_num"] == 128
    assert len(meta["UUID"]) == 32 and meta["lmd_midi_dir"].endswith(f"{meta['UUID']}.mid")


def test_flac_redux_split_relative_paths_are_read(redux: Path):
    ds = SlakhDataset(redux)
    assert [(t.split, t.id) for t in ds] == [("train", "Track00001")]
    t = ds[0]
    assert [s.stem_id for s in t.stems] == ["S00", "S01", "S02"]
    assert [s.audio_path for s in t.stems] == [t.path / "stems" / f"S0{i}.flac" for i in range(3)]
    assert t.skipped_stems == [("S03", "audio_rendered: false")]
    assert t.classes() == ["Bass", "Drums", "Strings"]  # "Strings (continued)" folds into Strings
    assert [s.program_num for s in t.stems] == [33, 128, 52] and t.stems[1].is_drum
    assert [s.midi_path for s in t.stems] == [t.path / "MIDI" / f"S0{i}.mid" for i in range(3)]
    assert t.mix_path == t.path / "mix.flac" and t.all_src_midi == t.path / "all_src.mid"
    assert t.lmd_midi.startswith("lmd_matched/") and t.lmd_midi == t.metadata["lmd_midi_dir"]
    x = t.stems[0].load()
    assert x.shape == (2 * SR,) and x.dtype == np.float32
    np.testing.assert_allclose(x, sine(110, 2.0, SR), atol=1e-4)  # FLAC 16-bit round trip
    assert t.active_classes(0.0, 1.0) == ["Bass", "Drums", "Strings"]
    assert t.active_classes(1.2, 2.0) == ["Bass", "Drums"]  # the choir stops at 1 s


def test_unusable_tracks_are_reported_with_the_reason(redux: Path):
    ds = SlakhDataset(redux)
    reasons = {s.path.name: s.reason for s in ds.scan_report}
    assert set(reasons) == {"Track01501", "Track01876", "Track01877", "Track01878", "Track00049"}
    lost = reasons["Track01501"]
    assert lost.startswith("missing audio for rendered stem(s) S01: no S01.flac/S01.wav in ")
    assert str(redux / "validation" / "Track01501" / "stems") in lost
    assert "read relative to the split folder" in lost
    assert reasons["Track01876"].startswith("malformed metadata.yaml (audio_dir 'Track00001/stems' "
                                            "names track folder Track00001, but this folder is Track01876")
    assert reasons["Track01877"].startswith("malformed metadata.yaml")
    assert reasons["Track01878"] == "no rendered stems (all 1 stems have audio_rendered: false)"
    assert reasons["Track00049"] == "missing metadata.yaml"
    lines = ds.report()
    assert lines[0] == ("train/Track00001: 3 stem(s) (Bass x1, Drums x1, Strings x1); "
                        "skipped S03 (audio_rendered: false)")
    assert any(line.startswith("omitted/Track00049: not used: missing metadata.yaml") for line in lines)
    assert len(lines) == 6
    summary = ds.summary()
    assert summary.startswith("6 track folder(s) under ") and "1 usable, 5 skipped" in summary


def test_track_relative_forms_original_and_babyslakh(tmp_path: Path):
    original = tmp_path / "slakh2100_flac"
    write_track(original / "train" / "Track00001", _stems(1.0), SR, form="track")
    baby = tmp_path / "babyslakh_16k"
    write_track(baby / "Track00001", _stems(1.0, 16000), 16000, form="track", ext=".wav")
    t = SlakhDataset(original)[0]
    assert t.metadata["audio_dir"] == "stems" and [s.stem_id for s in t.stems] == ["S00", "S01", "S02"]
    b = SlakhDataset(baby)
    assert [(x.split, x.id) for x in b] == [(None, "Track00001")]
    assert b[0].stems[0].audio_path.suffix == ".wav" and b[0].mix_path.name == "mix.wav"
    assert b[0].stems[0].sample_rate == 16000 and b[0].classes() == ["Bass", "Drums", "Strings"]
    # the release form also reads when the track folder itself is the root
    single = SlakhDataset(tmp_path / "slakh2100_flac" / "train" / "Track00001")
    assert [x.id for x in single] == ["Track00001"]


def test_resolve_dir_forms(tmp_path: Path):
    f = tmp_path / "test" / "Track01880"
    assert resolve_dir(f, "Track01880/stems", "stems", "audio_dir")[0] == f / "stems"
    assert resolve_dir(f, "stems", "stems", "audio_dir")[0] == f / "stems"
    assert resolve_dir(f, "./stems/", "stems", "audio_dir")[0] == f / "stems"
    assert resolve_dir(f, None, "MIDI", "midi_dir") == (f / "MIDI", "midi_dir missing: default MIDI/")
    for bad, why in (("/data/slakh/Track01880/stems", "must be a relative folder"),
                     ("../Track01879/stems", "must be a relative folder"),
                     ("Track01879/stems", "names track folder Track01879"),
                     (7, "is not a path")):
        path, reason = resolve_dir(f, bad, "stems", "audio_dir")
        assert path is None and why in reason


def test_canonical_classes():
    assert canonical_class("Strings (continued)") == "Strings"
    assert canonical_class("Brass (continued)") == "Brass"
    assert canonical_class("Sound effects") == "Sound Effects"  # Slakh spells 119-127 this way
    assert canonical_class("  Piano ") == "Piano" and canonical_class("Kazoo") == "Kazoo"


def test_resampling_to_16k_keeps_the_tone(redux: Path):
    t = SlakhDataset(redux, split="train")[0]
    y = t.stems[0].load(sr=16000)
    assert y.shape == (32000,)
    ref = 0.4 * np.sin(2 * np.pi * 110 * np.arange(32000) / 16000)
    np.testing.assert_allclose(y[1000:-1000], ref[1000:-1000], atol=2e-3)
    spec = np.abs(np.fft.rfft(y))
    assert np.argmax(spec) * 16000 / y.shape[0] == pytest.approx(110, abs=0.5)


def test_mix_falls_back_to_sum_of_stems(tmp_path: Path):
    folder = write_track(tmp_path / "Track00006", {"S00": _stems(1.0)["S00"], "S01": _stems(1.0)["S01"]},
                         SR, form="track", ext=".wav")
    (folder / "mix.wav").unlink()
    t = read_track(folder)
    assert t.mix_path is None
    np.testing.assert_allclose(t.load_mix(), t.stems[0].load() + t.stems[1].load(), atol=1e-6)
    ref, _ = sf.read(str(folder / "stems" / "S00.wav"), dtype="float32")
    np.testing.assert_array_equal(t.stems[0].load(), ref)


def test_render_dataset_form_without_release_keys(tmp_path: Path):
    folder = tmp_path / "Track00009"
    (folder / "stems").mkdir(parents=True)
    sf.write(str(folder / "stems" / "S00.wav"), sine(220, 0.5, SR), SR)
    (folder / "metadata.yaml").write_text(yaml.safe_dump(
        {"stems": {"S00": {"inst_class": "Guitar", "program_num": 25, "is_drum": False}}}))
    t = read_track(folder)  # no audio_dir / midi_dir keys: stems/ and MIDI/
    assert t.classes() == ["Guitar"] and t.lmd_midi is None and t.all_src_midi is None


def test_errors(redux: Path):
    assert read_track(redux / "omitted" / "Track00049").reason == "missing metadata.yaml"
    with pytest.raises(EngineError, match="split"):
        SlakhDataset(redux, split="dev")
    with pytest.raises(EngineError, match="does not exist"):
        SlakhDataset(redux / "nowhere")
