"""Stable Audio 3 on the tiny offline pipeline: no CFG half without guidance, the unconditional
half first with it, frames = p1 of the differential attention (independent softmax), capture and
engine.trace bit-identical to a stock run, folder and hub-cache loading."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from scipy.special import softmax

import engine
from engine.backends.registry import load_backend
from engine.backends.stable_audio_3 import StableAudio3Backend
from engine.backends.tiny import save_tiny
from engine.probe.attach import hook_count
from engine.types import GenerationRequest

PROMPT = "funky bass and drums"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny("stable_audio_3", tmp_path_factory.mktemp("sa3") / "tiny-sa3")


@pytest.fixture(scope="module")
def sa3(saved):
    backend = load_backend(str(saved))
    assert isinstance(backend, StableAudio3Backend)
    return backend


def request(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": PROMPT, "steps": 2, "guidance": 1.0, "duration": 0.5, "seed": 3, **kw})


def stock(pipe, guidance: float) -> np.ndarray:
    out = pipe(PROMPT, duration=0.5, num_inference_steps=2, guidance_scale=guidance,
               generator=torch.Generator().manual_seed(3), output_type="np")
    return out.audios[0].mean(axis=0)


def test_sites(sa3):
    assert [(s.name, s.kind) for s in sa3.sites()] == [
        ("transformer_blocks.0.self_attn", "self"), ("transformer_blocks.0.cross_attn", "cross"),
        ("transformer_blocks.1.self_attn", "self"), ("transformer_blocks.1.cross_attn", "cross")]
    assert all(s.heads == 4 and s.kv_heads == 4 for s in sa3.sites())
    assert sa3.tokens(PROMPT)["text"][-1] == "<duration>" and len(sa3.tokens(PROMPT)["text"]) == 17


@pytest.mark.parametrize("guidance", [1.0, 3.0], ids=["no_cfg", "cfg"])
def test_frames_are_p1_of_the_positive_item_and_output_is_unchanged(sa3, guidance):
    den = sa3.denoiser
    before = (dict(den.attn_processors), hook_count(den))
    inputs: dict[str, tuple] = {}
    handles = []
    for i, block in enumerate(den.transformer_blocks):
        def keep(module, args, kwargs, name=f"transformer_blocks.{i}.cross_attn"):
            inputs.setdefault(name, (args[0].clone(), kwargs["context"].clone()))
        handles.append(block.cross_attn.register_forward_pre_hook(keep, with_kwargs=True))
    try:
        result = sa3.generate(request(guidance=guidance, capture_steps=(0,)))
    finally:
        for h in handles:
            h.remove()
    assert (dict(den.attn_processors), hook_count(den)) == before
    np.testing.assert_array_equal(result.audio, stock(sa3.pipe, guidance))
    n, mem = sa3.queries(0.5), sa3.memory_tokens
    assert n == 50 and mem == 2
    real = [t != "<pad>" for t in sa3.tokens(PROMPT)["text"]]
    assert result.tokens["text"] == [t for t in sa3.tokens(PROMPT)["text"] if t != "<pad>"]
    for name, (hidden, context) in inputs.items():
        attn = den.get_submodule(name)
        assert hidden.shape[0] == (2 if guidance > 1 else 1)  # no CFG half without guidance
        item = hidden.shape[0] - 1  # [uncond, cond]: the positive prompt last
        maps = []
        for branch in (0, 1):
            with torch.no_grad():
                q = attn.q_norm(attn.to_q(hidden[item:item + 1]).chunk(2, -1)[branch].unflatten(-1, (4, 8)))
                k = attn.k_norm(attn.to_kv(context[item:item + 1]).chunk(3, -1)[branch].unflatten(-1, (4, 8)))
            q, k = q.transpose(1, 2)[0].double().numpy(), k.transpose(1, 2)[0].double().numpy()
            maps.append(softmax(q @ k.transpose(0, 2, 1) / np.sqrt(8), axis=-1).mean(0)[mem:mem + n][:, real])
        frame = result.frames[(0, name)][0]
        np.testing.assert_allclose(frame, maps[0], atol=2e-3)  # p1, the positive branch
        assert np.abs(frame - maps[1]).max() > 1e-2  # not p2
        sink = result.aux["sink_mass"][(0, name)]
        np.testing.assert_allclose(frame.astype(np.float32).sum(-1) + sink, 1.0, atol=5e-3)


@pytest.mark.parametrize("guidance", [1.0, 3.0], ids=["no_cfg", "cfg"])
def test_trace_records_what_the_engine_records(sa3, guidance):
    ref = stock(sa3.pipe, guidance)
    with engine.trace(sa3.pipe) as tr:
        out = stock(sa3.pipe, guidance)
    np.testing.assert_array_equal(ref, out)
    assert tr.run.cfg.guided is (guidance > 1) and "encode_prompt" not in vars(sa3.pipe)
    own = sa3.generate(request(guidance=guidance))
    assert tr.result.frames.keys() == own.frames.keys() and tr.result.tokens == own.tokens
    for key, frame in own.frames.items():
        np.testing.assert_array_equal(tr.result.frames[key], frame)
    assert tr.word_map("bass").shape == (128, 1)


def test_hub_cache_layout_loads_offline(saved, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    repo = tmp_path / "hub" / "models--aiba--tiny-stable-audio-3"
    shutil.copytree(saved, repo / "snapshots" / "feedbeef")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("feedbeef")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backend = load_backend("aiba/tiny-stable-audio-3")
    assert isinstance(backend, StableAudio3Backend) and backend.revision == "feedbeef"


@pytest.mark.parametrize("guidance", [1.0, 3.0], ids=["no_cfg", "cfg"])
def test_self_attention_frames_are_p1_with_rope_and_output_is_unchanged(sa3, guidance):
    """Self sites: p1 of the fused ``to_qkv`` projection after the RMS norms and partial RoPE (the
    diffusers op), queries cropped to the audio frames, every key (memory tokens included)."""
    from diffusers.models.transformers.transformer_stable_audio3 import _apply_rotary_partial

    den = sa3.denoiser
    name = "transformer_blocks.1.self_attn"
    attn = den.get_submodule(name)
    seen: dict[str, tuple] = {}

    def keep(module, args, kwargs):
        seen.setdefault("in", (args[0].clone(), kwargs["rope"].clone()))

    handle = attn.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        result = sa3.generate(request(guidance=guidance, sites=(name,), capture_steps=(0,), per_head=True))
    finally:
        handle.remove()
    np.testing.assert_array_equal(result.audio, stock(sa3.pipe, guidance))
    hidden, rope = seen["in"]
    item = hidden.shape[0] - 1  # the positive prompt last
    with torch.no_grad():
        q1, _q2, k1, _k2, _v = attn.to_qkv(hidden[item:item + 1]).chunk(5, -1)
        q = _apply_rotary_partial(attn.q_norm(q1.unflatten(-1, (4, 8))), rope)
        k = _apply_rotary_partial(attn.k_norm(k1.unflatten(-1, (4, 8))), rope)
    q, k = q.transpose(1, 2)[0].double().numpy(), k.transpose(1, 2)[0].double().numpy()
    mem, n = sa3.memory_tokens, sa3.queries(0.5)
    want = softmax(q @ k.transpose(0, 2, 1) / np.sqrt(8), axis=-1)[:, mem:mem + n]
    frame = result.frames[(0, name)]
    assert frame.shape == (4, n, n + mem)
    np.testing.assert_allclose(frame, want, atol=2e-3)


def test_lsac_freezing_every_site_at_the_last_step_reproduces_the_run(sa3):
    from engine.convergence.lsac import LSAC, with_lsac

    sites = [s.name for s in sa3.sites()]
    req = request(guidance=3.0, capture=False, steps=4)
    last = LSAC({s: 3 for s in sites})
    np.testing.assert_allclose(sa3.generate(with_lsac(req, last)).audio, sa3.generate(req).audio, atol=1e-5)
    assert last.stats["reused_calls"] == 0 and last.stats["full_calls"] == 4 * len(sites)


@pytest.mark.parametrize("site", ["transformer_blocks.0.self_attn", "transformer_blocks.1.cross_attn"],
                         ids=["self", "cross"])
def test_lsac_caches_the_differential_weights(sa3, site):
    """LSAC on differential attention caches ``p1 − p2`` (rows sum to 0): the freeze step's output
    (made from the cache) is the stock one, and reuse changes the later steps."""
    from engine.convergence.lsac import LSAC, with_lsac

    req = request(guidance=3.0, capture=False, steps=4)
    module = sa3.denoiser.get_submodule(site)
    outputs: dict[str, list[torch.Tensor]] = {"lsac": [], "stock": []}
    state = {"key": "lsac"}
    handle = module.register_forward_hook(lambda _m, _a, out: outputs[state["key"]].append(out.detach().clone()))
    try:
        lsac = LSAC({site: 1}, keep_cache=True)
        sa3.generate(with_lsac(req, lsac))
        state["key"] = "stock"
        sa3.generate(req)
    finally:
        handle.remove()
    assert lsac.stats["reused_calls"] == 2 and len(outputs["lsac"]) == len(outputs["stock"]) == 4
    weights = lsac.cached_probs(site)
    assert torch.allclose(weights.float().sum(-1), torch.zeros(()), atol=1e-5)  # p1 − p2
    assert weights.float().abs().max() > 1e-3
    assert torch.equal(outputs["lsac"][0], outputs["stock"][0])
    torch.testing.assert_close(outputs["lsac"][1], outputs["stock"][1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(outputs["lsac"][3], outputs["stock"][3], atol=1e-6)
