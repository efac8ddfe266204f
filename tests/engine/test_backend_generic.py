"""The generic path (sites by walking modules, kernel-level capture, steps from scheduler.step) on
the tiny LongCat-Audio-DiT: saved/loaded folder and hub-cache layout, separate CFG calls (the
conditional call is recorded), frames = an independent softmax, engine.trace leaves no trace."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_longcat_audio_dit import _apply_rotary_emb
from scipy.special import softmax

import engine
from engine.backends.generic import GenericBackend
from engine.backends.registry import load_backend
from engine.backends.tiny import build_tiny, save_tiny
from engine.probe.attach import hook_count
from engine.types import GenerationRequest

PROMPT = "funky bass and drums"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny("longcat", tmp_path_factory.mktemp("longcat") / "tiny-longcat")


@pytest.fixture(scope="module")
def lc(saved):
    backend = load_backend(str(saved))
    assert isinstance(backend, GenericBackend) and backend.family == "longcat"
    return backend


def request(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": PROMPT, "steps": 3, "guidance": 4.0, "duration": 0.5, "seed": 2, **kw})


def stock(pipe, guidance: float) -> np.ndarray:
    return pipe(PROMPT, audio_duration_s=0.5, num_inference_steps=3, guidance_scale=guidance,
                generator=torch.Generator().manual_seed(2), output_type="np").audios


def test_sites_are_found_by_walking_modules(lc):
    assert not hasattr(lc.denoiser, "attn_processors")  # LongCat's DiT is no AttentionMixin
    assert [(s.name, s.kind, s.context) for s in lc.sites()] == [
        ("blocks.0.self_attn", "self", "self"), ("blocks.0.cross_attn", "cross", "text"),
        ("blocks.1.self_attn", "self", "self"), ("blocks.1.cross_attn", "cross", "text")]
    assert lc.tokens("Funky BASS and drums")["text"] == ["▁funk", "y", "▁bass", "▁and", "▁drums", "</s>"]


def test_reloaded_folder_matches_the_built_pipeline(lc):
    """save_pretrained skips LongCat's scheduler; the tiny one is the pipeline's default, so the
    reloaded pipeline generates the same audio."""
    built = build_tiny("longcat")
    built.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(stock(built, 4.0), stock(lc.pipe, 4.0))


def test_the_conditional_call_is_recorded_and_equals_an_independent_softmax(lc):
    calls: list[dict] = []
    attn = lc.denoiser.get_submodule("blocks.1.cross_attn")
    handle = attn.register_forward_pre_hook(
        lambda m, a, kw: calls.append({k: v for k, v in kw.items() if isinstance(v, torch.Tensor | tuple)}),
        with_kwargs=True)
    try:
        guided = lc.generate(request(capture_steps=(0,)))
    finally:
        handle.remove()
    assert len(calls) == 6  # 3 steps x (cond call, null call): separate CFG calls
    cond = calls[0]
    with torch.no_grad():
        q = attn.q_norm(attn.to_q(cond["hidden_states"])).view(1, -1, 4, 8)
        k = attn.k_norm(attn.to_k(cond["encoder_hidden_states"])).view(1, -1, 4, 8)
        q = _apply_rotary_emb(q, cond["audio_rotary_emb"])
        k = _apply_rotary_emb(k, cond["prompt_rotary_emb"])
    q, k = q[0].transpose(0, 1).double().numpy(), k[0].transpose(0, 1).double().numpy()
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(8)
    scores[..., ~cond["attention_mask"][0].numpy()] = -np.inf
    expected = softmax(scores, axis=-1).mean(0)
    frame = guided.frames[(0, "blocks.1.cross_attn")][0]
    np.testing.assert_allclose(frame, expected, atol=2e-3)
    # step 0's conditional call sees the same inputs with or without guidance; the null call differs
    plain = lc.generate(request(guidance=1.0, capture_steps=(0,)))
    np.testing.assert_array_equal(plain.frames[(0, "blocks.1.cross_attn")], guided.frames[(0, "blocks.1.cross_attn")])
    assert sorted({t for t, _ in guided.frames}) == [0]


@pytest.mark.parametrize("guidance", [4.0, 1.0], ids=["cfg", "no_cfg"])
def test_trace_is_invisible_and_records_every_step_once(lc, guidance):
    pipe, den = lc.pipe, lc.denoiser
    before = ([m.processor for m in den.modules() if hasattr(m, "processor")], hook_count(den),
              F.scaled_dot_product_attention, "step" in vars(pipe.scheduler))
    ref = stock(pipe, guidance)
    with engine.trace(pipe) as tr:
        out = stock(pipe, guidance)
    np.testing.assert_array_equal(ref, out)
    after = ([m.processor for m in den.modules() if hasattr(m, "processor")], hook_count(den),
             F.scaled_dot_product_attention, "step" in vars(pipe.scheduler))
    assert after == before
    assert sorted({t for t, _ in tr.result.frames}) == [0, 1, 2]
    assert tr.word_map("bass").shape == (128, 1) and tr.tokens[2] == "▁bass"


def test_trace_restores_the_kernel_when_the_pipeline_raises(lc):
    kernel = F.scaled_dot_product_attention

    def stop(pipe, i, t, tensors):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"), engine.trace(lc.pipe):
        lc.pipe(PROMPT, audio_duration_s=0.5, num_inference_steps=3, callback_on_step_end=stop)
    assert F.scaled_dot_product_attention is kernel and "step" not in vars(lc.pipe.scheduler)


def test_hub_cache_layout_loads_offline(saved, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    repo = tmp_path / "hub" / "models--aiba--tiny-longcat"
    shutil.copytree(saved, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backend = load_backend("aiba/tiny-longcat")
    assert isinstance(backend, GenericBackend) and backend.revision == "abc123"
