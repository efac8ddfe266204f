"""ACE-Step on the tiny offline pipeline (saved and loaded through the folder path): sites, packed
keys split into the text and lyrics contexts, capture bit-identical to a stock run, frames equal to
an independent softmax, a planted attention map, engine.trace, the hub-cache layout, patch and caa."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.special import softmax

import engine
from engine.analysis.aggregate import aggregate_run
from engine.analysis.pooling import keyword_indices
from engine.backends.ace_step import LYRICS_SUFFIX, AceStepBackend
from engine.backends.registry import load_backend
from engine.backends.tiny import build_tiny, save_tiny
from engine.probe.attach import hook_count
from engine.types import EngineError, GenerationRequest

PROMPT = "funky bass and drums"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny("ace_step", tmp_path_factory.mktemp("ace") / "tiny-ace")


@pytest.fixture(scope="module")
def ace(saved):
    backend = load_backend(str(saved))
    assert isinstance(backend, AceStepBackend) and backend.family == "ace_step"
    return backend


def request(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": PROMPT, "steps": 2, "guidance": 3.0, "duration": 1.0, "seed": 5, **kw})


def stock(pipe, guidance: float) -> np.ndarray:
    out = pipe(PROMPT, lyrics="", audio_duration=1.0, num_inference_steps=2, guidance_scale=guidance,
               generator=torch.Generator().manual_seed(5), output_type="np")
    return out.audios[0].mean(axis=0)


def test_sites_in_call_order_and_tokens_per_segment(ace):
    sites = ace.sites()
    assert [(s.name, s.kind, s.context) for s in sites] == [
        ("layers.0.self_attn", "self", "self"), ("layers.0.cross_attn", "cross", "text"),
        ("layers.1.self_attn", "self", "self"), ("layers.1.cross_attn", "cross", "text")]
    assert all(s.heads == 4 and s.kv_heads == 2 for s in sites)
    seg = ace.segments(PROMPT, 1.0)
    assert seg["timbre"] == ["<timbre>"] and seg["lyrics"][-1] == "<|endoftext|>"
    assert "Ġbass" in seg["text"] and "Ġ1" in seg["text"]  # caption and "duration: 1 seconds" metadata
    assert ace.tokens(PROMPT) == {"text": ace.segments(PROMPT)["text"], "lyrics": seg["lyrics"]}


@pytest.mark.parametrize("guidance", [3.0, 1.0], ids=["cfg", "no_cfg"])
def test_capture_is_bit_identical_to_a_stock_run(ace, guidance):
    den = ace.denoiser
    before = (dict(den.attn_processors), hook_count(den))
    result = ace.generate(request(guidance=guidance))
    assert (dict(den.attn_processors), hook_count(den)) == before
    np.testing.assert_array_equal(result.audio, stock(ace.pipe, guidance))
    seg = ace.segments(PROMPT, 1.0)
    q = ace.queries(1.0)
    assert q == 13  # ceil(25 latents / patch 2)
    for (_step, site), frame in result.frames.items():
        context = "lyrics" if site.endswith(LYRICS_SUFFIX) else "text"
        assert frame.shape == (1, q, len(seg[context])) and result.lattices[site] == (q, 1)
    assert result.tokens == {"text": seg["text"], "lyrics": seg["lyrics"]}
    # text + lyrics + timbre columns hold the whole softmax row (no padding for one prompt)
    for (step, site), timbre in result.aux["timbre_mass"].items():
        total = (result.frames[(step, site)].astype(np.float32).sum(-1)
                 + result.frames[(step, site + LYRICS_SUFFIX)].astype(np.float32).sum(-1)).mean(0) + timbre
        np.testing.assert_allclose(total, 1.0, atol=5e-3)


def test_frames_equal_an_independent_softmax_of_the_cond_half(ace):
    """Conditional item first (cond_uncond): recompute softmax(q kᵀ·scale) from the module's inputs."""
    inputs: dict[str, tuple] = {}
    handles = []
    for i, layer in enumerate(ace.denoiser.layers):
        def keep(module, args, kwargs, name=f"layers.{i}.cross_attn"):
            inputs.setdefault(name, (kwargs["hidden_states"].clone(), kwargs["encoder_hidden_states"].clone()))
        handles.append(layer.cross_attn.register_forward_pre_hook(keep, with_kwargs=True))
    try:
        result = ace.generate(request(capture_steps=(0,)))
    finally:
        for h in handles:
            h.remove()
    n_lyr = len(result.tokens["lyrics"])
    for name, (hidden, context) in inputs.items():
        attn = ace.denoiser.get_submodule(name)
        assert hidden.shape[0] == 2  # CFG batch
        with torch.no_grad():
            q = attn.norm_q(attn.to_q(hidden[:1]).unflatten(-1, (4, 8))).transpose(1, 2)[0].double().numpy()
            k = attn.norm_k(attn.to_k(context[:1]).unflatten(-1, (2, 8))).transpose(1, 2)[0].double().numpy()
        k = np.repeat(k, 2, axis=0)  # GQA: query head h uses K/V head h // 2
        probs = softmax(q @ k.transpose(0, 2, 1) / np.sqrt(8), axis=-1).mean(0)
        np.testing.assert_allclose(result.frames[(0, name)][0], probs[:, n_lyr + 1:], atol=2e-3)
        np.testing.assert_allclose(result.frames[(0, name + LYRICS_SUFFIX)][0], probs[:, :n_lyr], atol=2e-3)


