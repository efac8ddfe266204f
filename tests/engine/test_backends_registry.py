"""load_backend: local folders written by save_tiny, hub ids offline, embedded fallback, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.backends.registry import hub_cache_path, load_backend
from engine.backends.tiny import build_tiny, save_tiny
from engine.types import EngineError, GenerationRequest


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {f: save_tiny(f, root / f) for f in ("audioldm2", "stable_audio")}


def test_audioldm2_folder_round_trip(folders):
    backend = load_backend(str(folders["audioldm2"]))
    assert backend.family == "audioldm2" and backend.model_id == str(folders["audioldm2"])
    sites = backend.sites()
    cross = [s for s in sites if s.kind == "cross"]
    # [None, 16, 32] per layer position: 12 attn2 modules, 8 true cross (4 LOA + 4 T5)
    assert sum(s.name.endswith("attn2") for s in sites) == 12
    assert sorted(s.context for s in cross) == ["loa"] * 4 + ["t5"] * 4
    assert all(s.name.split(".attentions.")[1][0] in "0369" for s in sites
               if s.name.endswith("attn2") and s.kind == "self")
    for s in cross:  # the key projection width names the context: 16 = GPT-2, 32 = T5
        width = backend.denoiser.get_submodule(s.name).to_k.in_features
        assert width == {"loa": 16, "t5": 32}[s.context]
    # tokenizers survive save/load: the same token strings as the in-memory build
    fresh = build_tiny("audioldm2").tokenizer_2
    prompt = "Soft Piano and deep bass"
    assert backend.tokens(prompt)["t5"] == fresh.convert_ids_to_tokens(fresh(prompt).input_ids)
    assert backend.tokens(prompt)["t5"][:3] == ["▁Soft", "▁Piano", "▁and"]
    assert backend.tokens(prompt)["loa"] == [f"loa{i}" for i in range(8)]
    spec = backend.mel_spec()
    assert (spec.sample_rate, spec.hop_length, spec.n_mels, spec.fmax) == (16000, 160, 8, 8000)
    result = backend.generate(GenerationRequest(prompt=prompt, steps=2, duration=0.32))
    assert result.audio.shape == (int(0.32 * 16000),) and result.audio.dtype == np.float32
    assert result.recipe["model_id"] == str(folders["audioldm2"])


def test_stable_audio_folder_sites_are_all_cross(folders):
    """Every DiT block's attn2 is true cross-attention to the conditioning tokens."""
    backend = load_backend(str(folders["stable_audio"]))
    assert backend.family == "stable_audio"
    sites = backend.sites()
    n_blocks = len(backend.denoiser.transformer_blocks)
    cross = [s for s in sites if s.kind == "cross"]
    assert [s.name for s in cross] == [f"transformer_blocks.{i}.attn2" for i in range(n_blocks)]
    assert all(backend.denoiser.get_submodule(s.name).is_cross_attention for s in cross)
    assert all(s.kv_heads == 2 and s.heads == 4 for s in cross)
    req = GenerationRequest(prompt="Loud drums", steps=2, duration=0.1)
    result = backend.generate(req)
    keys = len(backend.tokens(req.prompt)["text"])
    assert keys == backend.pipe.tokenizer.model_max_length + 2
    for (_, site), frame in result.frames.items():
        assert result.lattices[site] == (13, 1)  # ceil(0.1 s * 1000 Hz / hop 8)
        assert frame.shape == (1, 13, len(result.tokens["text"])) and frame.shape[2] < keys  # pads dropped
    assert result.tokens["text"][-2:] == ["seconds_start", "seconds_end"]
    assert result.audio.ndim == 1 and result.audio.shape[0] == 100


def test_missing_hub_id_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for model_id in ("cvssp/audioldm2-music", "stabilityai/stable-audio-open-1.0"):
        with pytest.raises(EngineError) as info:
            load_backend(model_id)
        message = str(info.value)
        assert "\n" not in message
        assert model_id in message
        assert str(hub_cache_path(model_id)) in message
        assert f"hf download {model_id}" in message
        assert f"snapshot_download({model_id!r})" in message
        assert "local folder" in message


def test_bad_names_and_folders(tmp_path):
    with pytest.raises(EngineError, match="not a hub id"):
        load_backend("no-such-folder-or-id")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(EngineError, match="FluxPipeline"):
        load_backend(str(tmp_path))
    with pytest.raises(EngineError, match="dtype"):
        load_backend("tiny:audioldm2", dtype="float8")
    with pytest.raises(EngineError, match="device"):
        load_backend("tiny:audioldm2", device="tpu")


def test_embedded_falls_back_to_cached_tiny_with_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("AIBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("AIBA_EMBEDDED_MODEL_DIR", str(tmp_path / "no-embedded-model"))
    backend = load_backend()
    assert (tmp_path / "tiny-audioldm2" / "model_index.json").is_file()
    assert backend.model_id == "embedded"
    assert any("embedded model is not installed" in w for w in backend.warnings)
    result = backend.generate(GenerationRequest(prompt="bass", steps=1, duration=0.32))
    assert any("embedded model is not installed" in w for w in result.warnings)


def test_stored_tokens_label_exactly_the_keys_the_frames_hold(folders):
    """The live view labels keys with ``stored_tokens``: for Stable Audio (pads dropped before
    storage) it must equal the run's own token list, one label per key of every frame."""
    for family in ("stable_audio", "audioldm2"):
        backend = load_backend(str(folders[family]))
        result = backend.generate(GenerationRequest(prompt="Loud drums", steps=1, duration=0.1))
        assert backend.stored_tokens("Loud drums") == result.tokens
        main = "text" if family == "stable_audio" else "t5"
        keys = {frame.shape[-1] for (_, site), frame in result.frames.items()
                if next(s for s in result.sites if s.name == site).context == main}
        assert keys == {len(result.tokens[main])}
    sao = load_backend(str(folders["stable_audio"]))
    assert len(sao.stored_tokens("Loud drums")["text"]) < len(sao.tokens("Loud drums")["text"])
