"""Capture reuses the query/key projections of the stock processor: a captured run calls every
site's ``to_q`` and key projection exactly as often as an uncaptured one (AudioLDM2, Stable Audio
Open, Stable Audio 3 on their tiny pipelines), while the frames still match an independent softmax
(tests in test_probe_capture / test_backend_stable_audio_3); behind an intervention's wrapper the
projections are computed as before."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from engine.backends.registry import load_backend
from engine.backends.tiny import save_tiny
from engine.probe.projection_taps import ProjectionTaps, stock_processor
from engine.types import GenerationRequest


@pytest.fixture(scope="module")
def sa3(tmp_path_factory):
    return load_backend(str(save_tiny("stable_audio_3", tmp_path_factory.mktemp("sa3") / "tiny-sa3")))


def _projection_calls(backend, request: GenerationRequest) -> Counter:
    """How often each cross site's query and key projections ran during ``request``."""
    calls: Counter = Counter()
    handles = []
    for site in backend.sites():
        if site.kind != "cross":
            continue
        attn = backend.denoiser.get_submodule(site.name)
        for name in ("to_q", "to_k", "to_kv"):
            module = getattr(attn, name, None)
            if module is not None:
                handles.append(module.register_forward_hook(
                    lambda *_a, key=(site.name, name): calls.update([key])))
    try:
        backend.generate(request)
    finally:
        for h in handles:
            h.remove()
    return calls


@pytest.mark.parametrize("which", ["ldm", "sao", "sa3"])
def test_capture_does_not_project_again(which, request):
    backend = request.getfixturevalue(which)
    base = {"prompt": "bass and drums", "steps": 2, "guidance": 3.0, "seed": 1,
            "duration": {"ldm": 0.32, "sao": 0.1, "sa3": 0.5}[which]}
    plain = _projection_calls(backend, GenerationRequest(**base, capture=False))
    captured = _projection_calls(backend, GenerationRequest(**base, capture=True, per_head=True))
    assert plain and captured == plain


def test_taps_hand_back_only_single_whole_batch_calls():
    lin = torch.nn.Linear(4, 6)
    attn = type("A", (), {"to_q": lin, "to_k": lin})()
    x = torch.randn(2, 3, 4)
    with torch.no_grad(), ProjectionTaps(attn) as taps:
        y = lin(x)
    q, k = taps.projections(slice(1, 2), batch=2)
    assert torch.equal(q, y[1:2]) and torch.equal(k, y[1:2])
    assert taps.projections(None, batch=3) == (None, None)  # another batch: not this call's
    with torch.no_grad(), ProjectionTaps(attn) as twice:
        lin(x), lin(x)
    assert twice.projections(None, batch=2) == (None, None)  # ran twice: which one is unknown
    assert not lin._forward_hooks  # hooks removed


def test_only_diffusers_processors_count_as_stock(ldm):
    from engine.probe.capture import CaptureHandler

    procs = list(ldm.denoiser.attn_processors.values())
    assert procs and all(stock_processor(p) for p in procs)
    assert not stock_processor(CaptureHandler(None))
