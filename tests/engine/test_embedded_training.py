"""Embedded model training data and ``train_default`` on a small fabricated Slakh-format set.

Each class gets a tone in its own band, so the mel tells which stems a clip holds; the sampler's
captions must name exactly those classes.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from engine.models.embedded.dataset import DEFAULT_CLASSES, ClipSampler, extract_features
from engine.models.embedded.melspec import MelConfig, hz_to_mel_slaney
from engine.models.embedded.textenc import CLASS_WORDS, WordTokenizer
from engine.models.embedded.train import train_default
from engine.types import EngineError

SR = 16000
TONE_HZ = {"Bass": 60.0, "Drums": 6000.0, "Guitar": 300.0, "Piano": 800.0, "Strings": 1600.0,
           "Organ": 3200.0}
CFG = MelConfig()


def _bin_of(hz: float) -> int:
    centres = np.linspace(0, hz_to_mel_slaney(CFG.fmax), CFG.n_mels + 2)[1:-1]
    return int(np.abs(centres - hz_to_mel_slaney(hz)).argmin())


def fabricate(root, n_tracks: int = 3, seconds: float = 6.0) -> None:
    """Slakh-format tracks, one stem per class, each a tone in its class's band."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    for i in range(n_tracks):
        track = root / f"Track{i + 1:05d}"
        (track / "stems").mkdir(parents=True)
        stems = {}
        for j, (cls, hz) in enumerate(TONE_HZ.items()):
            audio = 0.3 * np.sin(2 * np.pi * hz * (1 + 0.01 * i) * t + rng.uniform(0, 6))
            sf.write(str(track / "stems" / f"S{j:02d}.wav"), audio.astype(np.float32), SR, subtype="PCM_16")
            stems[f"S{j:02d}"] = {"inst_class": cls, "audio_rendered": True, "is_drum": cls == "Drums"}
        (track / "metadata.yaml").write_text(yaml.safe_dump({"audio_dir": "stems", "stems": stems}))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("slakh")
    fabricate(root)
    return root


def test_captions_name_exactly_the_mixed_classes(data_dir, tmp_path):
    feats = extract_features(data_dir, CFG, DEFAULT_CLASSES, cache_dir=tmp_path)
    assert len(feats.cls) == 18 and sorted(set(feats.cls.tolist())) == list(range(6))
    sampler = ClipSampler(feats, CFG)
    tok = WordTokenizer.default()
    word_class = {CLASS_WORDS[c]: c for c in DEFAULT_CLASSES}
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(40):
        power, caption = sampler.sample(rng)
        named = {word_class[w] for w in tok.tokenize(caption)[1] if w in word_class}
        sizes.append(len(named))
        band = power.mean(axis=0)
        for cls, hz in TONE_HZ.items():
            level = band[_bin_of(hz)] / band.max()
            if cls in named:
                assert level > 1e-2, (caption, cls)
            else:
                assert level < 1e-3, (caption, cls)
    assert set(sizes) == {1, 2, 3}
    # cached features are reused and identical
    again = extract_features(data_dir, CFG, DEFAULT_CLASSES, cache_dir=tmp_path)
    assert np.array_equal(again.db, feats.db) and len(list(tmp_path.glob("*.npz"))) == 1


def test_batch_scale_dropout_and_unknown_class(data_dir, tmp_path):
    feats = extract_features(data_dir, CFG, DEFAULT_CLASSES, cache_dir=tmp_path)
    sampler = ClipSampler(feats, CFG)
    mel, ids, mask, captions = sampler.batch(np.random.default_rng(2), 64, WordTokenizer.default())
    assert mel.shape == (64, 256, 64) and mel.dtype == torch.float32
    assert torch.allclose(mel.amax(dim=(1, 2)), torch.ones(64)) and float(mel.min()) >= -1.0
    n_empty = sum(c == "" for c in captions)
    assert 1 <= n_empty <= 15  # ~10% CFG dropout
    assert all(mask[i].sum() == 1 for i, c in enumerate(captions) if c == "")
    with pytest.raises(EngineError, match="Brass"):
        ClipSampler(extract_features(data_dir, CFG, ("Bass", "Brass")), CFG)