def test_planted_attention_peaks_on_the_planted_region():
    """Weights and inputs of every cross-attention are set so that queries 3-5 attend only to the key
    of "bass" and all other queries away from it: the map of "bass" must be 1 there and 0 elsewhere."""
    backend = AceStepBackend(build_tiny("ace_step"), "tiny:ace_step")
    seg = backend.segments(PROMPT, 1.0)
    key = len(seg["lyrics"]) + 1 + seg["text"].index("Ġbass")
    region = slice(3, 6)
    handles = []
    with torch.no_grad():
        for layer in backend.denoiser.layers:
            attn = layer.cross_attn
            for proj, norm in ((attn.to_q, attn.norm_q), (attn.to_k, attn.norm_k)):
                proj.weight.zero_()
                proj.weight[:, 0] = 1.0  # every channel reads input channel 0
                norm.weight.fill_(3.0)

            def plant(module, args, kwargs):
                hidden = torch.zeros_like(kwargs["hidden_states"])
                hidden[..., 0] = -1.0
                hidden[:, region, 0] = 1.0
                context = torch.zeros_like(kwargs["encoder_hidden_states"])
                context[:, key, 0] = 1.0
                return args, {**kwargs, "hidden_states": hidden, "encoder_hidden_states": context}
            handles.append(attn.register_forward_pre_hook(plant, with_kwargs=True))
    try:
        result = backend.generate(request())
    finally:
        for h in handles:
            h.remove()
    q = backend.queries(1.0)
    agg = aggregate_run(result, "text", target=(q, 1))
    heat = agg.maps[keyword_indices(agg.tokens, ["bass"])].mean(0)[:, 0]
    assert np.argmax(heat) in range(3, 6)
    np.testing.assert_allclose(heat[region], 1.0, atol=1e-2)
    assert heat[:3].max() < 1e-2 and heat[6:].max() < 1e-2


@pytest.mark.parametrize("guidance", [3.0, 1.0], ids=["cfg", "no_cfg"])
def test_trace_on_a_user_pipeline(ace, guidance):
    pipe = ace.pipe
    ref = stock(pipe, guidance)
    with engine.trace(pipe) as tr:
        out = stock(pipe, guidance)
    np.testing.assert_array_equal(ref, out)
    assert "encode_prompt" not in vars(pipe) and "decode" not in vars(pipe.vae)
    assert tr.contexts == ["text", "lyrics"] and tr.run.cfg.order == "cond_uncond"
    assert tr.run.cfg.guided is (guidance > 1)
    own = ace.generate(request(guidance=guidance))
    assert tr.result.frames.keys() == own.frames.keys()
    for k, frame in own.frames.items():
        np.testing.assert_array_equal(tr.result.frames[k], frame)
    assert tr.word_map("bass").shape == (128, 1)
    assert tr.tokens == own.tokens["text"] and tr.tokens_of("lyrics") == own.tokens["lyrics"]


def test_hub_cache_layout_loads_offline(saved, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub.constants as hc

    hub = tmp_path / "hub"
    snapshot = hub / "models--aiba--tiny-ace-step" / "snapshots" / "0123456789abcdef"
    shutil.copytree(saved, snapshot)
    (hub / "models--aiba--tiny-ace-step" / "refs").mkdir()
    (hub / "models--aiba--tiny-ace-step" / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    backend = load_backend("aiba/tiny-ace-step")
    assert isinstance(backend, AceStepBackend) and backend.revision == "0123456789abcdef"
    assert [s.name for s in backend.sites()] == [s.name for s in load_backend(str(saved)).sites()]


def test_bad_input_is_one_line(ace):
    with pytest.raises(EngineError, match="no negative prompt"):
        ace.generate(request(negative_prompt="noise"))


def test_patch_and_caa_on_tiny_ace_step(tmp_path):
    from engine.interventions.commands import CAAOptions, PatchOptions, run_caa, run_patch

    tiny = dict(model="tiny:ace_step", steps=2, duration=1.0)
    data = json.loads(run_patch(PatchOptions(concept="drums", out=str(tmp_path / "p"), max_pairs=1,
                                             scorer="band-template", **tiny)).read_text())
    assert [(r["layer"], r["site"]) for r in data["layers"]] == [(0, "layers.0.cross_attn"), (1, "layers.1.cross_attn")]
    assert all(np.isfinite(r["sim_patched_mean"]) for r in data["layers"])
    vec = run_caa(CAAOptions(concept="drums", out=str(tmp_path / "v.npz"), positive=["drums and bass"],
                             negative=["piano and bass"], layers="0,1", **tiny))
    vectors = np.load(vec)
    assert vectors["v0"].shape == (32,) and np.abs(vectors["v0"]).sum() > 0
