"""The attention core against diffusers' own processors; the CFG layout; the run's step clock."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention

from engine.probe.attention_core import (
    AttentionCall,
    attend,
    attention_probs,
    item_probs,
    merge_heads,
)
from engine.probe.cfg_layout import CfgLayout
from engine.probe.site_processors import site_processor_for
from engine.types import EngineError, GenerationRequest


def _unet_variants() -> dict[str, tuple[Attention, dict]]:
    """Real diffusers ``Attention`` modules with the UNet options the core must follow."""
    torch.manual_seed(0)
    full = Attention(query_dim=32, cross_attention_dim=12, heads=2, dim_head=8, spatial_norm_dim=4,
                     residual_connection=True, rescale_output_factor=2.0,
                     cross_attention_norm="layer_norm", qk_norm="layer_norm").eval()
    mask = torch.zeros(2, 1, 5)
    mask[0, 0, 3:] = -10000.0
    grouped = Attention(query_dim=16, heads=2, dim_head=8, norm_num_groups=4, residual_connection=True,
                        rescale_output_factor=1.5).eval()
    return {
        "spatial-norm, cross norm, qk norms, 4-D, mask": (full, {
            "hidden_states": torch.randn(2, 32, 3, 4), "encoder_hidden_states": torch.randn(2, 5, 12),
            "attention_mask": mask, "temb": torch.randn(2, 4, 3, 4)}),
        "group norm, residual, rescale, 4-D self": (grouped, {"hidden_states": torch.randn(2, 16, 3, 2)}),
    }


def _recorded_calls(backend) -> list[tuple[Attention, dict]]:
    """The first call of every site of a short run, as (module, keyword arguments)."""
    calls: dict[str, tuple[Attention, dict]] = {}
    handles = []
    for site in backend.sites():
        module = backend.denoiser.get_submodule(site.name)

        def hook(mod, args, kwargs, out, name=site.name):
            if name not in calls:
                kw = {k: v for k, v in kwargs.items() if v is not None}
                calls[name] = (mod, {"hidden_states": args[0] if args else kw.pop("hidden_states"), **kw})

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        backend.generate(GenerationRequest(prompt="a hammer", steps=1, duration=0.32 if backend.family == "audioldm2"
                                           else 0.1, guidance=3.0, seed=3, capture=False))
    finally:
        for h in handles:
            h.remove()
    return list(calls.values())


def _check_against_stock(module: Attention, kwargs: dict) -> None:
    with torch.no_grad():
        stock = module.processor(module, **kwargs)
        call = AttentionCall(module, **kwargs)
        assert torch.equal(attend(call), stock)  # bit for bit
        same = attend(call, kv_hook=lambda k, v, m: (k, v, m), head_hook=lambda o: o)
        assert torch.equal(same, stock)
        # the probabilities carry every step of the call (norms, RoPE, GQA, mask): P·V rebuilds it
        rebuilt = call.output(merge_heads(attention_probs(call) @ call.values().float()))
        torch.testing.assert_close(rebuilt, stock, atol=2e-5, rtol=1e-4)
        one = AttentionCall(module, **kwargs, items=slice(1, 2))  # what capture records
        torch.testing.assert_close(item_probs(one), attention_probs(call)[1], atol=1e-6, rtol=1e-5)
        assert torch.equal(item_probs(one), attention_probs(one)[0])


@pytest.mark.parametrize("variant", ["spatial-norm, cross norm, qk norms, 4-D, mask",
                                     "group norm, residual, rescale, 4-D self"])
def test_core_equals_the_stock_processor_on_unet_options(variant):
    module, kwargs = _unet_variants()[variant]
    _check_against_stock(module, kwargs)


@pytest.mark.parametrize("which", ["ldm", "sao"])
def test_core_equals_the_stock_processor_at_every_site(which, request):
    backend = request.getfixturevalue(which)
    calls = _recorded_calls(backend)
    assert len(calls) == len(backend.sites())
    if which == "sao":  # the GQA cross-attention and the RoPE self-attention are among them
        assert any(m.to_k.out_features < m.to_q.out_features for m, _ in calls)
        assert any("rotary_emb" in kw for _, kw in calls)
    for module, kwargs in calls:
        _check_against_stock(module, kwargs)


@pytest.mark.parametrize("order,guided,batch,cond,uncond", [
    ("uncond_cond", True, 2, slice(1, 2), slice(0, 1)),
    ("uncond_cond", True, 4, slice(2, 4), slice(0, 2)),
    ("cond_uncond", True, 4, slice(0, 2), slice(2, 4)),
    ("uncond_cond", False, 1, slice(0, 1), slice(0, 0)),
    ("cond_uncond", False, 3, slice(0, 3), slice(0, 0)),
])
def test_cfg_layout(order, guided, batch, cond, uncond):
    cfg = CfgLayout(order, guided)
    assert cfg.items(batch, "cond") == cond and cfg.cond_slice(batch) == cond
    assert cfg.items(batch, "uncond") == uncond and cfg.items(batch, "both") == slice(0, batch)
    assert cfg.cond_item(batch) == slice(cond.start, cond.start + 1)
    assert cfg.copies == (2 if guided else 1)
    with pytest.raises(EngineError, match="unknown CFG half"):
        cfg.items(batch, "left")


def test_cfg_layout_of_a_request_and_bad_orders(ldm):
    assert CfgLayout.of(ldm, GenerationRequest(guidance=3.0)) == CfgLayout("uncond_cond", True)
    assert CfgLayout.of(ldm, GenerationRequest(guidance=1.0)) == CfgLayout("uncond_cond", False)
    with pytest.raises(EngineError, match="unknown CFG order"):
        CfgLayout("cond_first", True)


class _StepSpy:
    """An intervention that notes the run's clock at every call of one site."""

    def __init__(self, site: str) -> None:
        self.site, self.seen, self.run = site, [], None

    def pre_hooks(self, backend, run):
        self.run = run
        return []

    def wrap(self, site, module, inner):
        return site_processor_for(site, inner, self.handle) if site == self.site else None

    def handle(self, call):
        self.seen.append(self.run.clock.step)
        return call.run_inner()


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_one_step_clock_for_capture_and_interventions(ldm, guidance):
    site = next(s.name for s in ldm.sites() if s.kind == "cross")
    spy = _StepSpy(site)
    result = ldm.generate(GenerationRequest(prompt="a hammer", steps=3, duration=0.32, guidance=guidance,
                                            seed=1, sites=(site,), interventions=(spy,)))
    assert spy.seen == [0, 1, 2]
    assert sorted(step for step, _ in result.frames) == [0, 1, 2]
    assert len(result.sigmas) == 3
