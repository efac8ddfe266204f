"""Slakh-format rendering with FluidSynth: layout, metadata, mix = sum of stems, determinism, balance."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import yaml

from engine.data.classes import MAIN_CLASSES, program_class
from engine.data.patterns import generate_arrangement
from engine.data.render import render_dataset
from engine.data.slakh import SlakhDataset
from engine.types import EngineError

DUR = 4.0
SR = 16000


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, list[Path], list[tuple[int, int]]]:
    out = tmp_path_factory.mktemp("render_a")
    calls: list[tuple[int, int]] = []
    paths = render_dataset(out, 2, seed=7, duration_s=DUR, sample_rate=SR, source="patterns",
                           progress=lambda d, n: calls.append((d, n)))
    return out, paths, calls


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_and_metadata(rendered):
    out, paths, calls = rendered
    assert [p.name for p in paths] == ["Track00001", "Track00002"]
    assert calls == [(1, 2), (2, 2)]
    for track in paths:
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        assert meta["audio_dir"] == "stems" and meta["midi_dir"] == "MIDI"
        assert meta["normalized"] is True and len(meta["UUID"]) == 32
        assert meta["overall_gain"] > 0
        assert 2 <= len(meta["stems"]) <= 5
        assert (track / "all_src.mid").is_file() and (track / "mix.wav").is_file()
        all_src = pretty_midi.PrettyMIDI(str(track / "all_src.mid"))
        assert len(all_src.instruments) == len(meta["stems"])
        for sid, sm in meta["stems"].items():
            assert sm["audio_rendered"] is True
            assert sm["inst_class"] == program_class(sm["program_num"], sm["is_drum"])
            pm = pretty_midi.PrettyMIDI(str(track / "MIDI" / f"{sid}.mid"))
            assert len(pm.instruments) == 1 and pm.instruments[0].notes
            assert pm.instruments[0].is_drum == sm["is_drum"]
            if not sm["is_drum"]:
                assert pm.instruments[0].program == sm["program_num"]
            info = sf.info(str(track / "stems" / f"{sid}.wav"))
            assert (info.samplerate, info.channels, info.frames) == (SR, 1, int(DUR * SR))


def test_read_back_mix_is_sum_of_stems(rendered):
    out, paths, _ = rendered
    ds = SlakhDataset(out)
    assert len(ds) == 2 and ds.scan_report == []
    for track in ds:
        meta = yaml.safe_load((track.path / "metadata.yaml").read_text())
        assert [s.stem_id for s in track.stems] == sorted(meta["stems"])
        assert track.classes() == sorted({s["inst_class"] for s in meta["stems"].values()})
        stems = [s.load() for s in track.stems]
        mix = track.load_mix()
        assert mix.shape == (int(DUR * SR),)
        # PCM16 quantisation: each file off by at most half an LSB
        lsb = 1.0 / 32768
        np.testing.assert_allclose(mix, np.sum(stems, axis=0), atol=lsb * (len(stems) + 1))
        assert np.max(np.abs(mix)) <= 10 ** (-1 / 20) + lsb
        assert np.max(np.abs(mix)) > 10 ** (-1 / 20) - 0.05 or max(np.max(np.abs(s)) for s in stems) \
            > 10 ** (-1 / 20) - 0.05  # the peak target is reached by the mix or a stem


def test_audio_follows_active_bars(rendered):
    out, paths, _ = rendered
    for track in paths:
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        bar = meta["bar_seconds"]
        for sid, sm in meta["stems"].items():
            x, sr = sf.read(str(track / "stems" / f"{sid}.wav"))
            n_bars = int(np.ceil(DUR / bar))
            on = set(sm["active_bars"])
            for b in range(n_bars):
                seg = x[int(b * bar * sr): int(min((b + 1) * bar, DUR) * sr)]
                if seg.size < sr // 10:
                    continue
                rms_db = 20 * np.log10(np.sqrt(np.mean(seg**2)) + 1e-12)
                if b in on:
                    assert rms_db > -45, (track.name, sid, b, rms_db)
                elif b - 1 not in on:  # not in a release tail
                    assert rms_db < -80, (track.name, sid, b, rms_db)


def test_same_seed_is_byte_identical_and_other_seed_differs(rendered, tmp_path):
    out, paths, _ = rendered
    again = render_dataset(tmp_path / "b", 2, seed=7, duration_s=DUR, sample_rate=SR,
                           source="patterns", workers=2)
    assert [_digest(p) for p in again] == [_digest(p) for p in paths]
    other = render_dataset(tmp_path / "c", 1, seed=8, duration_s=DUR, sample_rate=SR,
                           source="patterns")
    assert _digest(other[0])["mix.wav"] != _digest(paths[0])["mix.wav"]


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(EngineError, match="soundfont"):
        render_dataset(tmp_path, 1, soundfont=tmp_path / "nope.sf2")
    with pytest.raises(EngineError, match="at least 1"):
        render_dataset(tmp_path, 0)
    with pytest.raises(EngineError, match="source"):
        render_dataset(tmp_path, 1, source="radio")


def test_generated_arrangements_balance_classes_and_have_solo_bars():
    n = 300
    track_classes: Counter[str] = Counter()
    solo_tracks = 0
    for i in range(n):
        arr = generate_arrangement(np.random.default_rng([0, i]), 20.0)
        assert 2 <= len(arr.parts) <= 5
        assert all(p.instrument.notes for p in arr.parts)
        classes = {p.inst_class for p in arr.parts}
        assert len(classes) == len(arr.parts)
        track_classes.update(classes)
        on = np.array([p.active_bars for p in arr.parts]).sum(axis=0)
        assert on.min() >= 1
        solo_tracks += bool((on == 1).any())
    for cls in MAIN_CLASSES:
        assert track_classes[cls] / n > 0.4, (cls, track_classes[cls])
    assert solo_tracks / n > 0.5


def test_mixed_source_draws_both_generators(tmp_path):
    # seed 7: tracks 1 and 3 draw the corpus, track 2 the pattern generator
    paths = render_dataset(tmp_path, 3, seed=7, duration_s=2.0)
    sources = [yaml.safe_load((p / "metadata.yaml").read_text())["source"].split(":")[0]
               for p in paths]
    assert sources == ["music21", "patterns", "music21"]
    ds = SlakhDataset(tmp_path)
    assert len(ds) == 3 and ds.scan_report == []