def test_stem_count_mix_is_followed_and_checked(data_dir, tmp_path):
    feats = extract_features(data_dir, CFG, DEFAULT_CLASSES, cache_dir=tmp_path)
    tok = WordTokenizer.default()
    class_ids = {tok.word_to_id[w] for w in CLASS_WORDS.values() if w in tok.word_to_id}
    for p, n_words in (((1.0, 0.0, 0.0), 1), ((0.0, 0.0, 1.0), 3)):
        sampler = ClipSampler(feats, CFG, stem_count_p=p)
        rng = np.random.default_rng(0)
        for _ in range(20):
            _, caption = sampler.sample(rng)
            ids = tok.tokenize(caption)[0]
            assert sum(i in class_ids for i in ids) == n_words, caption
    with pytest.raises(EngineError, match="summing to 1"):
        ClipSampler(feats, CFG, stem_count_p=(0.5, 0.2, 0.2))


def test_train_default_is_deterministic_and_writes_a_model(data_dir, tmp_path):
    kw = dict(data_dir=data_dir, steps=3, seed=1, threads=1, batch_size=2, log_every=1,
              log=lambda msg: None)
    a = train_default(tmp_path / "a", **kw)
    b = train_default(tmp_path / "b", **kw)
    wa = load_file(str(a / "unet" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(b / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = list(csv.DictReader((a / "loss_log.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    info = json.loads((a / "training.json").read_text())
    assert info["steps"] == 3 and info["classes"] == list(DEFAULT_CLASSES)
    assert info["prediction_type"] == "v_prediction" and info["text_layers"] == 0
    # the EMA weights that were saved differ from the untrained initialisation
    from engine.models.embedded.pipeline import EmbeddedPipeline

    init = EmbeddedPipeline.build(seed=1).unet.state_dict()
    assert any(not torch.equal(init[k], wa[k]) for k in wa)
    with pytest.raises(EngineError):
        train_default(tmp_path / "c", data_dir=data_dir, steps=0)


def test_text_use_is_zero_when_every_caption_encodes_the_same(data_dir, tmp_path):
    from engine.models.embedded.evaluate import text_use
    from engine.models.embedded.pipeline import EmbeddedPipeline

    pipe = EmbeddedPipeline.build(seed=4)
    sampler = ClipSampler(extract_features(data_dir, CFG, DEFAULT_CLASSES, cache_dir=tmp_path), CFG)
    classes = list(DEFAULT_CLASSES)
    varied = text_use(pipe, sampler, classes, seed=0, timesteps=(500,), clips=2)["500"]
    assert any(abs(g) > 1e-3 for g in varied["gain_over_empty_pct"])  # random embeddings differ
    with torch.no_grad():  # every word (and <bos>) the same vector: attention output cannot depend on the caption
        pipe.text_encoder.token.weight.copy_(pipe.text_encoder.token.weight[1].expand_as(pipe.text_encoder.token.weight))
    same = text_use(pipe, sampler, classes, seed=0, timesteps=(500,), clips=2)["500"]
    assert np.allclose(same["gain_over_empty_pct"], 0.0, atol=1e-3)


def test_training_data_is_found_in_the_released_slakh_layout(tmp_path):
    """flac_redux writes ``audio_dir: TrackNNNNN/stems`` (split-relative) and FLAC stems; an
    unrendered stem is skipped. The training loader must find exactly the rendered bass and drums."""
    from engine.models.embedded.dataset import list_stems
    from tests.engine.slakh_release import ReleaseStem, noise_hits, sine, write_track

    sr = 16000
    stems = {
        "S00": ReleaseStem("Bass", 33, "Electric Bass (finger)", "scarbee_jay_bass_both.nkm", sine(55.0, 1.0, sr)),
        "S01": ReleaseStem("Drums", 128, "Drums", "session_kit_full.nkm", noise_hits(1.0, sr), is_drum=True),
        "S02": ReleaseStem("Piano", 0, "Acoustic Grand Piano", "None", None),
    }
    split = tmp_path / "train"
    write_track(split / "Track00001", stems, sr, form="redux")
    found = list_stems(split, ("Bass", "Drums", "Piano"))
    assert [(p.name, c) for _, p, c in found] == [("S00.flac", "Bass"), ("S01.flac", "Drums")]
