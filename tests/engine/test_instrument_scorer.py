"""The shipped instrument scorer: loading, size, concept probability on FluidSynth renders, the
scorer option of patch/steer, and ``train-scorer`` end to end on a tiny render."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch

from engine.interventions.scorers import BandTemplateScorer, InstrumentScorer, load_scorer
from engine.scoring.model import CLASSES, InstrumentScorerModel, default_scorer_dir
from engine.types import EngineError

torch.set_num_threads(1)
SR = 16000
ROOT = Path(__file__).resolve().parents[2]


def _phrase(cls: str) -> pretty_midi.PrettyMIDI:
    """A 4 s hand-written phrase in the class's usual register (not from the training generator)."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    program = {"Bass": 33, "Guitar": 25, "Piano": 0, "Strings": 48, "Organ": 16}.get(cls, 0)
    inst = pretty_midi.Instrument(program=program, is_drum=cls == "Drums")
    def note(pitch: int, start: float, dur: float, vel: int = 96) -> None:
        inst.notes.append(pretty_midi.Note(velocity=vel, pitch=pitch, start=start, end=start + dur))
    if cls == "Drums":
        for i in range(16):
            t = i * 0.25
            note(42, t, 0.1, 70)
            if i % 4 == 0:
                note(36, t, 0.2)
            if i % 4 == 2:
                note(38, t, 0.2)
    elif cls == "Bass":
        for i, p in enumerate([40, 40, 43, 45, 40, 40, 47, 45] * 2):
            note(p, i * 0.25, 0.22)
    elif cls in ("Strings", "Organ"):
        for i, chord in enumerate([(60, 64, 67), (57, 60, 64), (62, 65, 69), (59, 62, 67)]):
            for p in chord:
                note(p, i * 1.0, 0.98, 80)
    else:  # Guitar, Piano: broken chords
        for i, p in enumerate([48, 55, 60, 64, 67, 64, 60, 55] * 2):
            note(p, i * 0.25, 0.5 if cls == "Piano" else 0.24, 90)
    pm.instruments.append(inst)
    return pm


@pytest.fixture(scope="module")
def scorer() -> InstrumentScorer:
    return InstrumentScorer()


@pytest.fixture(scope="module")
def stems() -> dict[str, np.ndarray]:
    from engine.data.synth import find_soundfont, render_pretty_midi

    sf2 = find_soundfont(None)
    return {c: render_pretty_midi(_phrase(c), sf2, SR, 4 * SR) for c in CLASSES}


def test_the_shipped_scorer_is_small_and_names_its_classes():
    folder = default_scorer_dir()
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert size < 5 * 1024 * 1024, size
    model = InstrumentScorerModel.load(folder)
    assert model.config.classes == CLASSES
    assert (folder / "MODEL_CARD.md").is_file()


@pytest.mark.parametrize("cls", CLASSES)
def test_a_rendered_stem_scores_its_own_class_above_every_other(scorer, stems, cls):
    probs = scorer.model.probabilities(stems[cls], SR)
    others = {c: p for c, p in probs.items() if c != cls}
    assert probs[cls] > max(others.values()), probs
    # the concept probability the interventions use is that same number, whatever the word
    word = {"Drums": "drum", "Strings": "violin"}.get(cls, cls.lower())
    assert scorer.similarity(stems[cls], SR, word) == pytest.approx(probs[cls])


def test_loudness_and_sample_rate_barely_change_the_probability(scorer, stems):
    from engine.analysis.melscale import resample_audio

    x = stems["Bass"]
    p = scorer.similarity(x, SR, "bass")
    assert scorer.similarity(0.1 * x, SR, "bass") == pytest.approx(p, abs=1e-4)
    assert scorer.similarity(resample_audio(x, SR, 44100), 44100, "bass") == pytest.approx(p, abs=0.05)


def test_silence_bad_audio_and_unknown_concepts(scorer, stems):
    assert scorer.similarity(np.zeros(SR), SR, "bass") == 0.0
    with pytest.raises(EngineError, match="knows Bass, Drums"):
        scorer.similarity(stems["Bass"], SR, "flute")
    with pytest.raises(EngineError, match="not 'happy music'"):
        scorer.check_concept("happy music")
    with pytest.raises(EngineError, match="finite mono"):
        scorer.similarity(np.full(SR, np.nan), SR, "bass")


def test_preservation_features_have_the_documented_shapes(scorer, stems):
    emb = scorer.embeddings(stems["Piano"], SR)
    acts = scorer.activations(stems["Piano"], SR)
    assert emb.ndim == 2 and emb.shape[1] == scorer.model.config.channels[-1]
    assert len(acts) == len(scorer.model.config.channels)
    assert np.allclose(emb, acts[-1].mean(axis=2).T, atol=1e-5)  # frame embedding = last block, mean over F


def test_load_scorer_options(tmp_path):
    assert isinstance(load_scorer(None), InstrumentScorer)
    assert load_scorer("instrument").name == "instrument:aiba-instrument-scorer"
    assert isinstance(load_scorer("band-template"), BandTemplateScorer)
    with pytest.raises(EngineError, match="not an instrument-scorer folder"):
        load_scorer(f"instrument:{tmp_path}")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(EngineError, match="cannot load the instrument scorer"):
        load_scorer(f"instrument:{tmp_path}")


def test_train_scorer_command_end_to_end_on_a_tiny_render(tmp_path):
    from engine.data.render import render_dataset

    render_dataset(tmp_path / "work" / "train", 2, seed=2000, duration_s=5.0)
    render_dataset(tmp_path / "work" / "test", 2, seed=3000, duration_s=5.0)
    cmd = [sys.executable, "main.py", "train-scorer", "--out", str(tmp_path / "m"), "--work", str(tmp_path / "work"),
           "--tracks", "2", "--test-tracks", "2", "--track-duration", "5", "--train-steps", "3",
           "--generated-seeds", ""]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "m" / "training.json").read_text())
    assert "reusing 2 tracks" in done.stdout and [r["step"] for r in report["loss"]] == [3]
    heldout = report["heldout"]
    assert heldout["windows"] == int(np.sum(heldout["confusion"])) > 0
    assert heldout["accuracy"] == pytest.approx(np.trace(heldout["confusion"]) / heldout["windows"])
    assert InstrumentScorerModel.load(tmp_path / "m").config.extra["steps"] == 3
    bad = subprocess.run([sys.executable, "main.py", "train-scorer", "--out", str(tmp_path / "x"),
                          "--train-steps", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--train-steps" in bad.stderr
    assert not (tmp_path / "x").exists()
