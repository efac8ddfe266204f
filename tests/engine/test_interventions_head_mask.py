"""The request's head mask ablates heads during generation (tiny AudioLDM2, the embedded model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.backends.registry import load_backend
from engine.interventions.layers import cross_sites
from engine.interventions.patching import KVRecorder
from engine.types import EngineError, GenerationRequest


@pytest.fixture(scope="module", params=["tiny:audioldm2", "embedded"])
def backend(request):
    return load_backend(request.param)


def _request(backend, head_mask=None, **kw) -> GenerationRequest:
    base = {"prompt": "warm bass and drums", "negative_prompt": "bass and piano with drums and guitar",
            "steps": 3, "guidance": 3.0, "duration": 1.0, "seed": 5, "capture": False,
            "head_mask": head_mask}
    return GenerationRequest(**{**base, **kw})


def _flags(backend, site: str, off: set[int]) -> tuple[bool, ...]:
    heads = next(s.heads for s in backend.sites() if s.name == site)
    return tuple(h not in off for h in range(heads))


def _changed(a: np.ndarray, b: np.ndarray) -> bool:
    """More than 0.1 % of the signal's scale apart (the tiny AudioLDM2's audio is ~1e-8)."""
    return float(np.max(np.abs(a - b))) > 1e-3 * float(np.max(np.abs(b)))


def test_masking_heads_changes_the_output_and_an_all_on_mask_does_not(backend):
    plain = backend.generate(_request(backend))
    sites = cross_sites(backend)
    masked = backend.generate(_request(backend, {s: _flags(backend, s, {0}) for s in sites}))
    all_on = backend.generate(_request(backend, {s: _flags(backend, s, set()) for s in sites}))
    assert _changed(masked.audio, plain.audio)
    if plain.mel is not None:
        assert _changed(masked.mel, plain.mel)
        assert np.array_equal(all_on.mel, plain.mel)
    assert np.array_equal(all_on.audio, plain.audio)
    assert masked.recipe["interventions"][0] == {"type": "head_mask", "ablated": {s: [0] for s in sites}}
    # one site, another head: a different change
    one = backend.generate(_request(backend, {sites[-1]: _flags(backend, sites[-1], {1})}))
    assert _changed(one.audio, masked.audio) and _changed(one.audio, plain.audio)


def _hand_output(attn, hidden, context, mask, off: int | None) -> torch.Tensor:
    """softmax(q kᵀ/√d + mask) v per head, head ``off`` zeroed, then ``to_out`` (plain torch)."""
    q, k, v = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
    d = q.shape[-1] // attn.heads
    outs = []
    for h in range(attn.heads):
        sl = slice(h * d, (h + 1) * d)
        scores = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d)
        if mask is not None:  # the UNet's additive (B, 1, K) bias
            scores = scores + mask
        o = torch.softmax(scores, dim=-1) @ v[..., sl]
        outs.append(torch.zeros_like(o) if h == off else o)
    return attn.to_out[0](torch.cat(outs, dim=-1))


def test_a_masked_head_equals_the_hand_computation_with_its_slice_zeroed(backend):
    site = cross_sites(backend)[0]
    attn = backend.denoiser.get_submodule(site)
    # the hand computation covers what this module does: no norms, residual or rescale
    assert attn.group_norm is None and attn.spatial_norm is None and attn.norm_q is None
    assert not attn.norm_cross and not attn.residual_connection and attn.rescale_output_factor == 1.0
    calls = []

    def hook(module, args, kwargs, out):
        hidden = args[0] if args else kwargs["hidden_states"]
        calls.append((hidden, kwargs.get("encoder_hidden_states"), kwargs.get("attention_mask"), out))

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    try:
        backend.generate(_request(backend, {site: _flags(backend, site, {1})}))
    finally:
        handle.remove()
    assert len(calls) == 3
    with torch.no_grad():
        for hidden, context, mask, out in calls:
            assert hidden.ndim == 3 and context is not None
            expected = _hand_output(attn, hidden, context, mask, off=1)
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
            unmasked = _hand_output(attn, hidden, context, mask, off=None)
            assert float((unmasked - out).abs().max()) > 1e-4  # head 1 did contribute


def test_bad_head_masks_are_one_line_errors(backend):
    site = cross_sites(backend)[0]
    heads = len(_flags(backend, site, set()))
    with pytest.raises(EngineError, match="unknown site") as unknown:
        backend.generate(_request(backend, {"no.such.attn2": (True, False)}))
    with pytest.raises(EngineError, match=f"has {heads + 1} flags, the site has {heads} heads") as count:
        backend.generate(_request(backend, {site: (False,) + (True,) * heads}))
    assert "\n" not in str(unknown.value) and "\n" not in str(count.value)
    # nothing stays attached after a refused run
    assert all(type(p).__name__ != "UNetSiteProcessor" for p in backend.denoiser.attn_processors.values())


def test_a_head_mask_composes_with_a_kv_intervention_on_the_same_site(backend):
    site = cross_sites(backend)[0]
    mask = {site: _flags(backend, site, {0})}
    masked = backend.generate(_request(backend, mask))
    recorder = KVRecorder([site])
    both = backend.generate(_request(backend, mask, interventions=(recorder,)))
    assert np.array_equal(both.audio, masked.audio)  # the mask still acts under the K/V recorder
    assert recorder.cache.stored_entries() > 0  # and the recorder saw the keys and values
    assert [iv["type"] for iv in both.recipe["interventions"]] == ["head_mask", "kv_record"]
