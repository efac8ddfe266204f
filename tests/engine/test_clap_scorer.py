"""The CLAP scorer on a tiny random ``ClapModel`` saved to a folder (transformers' real classes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.interventions.scorers import ClapScorer, load_scorer
from engine.types import EngineError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizer,
    )

    torch.manual_seed(0)
    audio = ClapAudioConfig(window_size=4, num_mel_bins=16, spec_size=64, patch_size=4, patch_stride=(4, 4),
                            hidden_size=16, projection_dim=8, depths=[1, 1], num_attention_heads=[2, 2],
                            patch_embeds_hidden_size=8, num_hidden_layers=2, enable_fusion=False)
    text = ClapTextConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=40, projection_dim=8)
    folder = tmp_path_factory.mktemp("clap")
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8)).save_pretrained(folder)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for c in sorted(set("drumspianobass ")):
        vocab[c] = len(vocab)
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1,
                              fft_window_size=512, frequency_max=8000, truncation="rand_trunc")
    ClapProcessor(feature_extractor=fe, tokenizer=RobertaTokenizer(vocab=vocab, merges=[])).save_pretrained(folder)
    return folder


def _tone(sr: int, hz: float = 110.0) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(sr) / sr)


def test_clap_scorer_is_the_cosine_of_the_models_own_embeddings(clap_dir):
    from transformers import ClapModel, ClapProcessor

    scorer = load_scorer(f"clap:{clap_dir}")
    assert isinstance(scorer, ClapScorer) and scorer.name == f"clap:{clap_dir.name}"
    x = _tone(16000)
    model = ClapModel.from_pretrained(str(clap_dir)).eval()
    proc = ClapProcessor.from_pretrained(str(clap_dir))
    with torch.no_grad():
        a = model.get_audio_features(**proc(audio=[x.astype(np.float32)], sampling_rate=16000, return_tensors="pt"))
        t = model.get_text_features(**proc(text=["drums"], return_tensors="pt", padding=True))
    a, t = getattr(a, "pooler_output", a)[0].numpy(), getattr(t, "pooler_output", t)[0].numpy()
    expected = float(a @ t / (np.linalg.norm(a) * np.linalg.norm(t)))
    assert scorer.similarity(x, 16000, "drums") == pytest.approx(expected, abs=1e-6)
    assert -1.0 <= expected <= 1.0


def test_clap_scorer_depends_on_text_and_audio_and_resamples(clap_dir):
    scorer = ClapScorer(clap_dir)
    x = _tone(16000)
    drums, piano = scorer.similarity(x, 16000, "drums"), scorer.similarity(x, 16000, "piano")
    assert drums != pytest.approx(piano, abs=1e-6)  # different words, different text embeddings
    noise = np.random.default_rng(0).normal(size=16000) * 0.3
    assert scorer.similarity(noise, 16000, "drums") != pytest.approx(drums, abs=1e-6)
    # the same tone given at 32 kHz is resampled to the processor's 16 kHz first
    assert scorer.similarity(_tone(32000), 32000, "drums") == pytest.approx(drums, abs=2e-3)


def test_clap_scorer_refuses_a_folder_without_a_checkpoint(tmp_path):
    with pytest.raises(EngineError, match="not a CLAP checkpoint folder"):
        ClapScorer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clap"}))
    with pytest.raises(EngineError, match="cannot load CLAP"):
        load_scorer(f"clap:{tmp_path}")
