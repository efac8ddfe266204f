"""Interventions on Stable Audio 3's differential attention, cross and self (tiny offline pipeline): the
attention core's differential path gives the stock output bit for bit when nothing is changed,
and each opening equals an independent edit of the stock processor's own tensors — a head mask
(the masked heads' channels zeroed at ``to_out``'s input), forced-uniform weights (the branches
cancel: ``to_out`` of zeros) and K/V patching (``to_kv``'s output swapped for the source run's).
Compared on the denoiser's predictions at every step (the tiny pipeline's audio hardly moves)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.backends.registry import load_backend
from engine.backends.tiny import save_tiny
from engine.interventions.ablation import Ablation
from engine.interventions.patching import KVPatch, KVRecorder
from engine.types import GenerationRequest

SITE = "transformer_blocks.1.cross_attn"
TARGET, SOURCE = "funky bass and drums", "quiet piano and flute"


@pytest.fixture(scope="module")
def sa3(tmp_path_factory):
    return load_backend(str(save_tiny("stable_audio_3", tmp_path_factory.mktemp("sa3") / "tiny-sa3")))


def _request(prompt: str = TARGET, **kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": prompt, "steps": 2, "guidance": 3.0, "duration": 0.5, "seed": 3,
                                "capture": False, **kw})


def _predictions(sa3, request: GenerationRequest, hooks=()) -> np.ndarray:
    """The denoiser's outputs of every step of ``request``, under forward (pre-)hooks ``(module,
    kind, fn)`` on the stock processors' modules."""
    outs: list[np.ndarray] = []

    def keep(_module, _args, out):
        out = out[0] if isinstance(out, tuple) else out.sample
        outs.append(out.detach().float().numpy().copy())

    handles = [sa3.denoiser.register_forward_hook(keep)]
    handles += [getattr(m, f"register_forward_{kind}hook")(fn) for m, kind, fn in hooks]
    try:
        sa3.generate(request)
    finally:
        for h in handles:
            h.remove()
    return np.stack(outs)


def _stock(sa3, prompt: str = TARGET, hooks=()) -> np.ndarray:
    return _predictions(sa3, _request(prompt), hooks)


def _with(sa3, prompt: str = TARGET, **kw) -> np.ndarray:
    return _predictions(sa3, _request(prompt, **kw))


def _moved(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("site", [SITE, "transformer_blocks.0.self_attn"], ids=["cross", "self"])
def test_an_identity_opening_gives_the_stock_output_bit_for_bit(sa3, site):
    recorded = KVRecorder([site])  # records K/V through the core's differential path, changes nothing
    np.testing.assert_array_equal(_with(sa3, interventions=(recorded,)), _stock(sa3))
    np.testing.assert_array_equal(sa3.generate(_request(interventions=(KVRecorder([site]),))).audio,
                                  sa3.generate(_request()).audio)
    assert recorded.cache.entries[site]


@pytest.mark.parametrize("site", [SITE, "transformer_blocks.0.self_attn"], ids=["cross", "self"])
def test_a_head_mask_zeroes_those_heads_before_to_out(sa3, site):
    attn = sa3.denoiser.get_submodule(site)
    flags = [True, False, True, False]
    d = attn.dim_heads

    def zero_heads(_module, args):
        x = args[0].clone()
        for h, on in enumerate(flags):
            if not on:
                x[..., h * d:(h + 1) * d] = 0
        return (x,)

    masked = _with(sa3, head_mask={site: flags})
    reference = _stock(sa3, hooks=[(attn.to_out, "pre_", zero_heads)])
    np.testing.assert_allclose(masked, reference, rtol=1e-5, atol=1e-6)
    assert _moved(masked, _stock(sa3)) > 1e-3  # the mask changes the prediction


@pytest.mark.parametrize("site", [SITE, "transformer_blocks.0.self_attn"], ids=["cross", "self"])
def test_forced_uniform_weights_cancel_the_branches(sa3, site):
    attn = sa3.denoiser.get_submodule(site)
    ablated = _with(sa3, interventions=(Ablation([site], "uniform"),))
    reference = _stock(sa3, hooks=[(attn.to_out, "pre_", lambda _m, args: (torch.zeros_like(args[0]),))])
    np.testing.assert_allclose(ablated, reference, rtol=1e-5, atol=1e-6)
    assert _moved(ablated, _stock(sa3)) > 1e-3


def test_kv_patching_swaps_in_the_source_runs_projections(sa3):
    assert len(sa3.tokens(TARGET)["text"]) == len(sa3.tokens(SOURCE)["text"])
    recorder = KVRecorder([SITE])
    sa3.generate(_request(SOURCE, interventions=(recorder,)))
    patched = _with(sa3, interventions=(KVPatch(recorder.cache, [SITE]),))

    attn = sa3.denoiser.get_submodule(SITE)
    source_kv: list[torch.Tensor] = []
    _stock(sa3, SOURCE, hooks=[(attn.to_kv, "", lambda _m, _a, out: source_kv.append(out.clone()))])
    calls = iter(source_kv)
    reference = _stock(sa3, hooks=[(attn.to_kv, "", lambda _m, _a, _out: next(calls))])
    assert next(calls, None) is None  # one to_kv call per step, in the same order
    np.testing.assert_allclose(patched, reference, rtol=1e-5, atol=1e-6)
    assert _moved(patched, _stock(sa3)) > 1e-3


def test_values_alone_skip_the_fused_projections_rows_for_q_and_k(sa3):
    """A self-attention call whose weights come from a cache (LSAC's reused steps) projects only the
    values: the last rows of ``to_qkv``, equal to the value part of the whole projection."""
    from engine.probe.attention_core import DifferentialCall

    attn = sa3.denoiser.get_submodule("transformer_blocks.0.self_attn")
    hidden = torch.randn(2, 12, attn.to_qkv.in_features, generator=torch.Generator().manual_seed(0))
    rope = torch.randn(12, 4)
    calls = []
    handle = attn.to_qkv.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            alone = DifferentialCall(attn, hidden, rope=rope).values()
            assert not calls  # the fused projection was not run
            whole = DifferentialCall(attn, hidden, rope=rope)
            whole.queries()
            assert calls == [1]
            torch.testing.assert_close(alone, whole.values(), atol=1e-6, rtol=1e-5)
            assert calls == [1]  # the values of a call that projected already come from that projection
    finally:
        handle.remove()
