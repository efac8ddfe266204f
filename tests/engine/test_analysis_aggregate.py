"""Aggregation over sites and steps, step/layer weights and the per-token run aggregate."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.analysis.aggregate import (
    aggregate_frames,
    aggregate_maps,
    aggregate_run,
    fit_layer_weights,
    step_weights,
)
from engine.backends.base import RunResult
from engine.types import EngineError, MelSpec, Site


def test_step_weights_sigma_late_formula():
    w = step_weights([2.0, 1.0, 0.0], "sigma_late", alpha=np.log(2.0))
    np.testing.assert_allclose(w, [1 / 7, 2 / 7, 4 / 7])
    big = step_weights([500.0, 100.0, 0.3], "sigma_late", alpha=1.0)  # no underflow to 0/0
    np.testing.assert_allclose(
        big, np.exp(-np.array([500, 100, 0.3]) + 0.3) / np.exp(-np.array([499.7, 99.7, 0])).sum()
    )
    np.testing.assert_allclose(step_weights([3.0, 2.0], "uniform"), [0.5, 0.5])
    with pytest.raises(EngineError):
        step_weights([1.0], "early")


def test_spatial_aggregators_by_hand():
    maps = np.array([1.0, 4.0, 2.0]).reshape(3, 1, 1) * np.ones((3, 2, 2))
    assert aggregate_maps(maps, method="mean")[0, 0] == pytest.approx(7 / 3)
    assert aggregate_maps(maps, method="max")[0, 0] == pytest.approx(4.0)
    assert aggregate_maps(maps, method="topk", k=2)[0, 0] == pytest.approx(3.0)
    assert aggregate_maps(maps, method="topk", k=9)[0, 0] == pytest.approx(7 / 3)  # k clipped to N
    # weights 1, 2, 1 -> scaled to mean 1: 0.75, 1.5, 0.75 -> w*G = 0.75, 6, 1.5
    w = [1.0, 2.0, 1.0]
    assert aggregate_maps(maps, w, "mean")[0, 0] == pytest.approx(2.75)
    assert aggregate_maps(maps, w, "max")[0, 0] == pytest.approx(6.0)
    assert aggregate_maps(maps, w, "topk", k=2)[0, 0] == pytest.approx(3.75)
    # a zero weight removes the map entirely (it does not count as a zero map)
    assert aggregate_maps(maps, [1.0, 0.0, 1.0], "mean")[0, 0] == pytest.approx(1.5)
    with pytest.raises(EngineError):
        aggregate_maps(maps, [0.0, 0.0, 0.0])


def _softmax_frames(rng, steps, sites, lattices, heads=2, k=5):
    frames = {}
    for s in steps:
        for site in sites:
            q = lattices[site][0] * lattices[site][1]
            logits = rng.standard_normal((heads, q, k)) * 2
            p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
            frames[(s, site)] = p.astype(np.float16)
    return frames


def test_aggregate_frames_against_torch_reference():
    rng = np.random.default_rng(4)
    lattices = {"down.attn2": (8, 4), "mid.attn2": (4, 2)}
    frames = _softmax_frames(rng, range(3), list(lattices), lattices)
    sigmas = np.array([10.0, 3.0, 0.5])
    target = (16, 8)
    got, used = aggregate_frames(
        frames,
        lattices,
        sigmas,
        pooling="mean",
        target=target,
        method="mean",
        step_policy="sigma_late",
        alpha=0.5,
    )
    assert len(used) == 6
    num, den = np.zeros(target), 0.0
    for (step, site), p in frames.items():
        pooled = p.astype(np.float64).mean(axis=0).mean(axis=1).reshape(lattices[site])
        g = F.interpolate(
            torch.from_numpy(pooled)[None, None], size=target, mode="bilinear", align_corners=False
        )[0, 0].numpy()
        w = np.exp(-0.5 * sigmas[step])
        num, den = num + w * g, den + w
    np.testing.assert_allclose(got, num / den, atol=1e-12)
    # per-token maps keep K; max over calls of per-token maps
    per_tok, _ = aggregate_frames(frames, lattices, pooling="none", target=target, method="max")
    assert per_tok.shape == (5, 16, 8)
    # layer weights: a site with weight 0 drops out entirely
    only_mid, used_mid = aggregate_frames(
        frames, lattices, pooling="mean", target=target, layer_weights={"mid.attn2": 1.0}
    )
    assert {s for _, s in used_mid} == {"mid.attn2"}
    ref_mid, _ = aggregate_frames(
        frames, lattices, pooling="mean", target=target, sites=["mid.attn2"]
    )
    np.testing.assert_allclose(only_mid, ref_mid)


def _result(frames, lattices, contexts, tokens):
    sites = [Site(n, "cross", contexts[n], 2, 2, i, lattices[n]) for i, n in enumerate(lattices)]
    return RunResult(
        run_id=1,
        audio=np.zeros(16000, np.float32),
        sample_rate=16000,
        mel=None,
        mel_spec=MelSpec(16000, 1024, 160, 64, 0.0, 8000.0),
        tokens=tokens,
        sites=sites,
        lattices=lattices,
        frames=frames,
        sigmas=np.array([2.0, 1.0]),
        timesteps=np.array([999.0, 500.0]),
        recipe={},
    )


def test_aggregate_run_per_token_and_contexts():
    rng = np.random.default_rng(5)
    lattices = {"a.attn2": (4, 4), "b.attn2": (2, 2)}
    frames = _softmax_frames(rng, range(2), list(lattices), lattices, k=5)
    res = _result(
        frames,
        lattices,
        {"a.attn2": "t5", "b.attn2": "loa"},
        {"t5": ["▁bass", "▁line", "</s>"], "loa": ["x"] * 5},
    )
    with pytest.raises(EngineError, match="contexts"):
        aggregate_run(res)
    agg = aggregate_run(res, "t5", target=(8, 8))
    assert agg.maps.shape == (5, 8, 8) and agg.sites == ["a.attn2"] and agg.steps == [0, 1]
    assert agg.tokens == ["▁bass", "▁line", "</s>", "#3", "#4"]
    # mean over steps of per-token maps, checked through torch for token 0
    ref = np.mean(
        [
            F.interpolate(
                torch.from_numpy(
                    frames[(s, "a.attn2")].astype(np.float64).mean(0)[:, 0].reshape(1, 1, 4, 4)
                ),
                size=(8, 8),
                mode="bilinear",
                align_corners=False,
            )[0, 0].numpy()
            for s in range(2)
        ],
        axis=0,
    )
    np.testing.assert_allclose(agg.maps[0], ref, atol=1e-12)
    # softmax rows sum to 1, so the per-token maps sum to ~1 in every cell
    np.testing.assert_allclose(agg.maps.sum(axis=0), 1.0, atol=5e-3)


def test_fit_layer_weights_recovers_planted_weighting():
    rng = np.random.default_rng(6)
    maps = rng.random((5, 3, 8, 6))
    planted = np.array([0.6, 0.0, 0.4])
    targets = 2.5 * np.einsum("l,eltf->etf", planted, maps)
    w = fit_layer_weights(maps, targets, normalise=False)
    np.testing.assert_allclose(w, planted, atol=1e-9)
    # an anti-correlated layer gets weight 0, and weights stay on the simplex
    anti = np.concatenate([maps, (1.0 - targets / targets.max())[:, None]], axis=1)
    w2 = fit_layer_weights(anti, targets, normalise=False)
    assert (
        np.all(w2 >= 0) and w2.sum() == pytest.approx(1.0) and w2[3] == pytest.approx(0.0, abs=1e-9)
    )
    with pytest.raises(EngineError):
        fit_layer_weights(maps[:, 0], targets)


@pytest.mark.parametrize("k", [1, 2, 5, 37, 50])
def test_topk_streaming_equals_sorting(k):
    rng = np.random.default_rng(13)
    maps, w = rng.random((37, 3, 5, 4)), rng.random(37) + 0.1
    scaled = maps * (w * 37 / w.sum())[:, None, None, None]
    ref = np.sort(scaled, axis=0)[::-1][: min(k, 37)].mean(axis=0)
    np.testing.assert_allclose(aggregate_maps(maps, w, "topk", k), ref, atol=1e-12)
