"""Zeroed and forced-uniform cross-attention on real tiny pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.interventions.ablation import Ablation
from engine.interventions.layers import cross_sites
from engine.probe.attention_core import AttentionCall, attention_probs
from engine.types import EngineError, GenerationRequest


@pytest.fixture(scope="module", params=["embedded-untrained", "tiny:audioldm2"])
def backend(request):
    if request.param == "embedded-untrained":
        from engine.backends.embedded import EmbeddedBackend
        from engine.models.embedded.pipeline import EmbeddedPipeline

        return EmbeddedBackend(EmbeddedPipeline.build(seed=3))
    from engine.backends.registry import load_backend

    return load_backend(request.param)


def _run(backend, interventions=(), negative=""):
    # a negative prompt longer than the prompt pads the cond item's keys: masked keys exist
    return backend.generate(GenerationRequest(
        prompt="drums", negative_prompt=negative, steps=2, guidance=3.0, duration=1.0, seed=1,
        capture=False, interventions=tuple(interventions)))


def _signal(r):
    return r.mel if r.mel is not None else r.audio


def _hook_site(backend, site, store):
    def hook(mod, args, kwargs, out):
        store.append((kwargs.get("encoder_hidden_states"), kwargs.get("attention_mask"), args[0] if args else
                      kwargs["hidden_states"], out))
    return backend.denoiser.get_submodule(site).register_forward_hook(hook, with_kwargs=True)


def test_zeroed_cross_attention_outputs_zero_and_changes_the_audio(backend):
    plain = _signal(_run(backend))
    site = cross_sites(backend)[0]
    seen = []
    handle = _hook_site(backend, site, seen)
    try:
        zeroed = _signal(_run(backend, [Ablation([site], "zero")]))
    finally:
        handle.remove()
    assert seen and all(float(out.abs().max()) == 0.0 for *_, out in seen)
    assert np.max(np.abs(zeroed - plain)) > 1e-5
    every = _signal(_run(backend, [Ablation(cross_sites(backend), "zero")]))
    assert np.max(np.abs(every - zeroed)) > 1e-6


def test_forced_uniform_gives_the_mean_of_unmasked_values(backend):
    site = [s for s in backend.sites() if s.kind == "cross" and s.context != "loa"][0].name
    attn = backend.denoiser.get_submodule(site)
    seen = []
    handle = _hook_site(backend, site, seen)
    try:
        _run(backend, [Ablation([site], "uniform")], negative="bass and piano with drums and guitar")
    finally:
        handle.remove()
    ctx, mask, hidden, out = seen[0]
    # independent reference: uniform weights over allowed keys, then V and the output projection
    with torch.no_grad():
        value = attn.to_v(ctx)  # (B, K, C)
        if mask is not None:
            allowed = (mask.reshape(mask.shape[0], -1) > -1.0).float()  # additive bias 0 = allowed
        else:
            allowed = torch.ones(value.shape[:2])
        assert float(allowed.min()) == 0.0 or backend.family == "audioldm2"
        mean_v = (value * allowed[..., None]).sum(1) / allowed.sum(1, keepdim=True)
        want = attn.to_out[0](mean_v)[:, None, :].expand_as(out)
        np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
        weights = attention_probs(AttentionCall(attn, hidden, ctx, mask), uniform=True)
        rows = weights.reshape(-1, weights.shape[-1])
        expect = allowed / allowed.sum(1, keepdim=True)
        np.testing.assert_allclose(weights[:, 0, 0].numpy(), expect.numpy(), atol=1e-6)
        assert torch.allclose(rows.sum(-1), torch.ones(rows.shape[0]))
        # the stock weights are not uniform
        stock = attention_probs(AttentionCall(attn, hidden, ctx, mask))
        assert float((stock - weights).abs().max()) > 1e-4


def test_bad_ablation_inputs(backend):
    with pytest.raises(EngineError, match="unknown ablation"):
        Ablation(cross_sites(backend), "half")
    with pytest.raises(EngineError, match="no layers"):
        Ablation([], "zero")
