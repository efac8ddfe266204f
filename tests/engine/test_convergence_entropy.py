"""Attention entropy, its change and the stable / fast split, against hand and scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy

from engine.convergence.diagnostics import (
    ConvergenceReport,
    build_report,
    classify,
    diagnose,
    late_change_of,
    report_from_frames,
)
from engine.convergence.entropy import mean_entropy, mean_entropy_torch, row_entropy
from engine.types import EngineError, GenerationRequest


def test_uniform_rows_have_log_k_and_one_hot_rows_zero():
    k = 7
    uniform = np.full((3, 5, k), 1.0 / k)
    assert np.allclose(row_entropy(uniform), np.log(k))
    one_hot = np.zeros((2, 4, k))
    one_hot[..., 3] = 1.0
    assert mean_entropy(one_hot) == 0.0
    assert mean_entropy_torch(torch.tensor(one_hot)) == 0.0
    assert mean_entropy_torch(torch.tensor(uniform)) == pytest.approx(np.log(k), abs=1e-12)


def test_entropy_matches_scipy_with_and_without_pads():
    rng = np.random.default_rng(0)
    p = rng.random((4, 6, 9))
    p /= p.sum(-1, keepdims=True)
    ref = scipy_entropy(p, axis=-1)
    assert np.allclose(row_entropy(p), ref)
    assert mean_entropy(p) == pytest.approx(float(ref.mean()))
    assert mean_entropy_torch(torch.tensor(p, dtype=torch.float32)) == pytest.approx(float(ref.mean()), rel=1e-5)
    pads = np.zeros(9, dtype=bool)
    pads[6:] = True
    ref_pads = scipy_entropy(p[..., :6], axis=-1)  # scipy renormalises the real keys itself
    assert np.allclose(row_entropy(p, pads), ref_pads)
    assert mean_entropy_torch(torch.tensor(p), torch.tensor(pads)) == pytest.approx(float(ref_pads.mean()))
    with pytest.raises(EngineError, match="pad mask"):
        row_entropy(p, np.zeros(4, dtype=bool))


def test_late_change_and_median_split_by_hand():
    # 4 steps x 4 sites; late half = last 2 transitions (ceil(3 * 0.5))
    ent = np.array([[1.0, 2.0, 3.0, 0.5],
                    [1.1, 2.0, 2.0, 0.5],
                    [1.1, 2.5, 1.0, 0.6],
                    [1.1, 3.5, 0.0, 0.6]])
    lc = late_change_of(ent, 0.5)
    assert np.allclose(lc, [0.0, 0.75, 1.0, 0.05])
    stable, cuts = classify(lc, ["self"] * 4, group="all")
    assert cuts["all"] == pytest.approx(np.median(lc))
    assert stable.tolist() == [True, False, False, True]
    # grouped by kind: medians are taken within each kind
    stable, cuts = classify(lc, ["self", "self", "cross", "cross"])
    assert cuts == {"cross": pytest.approx(0.525), "self": pytest.approx(0.375)}
    assert stable.tolist() == [True, False, False, True]
    report = build_report(ent, list("abcd"), ["self"] * 4, group="all")
    assert report.stable_sites == ["a", "d"] and report.fast_sites == ["b", "c"]
    assert report.moderate_sites(0.75) == ["b"]  # fast and <= the 75th percentile (0.8125)
    again = ConvergenceReport.from_dict(report.to_dict())
    assert again.stable_sites == report.stable_sites and np.array_equal(again.entropy, ent)
    with pytest.raises(EngineError, match="2 denoising steps"):
        late_change_of(ent[:1])
    with pytest.raises(EngineError, match="grouping"):
        classify(lc, ["self"] * 4, group="layer")


def test_streamed_entropy_equals_entropy_of_captured_frames(ldm):
    sites = [s.name for s in ldm.sites()]
    req = GenerationRequest(prompt="A hammer hitting wood", steps=3, duration=0.32, seed=5,
                            sites=sites, per_head=True)
    report, result = diagnose(ldm, req)
    assert report.sites == sites and report.entropy.shape == (3, len(sites))
    assert set(report.kinds) == {"self", "cross"}
    from_frames = report_from_frames(result)
    assert from_frames.sites == sites and from_frames.source == "frames"
    # capture (fp16 per-head frames) and the streaming probe are computed independently
    assert np.allclose(report.entropy, from_frames.entropy, atol=5e-3)
    # the probe leaves the model output alone
    plain = ldm.generate(GenerationRequest(prompt="A hammer hitting wood", steps=3, duration=0.32,
                                           seed=5, capture=False))
    assert np.array_equal(plain.mel, result.mel)
    with pytest.raises(EngineError, match="unknown site"):
        diagnose(ldm, GenerationRequest(prompt="x", steps=2, duration=0.32), sites=["nope.attn1"])
    with pytest.raises(EngineError, match="2 denoising steps"):
        diagnose(ldm, GenerationRequest(prompt="x", steps=1, duration=0.32))
