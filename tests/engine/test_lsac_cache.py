"""LSAC on real tiny pipelines: exactness, the cached output rebuilt by hand, budget, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.backends.embedded import EmbeddedBackend
from engine.convergence.diagnostics import build_report
from engine.convergence.lsac import (
    LSAC,
    estimate_cache_bytes,
    plan_from_preset,
    preset_named,
    with_lsac,
)
from engine.models.embedded.pipeline import EmbeddedPipeline
from engine.probe.attention_core import AttentionCall, attention_probs
from engine.types import EngineError, GenerationRequest


@pytest.fixture(scope="module")
def emb():
    return EmbeddedBackend(EmbeddedPipeline.build(seed=2))


def _req(backend, **kw) -> GenerationRequest:
    dur = {"audioldm2": 0.32, "stable_audio": 0.1, "embedded": 1.0}[backend.family]
    base = {"prompt": "A hammer hitting a wooden surface", "steps": 4, "duration": dur,
            "guidance": 3.0, "seed": 11, "capture": False}
    return GenerationRequest(**{**base, **kw})


def _all_sites(backend) -> list[str]:
    return [s.name for s in backend.sites()]


@pytest.mark.parametrize("name", ["ldm", "sao"])
def test_freeze_at_last_step_reproduces_the_full_run(name, request):
    backend = request.getfixturevalue(name)
    req = _req(backend)
    full = backend.generate(req)
    lsac = LSAC({s: req.steps - 1 for s in _all_sites(backend)})
    cached = backend.generate(with_lsac(req, lsac))
    assert np.abs(cached.audio - full.audio).max() <= 1e-6
    if full.mel is not None:
        assert np.abs(cached.mel - full.mel).max() <= 1e-6
    assert lsac.stats["reused_calls"] == 0 and lsac.stats["full_calls"] == 4 * len(_all_sites(backend))
    # an early freeze really changes the computation: every site reuses its cache twice
    early = LSAC({s: 1 for s in _all_sites(backend)})
    out = backend.generate(with_lsac(req, early))
    assert early.stats["reused_calls"] == 2 * len(_all_sites(backend))
    assert not np.array_equal(out.audio, full.audio) or not np.array_equal(out.mel, full.mel)
    assert cached.recipe["interventions"][0]["type"] == "lsac"


class _CallRecorder:
    """Forward hooks that keep the inputs and output of every call of one attention module."""

    def __init__(self, module):
        self.calls = []
        self.handle = module.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        hs = args[0] if args else kwargs["hidden_states"]
        self.calls.append((hs.detach().clone(), kwargs.get("encoder_hidden_states"), output.detach().clone()))


def _hand_output(attn, hidden, context, probs):
    """``probs @ V`` then ``to_out``, written independently of the LSAC code (GQA by repeat)."""
    x = hidden
    if x.ndim == 4:
        b, c, h, w = x.shape
        x = x.view(b, c, h * w).transpose(1, 2)
    if attn.group_norm is not None:
        x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
    ctx = x if context is None else context
    v = attn.to_v(ctx)
    d = attn.to_q.out_features // attn.heads
    kv = v.shape[-1] // d
    v = v.view(v.shape[0], -1, kv, d).permute(0, 2, 1, 3)
    v = torch.repeat_interleave(v, attn.heads // kv, dim=1)
    out = torch.einsum("bhqk,bhkd->bqhd", probs.double(), v.double()).reshape(x.shape[0], -1, attn.heads * d)
    out = attn.to_out[0](out.float())
    if hidden.ndim == 4:
        out = out.transpose(-1, -2).reshape(hidden.shape)
    return out


@pytest.mark.parametrize("name,kind", [("ldm", "self"), ("ldm", "cross"), ("sao", "self"),
                                       ("sao", "cross"), ("emb", "self"), ("emb", "cross")])
def test_cached_output_is_cached_probs_times_v(name, kind, request):
    backend = request.getfixturevalue(name)
    site = next(s for s in backend.sites() if s.kind == kind)
    module = backend.denoiser.get_submodule(site.name)
    lsac = LSAC({site.name: 1}, keep_cache=True)
    rec, plain = _CallRecorder(module), None
    try:
        backend.generate(with_lsac(_req(backend), lsac))
        rec.handle.remove()
        plain = _CallRecorder(module)
        backend.generate(_req(backend))  # the same request without LSAC: stock processor throughout
    finally:
        rec.handle.remove()
        if plain is not None:
            plain.handle.remove()
    assert len(rec.calls) == 4 and lsac.stats["reused_calls"] == 2
    probs = lsac.cached_probs(site.name)
    batch = rec.calls[0][0].shape[0]
    assert probs.shape[:2] == (batch, site.heads)
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
    with torch.no_grad():
        for hidden, context, output in rec.calls[2:]:
            expected = _hand_output(module, hidden, context, probs)
            assert torch.allclose(output, expected, atol=1e-5, rtol=1e-4)
        # up to the freeze step both runs saw the same inputs, and the stock processor's output at
        # that step equals cache @ V: the cache holds the true softmax(QKᵀ) of that call (RoPE, GQA
        # and masks included), and the freeze step's own output (made from it) is the stock one
        hidden, context, output = rec.calls[1]
        assert torch.equal(hidden, plain.calls[1][0])
        stock = plain.calls[1][2]
        assert torch.allclose(stock, _hand_output(module, hidden, context, probs), atol=1e-5, rtol=1e-4)
        assert torch.allclose(output, stock, atol=1e-5, rtol=1e-4)
        # step 3 reuses step 1's probabilities although its queries and keys differ
        assert not torch.equal(rec.calls[3][0], rec.calls[1][0])


def test_cache_memory_stays_within_its_budget(ldm):
    req = _req(ldm)
    plan = {s: 1 for s in _all_sites(ldm)}
    sizes = estimate_cache_bytes(ldm, req, plan)
    full = LSAC(plan, keep_cache=True)
    ldm.generate(with_lsac(req, full))
    actual = {s: t.numel() * t.element_size() for s, t in full.cache.items()}
    assert actual == sizes  # the estimate is exact for AudioLDM2
    budget_bytes = sum(sizes.values()) // 3
    small = LSAC(plan, budget_mb=budget_bytes / 2**20, keep_cache=True)
    ldm.generate(with_lsac(req, small))
    assert 0 < len(small.active) < len(plan) and small.warnings and "budget" in small.warnings[0]
    assert small.peak_bytes <= budget_bytes
    assert sum(t.numel() * t.element_size() for t in small.cache.values()) <= budget_bytes
    assert small.stats["reused_calls"] == 2 * len(small.active)


def test_presets_follow_the_report():
    ent = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.1, 1.2, 1.4], [1.0, 1.2, 1.5, 2.0],
                    [1.01, 1.3, 1.8, 2.6], [1.01, 1.4, 2.1, 3.2], [1.01, 1.5, 2.4, 3.8],
                    [1.01, 1.6, 2.7, 4.4], [1.01, 1.7, 3.0, 5.0]])
    report = build_report(ent, ["a", "b", "c", "d"], ["self"] * 4, group="all")
    assert report.stable_sites == ["a", "b"] and report.moderate_sites() == ["c"]
    assert plan_from_preset(report, "safe", 8) == {"a": 4, "b": 4}
    assert plan_from_preset(report, "balanced", 8) == {"a": 2, "b": 2, "c": 6}
    assert plan_from_preset(report, "aggressive", 8) == {"a": 2, "b": 2, "c": 4, "d": 6}
    assert plan_from_preset(report, "Balanced", 8, kinds=("cross",)) == {}
    mixed = build_report(ent, ["a", "b", "c", "d"], ["self", "cross", "self", "cross"], group="all")
    assert plan_from_preset(mixed, "safe", 8) == {"a": 4}  # presets cache self-attention by default
    assert plan_from_preset(mixed, "safe", 8, kinds=("self", "cross")) == {"a": 4, "b": 4}
    with pytest.raises(EngineError, match="unknown LSAC preset"):
        preset_named("turbo")


def test_bad_inputs_give_clear_errors(ldm):
    req = _req(ldm)
    site = _all_sites(ldm)[0]
    with pytest.raises(EngineError, match="unknown LSAC site"):
        ldm.generate(with_lsac(req, LSAC({"down_blocks.9.attn1": 1})))
    with pytest.raises(EngineError, match="outside 0..3"):
        ldm.generate(with_lsac(req, LSAC({site: 4})))
    with pytest.raises(EngineError, match="whole number"):
        LSAC({site: -1})
    with pytest.raises(EngineError, match="budget"):
        LSAC({site: 1}, budget_mb=0)


def test_bfloat16_cache_is_half_the_size_and_close_to_the_fp32_cache(emb):
    req = _req(emb)
    plan = {s: 1 for s in _all_sites(emb)}
    ref = LSAC(plan, keep_cache=True)
    out32 = emb.generate(with_lsac(req, ref))
    half = LSAC(plan, keep_cache=True, cache_dtype="bf16")
    out16 = emb.generate(with_lsac(req, half))
    sizes = estimate_cache_bytes(emb, req, plan, itemsize=2)
    assert {s: t.numel() * t.element_size() for s, t in half.cache.items()} == sizes
    assert all(t.dtype == torch.bfloat16 for t in half.cache.values())
    assert half.peak_bytes * 2 == ref.peak_bytes and half.describe()["cache_dtype"] == "bfloat16"
    # the same probabilities rounded to bf16 (8 significant bits): the mel moves a little, not much
    for s in plan:
        assert torch.allclose(half.cache[s].float(), ref.cache[s], atol=4e-3 * float(ref.cache[s].max()))
    diff = np.abs(out16.mel - out32.mel)
    assert 0 < diff.max() < 0.1
    with pytest.raises(EngineError, match="cache dtype"):
        LSAC(plan, cache_dtype="int8")


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_batched_and_transposed_probabilities_equal_the_per_item_ones(ldm, kind):
    site = next(s for s in ldm.sites() if s.kind == kind)
    module = ldm.denoiser.get_submodule(site.name)
    rec = _CallRecorder(module)
    try:
        ldm.generate(_req(ldm, steps=1))
    finally:
        rec.handle.remove()
    hidden, context, _ = rec.calls[0]
    keys = (hidden if context is None else context).shape[1]
    mask = torch.zeros(hidden.shape[0], 1, keys)
    mask[0, 0, keys // 2:] = -10000.0  # item 0 may not look at the second half of the keys
    with torch.no_grad():
        for m in (None, mask):
            each = torch.cat([attention_probs(AttentionCall(module, hidden, context, m, items=slice(i, i + 1)))
                              for i in range(hidden.shape[0])])
            batched = attention_probs(AttentionCall(module, hidden, context, m))
            transposed = attention_probs(AttentionCall(module, hidden, context, m), transposed=True)
            assert torch.allclose(batched, each, atol=1e-6)
            assert transposed.is_contiguous() and torch.allclose(transposed, each.transpose(-1, -2), atol=1e-6)
    assert float(each[0, ..., keys // 2:].max()) < 1e-6 and float(each[1, ..., keys // 2:].max()) > 1e-3


def test_presets_from_a_freeze_sweep_take_each_sites_earliest_tolerable_step(tmp_path):
    from engine.convergence.freeze import METRICS, FreezeSweep, load_sweep, write_sweep
    from engine.convergence.lsac import SWEEP_TOLERANCE, plan_from_sweep

    # mel distance of freezing each site at steps 1, 2, 4, 6 of 8 (hand-made)
    dist = np.array([[0.001, 0.0005, 0.0002, 0.0001],   # a (self): tolerable from step 1
                     [0.02, 0.008, 0.004, 0.001],       # b (self): from 4 (balanced), 6 (safe)
                     [0.03, 0.02, 0.015, 0.012],        # c (self): never within 0.01
                     [0.0001, 0.0001, 0.0001, 0.0001]])  # d (cross): excluded by default
    sweep = FreezeSweep(sites=["a", "b", "c", "d"], kinds=["self", "self", "self", "cross"],
                        freeze_steps=[1, 2, 4, 6], steps=8, metrics={m: dist for m in METRICS})
    assert SWEEP_TOLERANCE["safe"] < SWEEP_TOLERANCE["balanced"] < SWEEP_TOLERANCE["aggressive"]
    assert plan_from_sweep(sweep, "safe", 8) == {"a": 1, "b": 6}
    assert plan_from_sweep(sweep, "balanced", 8) == {"a": 1, "b": 4}
    assert plan_from_sweep(sweep, "aggressive", 8) == {"a": 1, "b": 2}
    assert plan_from_sweep(sweep, "balanced", 8, kinds=("self", "cross")) == {"a": 1, "b": 4, "d": 1}
    # rescaled to another step count as fractions of the sweep's: step 4 of 8 -> 8 of 16
    assert plan_from_sweep(sweep, "balanced", 16) == {"a": 2, "b": 8}
    lsac = LSAC.from_preset(None, "balanced", 8, sweep=sweep)
    assert lsac.plan == {"a": 1, "b": 4} and lsac.name == "balanced (sweep)"
    write_sweep(sweep, tmp_path)
    again = load_sweep(tmp_path / "freeze_sweep.npz")
    assert again.sites == sweep.sites and np.array_equal(again.metrics["mel_distance"], dist)
    with pytest.raises(EngineError, match="freeze sweep"):
        load_sweep(tmp_path / "missing.npz")
