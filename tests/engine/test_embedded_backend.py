"""The embedded backend (generic capture on the embedded UNet) and the shipped weights."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.backends.embedded import EmbeddedBackend
from engine.backends.registry import load_backend
from engine.models.embedded.backend import default_model_dir, load_embedded_backend
from engine.models.embedded.pipeline import EmbeddedPipeline
from engine.types import EngineError, GenerationRequest

SHIPPED = default_model_dir()


@pytest.fixture(scope="module")
def backend():
    return EmbeddedBackend(EmbeddedPipeline.build(seed=2))


def test_sites_lattices_and_frames(backend):
    sites = backend.sites()
    cross = [s for s in sites if s.kind == "cross"]
    assert len(sites) == 14 and len(cross) == 7
    assert all(s.name.endswith("attn2") and s.context == "text" and s.heads == 4 for s in cross)
    req = GenerationRequest(prompt="bass and a kazoo", negative_prompt="piano and organ with the drums",
                            steps=2, duration=1.0, seed=1)
    res = backend.generate(req)
    # 1.0 s -> 62.5 frames -> 64 (multiple of 16); level 0 = 64/4 x 64/2
    assert res.mel.shape == (64, 64) and res.audio.shape == (64 * 256,)
    assert res.lattices["down_blocks.1.attentions.0.transformer_blocks.0.attn2"] == (8, 16)
    assert res.lattices["mid_block.attentions.0.transformer_blocks.0.attn2"] == (4, 8)
    shapes = backend.frame_shapes(req)
    for (_step, site), probs in res.frames.items():
        t_l, f_l = res.lattices[site]
        assert probs.shape == (1, t_l * f_l, 7) and shapes[site] == (4, t_l * f_l, 7)
        assert np.allclose(probs.astype(np.float32).sum(-1), 1.0, atol=2e-3)
        assert float(probs[..., 5:].max()) < 1e-3  # the two padded keys of the cond item
    assert len(res.frames) == 2 * 7
    assert res.tokens["text"] == ["<bos>", "bass", "and", "a", "kazoo", "<pad>", "<pad>"]
    assert any("kazoo" in w for w in res.warnings)
    assert backend.lattice_factor("up_blocks.1.attentions.1.transformer_blocks.0.attn2") == (8, 4)
    # capture leaves the model output unchanged
    plain = backend.pipe(req.prompt, req.negative_prompt, num_inference_steps=2, audio_length_in_s=1.0,
                         generator=torch.Generator().manual_seed(1), vocode_audio=False)
    assert np.array_equal(plain.mel, res.mel)


def test_bad_duration_is_a_clear_error(backend):
    with pytest.raises(EngineError, match="duration"):
        backend.generate(GenerationRequest(prompt="bass", duration=60.0, steps=1))


def test_missing_model_folder_says_how_to_make_it(tmp_path):
    with pytest.raises(EngineError, match="train-default"):
        load_embedded_backend(folder=tmp_path)


def test_shipped_weights_load_fast_and_generate_deterministically():
    weights = sum(p.stat().st_size for p in Path(SHIPPED).rglob("*.safetensors"))
    assert 0 < weights <= 30 * 2**20
    EmbeddedPipeline.from_pretrained(SHIPPED)  # warm imports
    t0 = time.perf_counter()
    b = load_backend("embedded")
    assert time.perf_counter() - t0 < 3.0
    assert isinstance(b, EmbeddedBackend) and b.warnings == []
    req = GenerationRequest(prompt="bass", steps=3, duration=2.0, seed=7)
    r1, r2 = b.generate(req), b.generate(req)
    r3 = b.generate(GenerationRequest(prompt="bass", steps=3, duration=2.0, seed=8))
    assert np.array_equal(r1.audio, r2.audio) and np.array_equal(r1.mel, r2.mel)
    assert not np.allclose(r1.mel, r3.mel)
    assert r1.audio.dtype == np.float32 and np.isfinite(r1.audio).all()
    assert 0.5 < float(np.abs(r1.audio).max()) <= 0.9001
    assert r1.mel_spec.n_mels == 64 and r1.sample_rate == 16000


def test_preview_request_vocodes_the_same_mel_with_fewer_griffin_lim_iterations(backend):
    from engine.backends.embedded import PREVIEW_GRIFFIN_LIM_ITERS
    from engine.models.embedded.vocoder import vocode

    req = GenerationRequest(prompt="bass and drums", seed=3, steps=2, duration=1.0, capture=False)
    full = backend.generate(req)
    quick = backend.generate(dataclasses.replace(req, preview=True))
    np.testing.assert_array_equal(quick.mel, full.mel)  # the denoising is untouched
    config = backend.pipe.mel_config
    np.testing.assert_allclose(quick.audio, vocode(full.mel, config, PREVIEW_GRIFFIN_LIM_ITERS), atol=1e-6)
    np.testing.assert_allclose(full.audio, vocode(full.mel, config, backend.pipe.griffin_lim_iters), atol=1e-6)
    assert not np.allclose(quick.audio, full.audio, atol=1e-3)
    assert any("8 iterations (preview)" in n for n in quick.recipe["notes"])
    assert quick.recipe["preview"] is True and full.recipe["preview"] is False
