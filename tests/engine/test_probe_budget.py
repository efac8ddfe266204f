"""Memory budget of capture: the estimate, reduction with warnings, and streaming to disk."""

from __future__ import annotations

import numpy as np
import pytest

from engine.probe.budget import estimate_capture_bytes, plan_capture
from engine.probe.frame_store import load_frame_index, load_frames
from engine.types import EngineError, GenerationRequest

MB = 2**20


def request(**kw) -> GenerationRequest:
    base = {"prompt": "warm bass and soft piano", "steps": 4, "duration": 0.32, "guidance": 3.0}
    return GenerationRequest(**{**base, **kw})


@pytest.mark.parametrize("per_head", [False, True])
def test_estimate_equals_recorded_bytes(ldm, per_head):
    req = request(per_head=per_head)
    result = ldm.generate(req)
    recorded = sum(a.nbytes for a in result.frames.values())
    assert estimate_capture_bytes(ldm, req) == recorded > 0
    # by hand: 8 cross sites, 16 queries (8x2 lattice), 4 steps, fp16; keys 8 (loa) / 7 (t5)
    n_t5 = len(ldm.tokens(req.prompt)["t5"])
    heads = 4 if per_head else 1
    assert recorded == 4 * heads * 16 * (4 * 8 + 4 * n_t5) * 2


def test_reduction_head_mean_then_steps_then_sites(ldm):
    per_step_mean = estimate_capture_bytes(ldm, request(steps=1))
    # room for the head mean of 2 steps only: per-head -> head mean, 4 -> 2 steps
    req = request(per_head=True, memory_budget_mb=2.5 * per_step_mean / MB)
    result = ldm.generate(req)
    steps = sorted({s for s, _ in result.frames})
    assert steps == [0, 3]  # evenly spaced over the run, last step kept
    assert all(a.shape[0] == 1 for a in result.frames.values())
    assert any("head mean" in w for w in result.warnings)
    assert any("2 of 4 steps" in w for w in result.warnings)
    assert sum(a.nbytes for a in result.frames.values()) <= req.memory_budget_mb * MB
    # room for less than one step: fewer sites, one step
    req = request(memory_budget_mb=0.5 * per_step_mean / MB)
    plan = plan_capture(ldm, req)
    assert len(plan.steps) == 1 and 0 < len(plan.sites) < 8
    assert any(f"{len(plan.sites)} of 8 sites" in w for w in plan.warnings)
    result = ldm.generate(req)
    assert len(result.frames) == len(plan.sites)
    assert sum(a.nbytes for a in result.frames.values()) <= req.memory_budget_mb * MB
    with pytest.raises(EngineError, match="raise memory_budget_mb or set stream_dir"):
        plan_capture(ldm, request(memory_budget_mb=20 / MB))


def test_streaming_keeps_everything_on_disk(ldm, tmp_path):
    full = estimate_capture_bytes(ldm, request())
    req = request(memory_budget_mb=0.3 * full / MB, stream_dir=str(tmp_path / "frames"))
    result = ldm.generate(req)
    assert result.frames_dir == str(tmp_path / "frames")
    on_disk = load_frames(result.frames_dir)
    assert len(on_disk) == 8 * 4  # every site, every step, no reduction
    assert 0 < len(result.frames) < len(on_disk)
    assert sum(a.nbytes for a in result.frames.values()) <= req.memory_budget_mb * MB
    for key, array in result.frames.items():
        np.testing.assert_array_equal(on_disk[key], array)
    index = load_frame_index(result.frames_dir)
    assert {tuple(e["lattice"]) for e in index} == {(8, 2)}
    assert any("streamed" in w for w in result.warnings)
    # streamed frames are the same numbers an unconstrained run keeps in memory
    reference = ldm.generate(request())
    for key, array in reference.frames.items():
        np.testing.assert_array_equal(on_disk[key], array)


def test_bad_requests_give_clear_errors(ldm):
    with pytest.raises(EngineError, match="unknown site"):
        ldm.generate(request(sites=["no.such.site"]))
    with pytest.raises(EngineError, match="capture step 9"):
        ldm.generate(request(capture_steps=[0, 9]))
    with pytest.raises(EngineError, match="duration"):
        ldm.generate(request(duration=0.0))
    with pytest.raises(EngineError, match="nan_policy"):
        ldm.generate(request(nan_policy="ignore"))
