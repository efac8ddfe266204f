"""Streaming done right: maps of a streamed run come from every frame on disk, padded keys are
dropped before storage, and the budget's estimate is what is held."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analysis.aggregate import aggregate_run, reduce_views, views_bytes
from engine.analyze import AnalyzeOptions, build_maps
from engine.probe.budget import estimate_capture_bytes, plan_capture
from engine.probe.frame_store import StoredFrames, load_frames
from engine.probe.recorder import human_bytes
from engine.types import GenerationRequest

MB = 2**20


def request(**kw) -> GenerationRequest:
    base = {"prompt": "warm bass and soft piano", "steps": 4, "duration": 0.32, "guidance": 3.0}
    return GenerationRequest(**{**base, **kw})


def options(tmp_path, **kw) -> AnalyzeOptions:
    return AnalyzeOptions(out=str(tmp_path / "out"), prompt="warm bass and soft piano", grid=(32, 16), **kw)


@pytest.mark.parametrize("weighting,aggregator", [("uniform", "mean"), ("sigma-late", "topk")])
def test_streamed_maps_equal_in_memory_maps(ldm, tmp_path, weighting, aggregator):
    full = estimate_capture_bytes(ldm, request())
    streamed = ldm.generate(request(memory_budget_mb=0.1 * full / MB, stream_dir=str(tmp_path / "f")))
    in_memory = ldm.generate(request())
    assert 0 < len(streamed.frames) < len(load_frames(streamed.frames_dir)) == len(in_memory.frames)
    opts = options(tmp_path, weighting=weighting, aggregator=aggregator)
    a, b = build_maps(streamed, ldm.mel_spec(), opts), build_maps(in_memory, ldm.mel_spec(), opts)
    for suffix in ("", "_loa"):
        assert list(a[f"steps{suffix}"]) == [0, 1, 2, 3] and len(a[f"sites{suffix}"]) == 4
        for key in ("aggregate", "pooled", "step_maps", "site_maps"):
            np.testing.assert_allclose(a[key + suffix].astype(np.float64),
                                       b[key + suffix].astype(np.float64), rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(aggregate_run(streamed, "t5", target=(32, 16)).maps,
                                  aggregate_run(in_memory, "t5", target=(32, 16)).maps)
    # the in-memory frames alone (the old behaviour) would have given other maps
    kept_steps = {t for t, _ in streamed.frames}
    assert len(kept_steps) < 4 or len(streamed.frames) < 16
    assert not any(k.startswith("frame/") for k in a) and any(k.startswith("frame/") for k in b)


def test_one_pass_views_equal_separate_aggregations(ldm):
    result = ldm.generate(request())
    t5 = [s.name for s in result.sites if s.kind == "cross" and s.context == "t5"]
    kw = {"target": (32, 16), "method": "topk", "step_policy": "sigma_late"}
    views = reduce_views(result.frames, result.lattices,
                         result.sigmas, sites=t5, pool={"pooling": "max"}, **kw)
    np.testing.assert_array_equal(views.aggregate, aggregate_run(result, "t5", **kw).maps)
    np.testing.assert_array_equal(views.pooled, aggregate_run(result, "t5", pooling="max", **kw).maps)
    for i, site in enumerate(views.sites):
        expect = aggregate_run(result, "t5", sites=[site], **kw).maps.astype(np.float16)
        np.testing.assert_array_equal(views.site_maps[i], expect)
    for i, step in enumerate(views.steps):
        expect = aggregate_run(result, "t5", steps=[step], **kw).maps.astype(np.float16)
        np.testing.assert_array_equal(views.step_maps[i], expect)
    n_keys = views.aggregate.shape[0]
    predicted = views_bytes(len(t5), 4, n_keys, (32, 16), "topk")
    assert abs(predicted - views.peak_bytes) <= 0.05 * views.peak_bytes


def test_stored_frames_read_back_one_at_a_time(ldm, tmp_path):
    result = ldm.generate(request(memory_budget_mb=1e-3, stream_dir=str(tmp_path / "f")))
    store = StoredFrames(result.frames_dir)
    assert len(store) == 32 and len(list(store)) == 32
    for key, array in load_frames(result.frames_dir).items():
        np.testing.assert_array_equal(store[key], array)


def test_sao_pads_dropped_and_estimate_is_what_is_held(sao, tmp_path):
    req = GenerationRequest(prompt="a soft drum loop", steps=3, duration=0.2, guidance=3.0)
    plan = plan_capture(sao, req)
    result = sao.generate(req)
    pads = result.aux["dropped_keys"]["text"]
    assert pads.sum() > 0
    held = sum(a.nbytes for a in result.frames.values()) + sum(
        s.nbytes for s in result.aux["sink_mass"].values())
    assert abs(plan.estimate_bytes - held) <= 0.05 * held
    assert all(a.shape[-1] == int((~pads).sum()) for a in result.frames.values())
    # streamed: the files on disk hold only the real keys too
    streamed = sao.generate(GenerationRequest(**{**vars(req), "memory_budget_mb": 1e-4,
                                                 "stream_dir": str(tmp_path / "s")}))
    assert all(a.shape[-1] == int((~pads).sum()) for a in StoredFrames(streamed.frames_dir).values())
    warn = next(w for w in streamed.warnings if "over the budget" in w)
    assert "0.0 MB" not in warn and "104 B" in warn


def test_human_bytes_never_rounds_to_zero():
    assert human_bytes(20) == "20 B"
    assert human_bytes(0.05 * MB) == "51.2 KB"
    assert human_bytes(3 * MB) == "3.0 MB"
    assert human_bytes(5 * 2**30) == "5.0 GB"


def test_budget_counts_the_maps(ldm, tmp_path):
    from dataclasses import replace

    from engine.analyze import kept_maps
    from engine.probe.budget import maps_bytes

    opts = options(tmp_path)
    req = request(stream_dir=str(tmp_path / "s"), maps=kept_maps(opts))
    frames, maps = estimate_capture_bytes(ldm, req), maps_bytes(ldm, req)
    assert maps > frames > 0  # a 32 x 16 grid per token and step outweighs 16-query frames
    # the frames alone fit this budget, frames and maps together do not: the frames are streamed
    req = replace(req, memory_budget_mb=(maps + frames / 2) / MB)
    plan = plan_capture(ldm, req)
    assert plan.stream and plan.maps_bytes == maps and plan.budget_bytes == int(req.memory_budget_mb * MB) - maps
    assert any("maps take" in w for w in plan.warnings)
    result = ldm.generate(req)
    assert result.frames_dir is not None and len(StoredFrames(result.frames_dir)) == 32
    assert any("maps take" in w for w in result.warnings)
    assert result.recipe["capture"]["maps_bytes"] == maps  # the run's record says what was counted
    peak = 0
    for context in ("t5", "loa"):
        sites = [s.name for s in result.sites if s.kind == "cross" and s.context == context]
        peak += reduce_views(StoredFrames(result.frames_dir), result.lattices, result.sigmas, sites=sites,
                             target=opts.grid).peak_bytes
    assert abs(peak - maps) <= 0.05 * maps  # the maps' estimate is what they hold
    kept = sum(a.nbytes for a in result.frames.values())
    assert kept + peak <= req.memory_budget_mb * MB
    # without the maps on the request the same budget keeps every frame in memory
    assert not plan_capture(ldm, replace(req, maps=None)).stream
