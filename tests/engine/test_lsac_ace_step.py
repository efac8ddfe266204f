"""LSAC and convergence on ACE-Step (tiny, offline): the cached attention is the stock
processor's own softmax, a freeze at the last step reproduces the full run, an early one reuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.backends.registry import load_backend
from engine.convergence.diagnostics import diagnose
from engine.convergence.lsac import LSAC, with_lsac
from engine.types import GenerationRequest


@pytest.fixture(scope="module")
def ace():
    return load_backend("tiny:ace_step")


def _req(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "funky bass and drums", "steps": 4, "guidance": 3.0, "duration": 1.0,
                                "seed": 3, "capture": False, **kw})


def test_freeze_at_the_last_step_reproduces_the_run_and_an_early_freeze_reuses(ace):
    sites = [s.name for s in ace.sites()]
    assert any(s.endswith("self_attn") for s in sites) and any(s.endswith("cross_attn") for s in sites)
    full = ace.generate(_req())
    last = LSAC({s: 3 for s in sites})
    cached = ace.generate(with_lsac(_req(), last))
    assert np.abs(cached.audio - full.audio).max() <= 1e-5
    assert last.stats["reused_calls"] == 0 and last.stats["full_calls"] == 4 * len(sites)
    early = LSAC({s: 1 for s in sites})
    out = ace.generate(with_lsac(_req(), early))
    assert early.stats["reused_calls"] == 2 * len(sites) and early.stats["fallback_calls"] == 0
    assert not np.array_equal(out.audio, full.audio)


@pytest.mark.parametrize("kind", ["self_attn", "cross_attn"])
def test_the_freeze_step_output_is_the_stock_output_and_reuse_changes_later_steps(ace, kind):
    site = next(s.name for s in ace.sites() if s.name.endswith(kind))
    module = ace.denoiser.get_submodule(site)
    outputs: dict[str, list[torch.Tensor]] = {"lsac": [], "stock": []}
    key = "lsac"

    def keep(_module, _args, _kwargs, output):
        outputs[key].append((output[0] if isinstance(output, tuple) else output).detach().clone())

    handle = module.register_forward_hook(keep, with_kwargs=True)
    try:
        lsac = LSAC({site: 1}, keep_cache=True)
        ace.generate(with_lsac(_req(), lsac))
        key = "stock"
        ace.generate(_req())
    finally:
        handle.remove()
    assert len(outputs["lsac"]) == len(outputs["stock"]) == 4
    probs = lsac.cached_probs(site)
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)  # a softmax over the keys
    # steps 0-1 saw the same inputs: the freeze step's output (made from the cache) is the stock one
    assert torch.allclose(outputs["lsac"][1], outputs["stock"][1], atol=1e-5, rtol=1e-4)
    assert torch.equal(outputs["lsac"][0], outputs["stock"][0])
    assert not torch.allclose(outputs["lsac"][3], outputs["stock"][3], atol=1e-6)  # reuse changes step 3


def test_convergence_diagnosis_on_ace_step(ace):
    report, _ = diagnose(ace, _req(steps=4))
    assert set(report.sites) == {s.name for s in ace.sites()}
    assert report.entropy.shape == (4, len(report.sites)) and np.isfinite(report.entropy).all()
