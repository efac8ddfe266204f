"""Head relevance (label-free and oracle), selection, selective aggregation, ordered weakening."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.analysis import heads as hd
from engine.analysis.aggregate import aggregate_frames
from engine.analysis.metrics import average_precision
from engine.types import EngineError

LAT = {"s1": (4, 4), "s2": (4, 4)}
HEADS = {"s1": 4, "s2": 2}
CONCEPT = [2]
K = 6


def _frames(rng, bumps, region_head=None, steps=2):
    """Softmax frames; ``bumps[(site, h)]`` adds to the concept logit of that head everywhere.

    ``region_head`` gets +5 on the concept inside late/low cells (t >= 2, f < 2) and -5 elsewhere.
    """
    frames = {}
    t, f = np.divmod(np.arange(16), 4)
    region = (t >= 2) & (f < 2)
    for s in range(steps):
        for site, n_h in HEADS.items():
            logits = rng.standard_normal((n_h, 16, K))
            for h in range(n_h):
                logits[h, :, CONCEPT[0]] += bumps.get((site, h), 0.0)
                if region_head == (site, h):
                    logits[h, :, CONCEPT[0]] += np.where(region, 5.0, -5.0)
            p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
            frames[(s, site)] = p.astype(np.float16)
    return frames


def test_concept_log_ratio_by_hand():
    a = np.zeros((2, 1, 4))
    a[0, 0] = [0.1, 0.6, 0.2, 0.1]
    a[1, 0] = [0.25, 0.25, 0.25, 0.25]
    s = hd.concept_log_ratio(a, [1], ignore=[0])
    np.testing.assert_allclose(s, [np.log(0.6 / 0.15), 0.0], atol=1e-9)
    with pytest.raises(EngineError, match="per_head"):
        hd.concept_log_ratio(a[:1], [1])


def test_label_free_ranks_planted_head_first_and_rewards_consistency():
    rng = np.random.default_rng(10)
    runs = [
        _frames(rng, {("s1", 1): 4.0, ("s2", 0): 2.0, ("s1", 3): 7.0}),
        _frames(rng, {("s1", 1): 4.0, ("s2", 0): 2.0}),
        _frames(rng, {("s1", 1): 4.0, ("s2", 0): 2.0}),
    ]
    rel = hd.label_free_relevance(runs, [CONCEPT] * 3)
    assert rel["s1"].runs == 3 and rel["s1"].score.shape == (4,)
    order = hd.rank_heads({s: r.score for s, r in rel.items()})
    assert order[0] == ("s1", 1)
    # s1/3 has the larger mean but is inconsistent across runs, so it ranks below s2/0
    assert rel["s1"].mean[3] > rel["s2"].mean[0]
    assert order.index(("s2", 0)) < order.index(("s1", 3))
    np.testing.assert_allclose(rel["s1"].score, rel["s1"].mean - rel["s1"].std)


def test_oracle_selection_weakening_and_selective_map():
    rng = np.random.default_rng(11)
    frames = _frames(rng, {}, region_head=("s1", 1))
    gt = np.zeros((8, 8), bool)
    gt[4:, :4] = True  # late and low on the (8, 8) grid
    maps = hd.head_maps(frames, LAT, CONCEPT, target=(8, 8))
    assert maps["s1"].shape == (4, 8, 8)
    oracle = hd.oracle_head_scores(maps, gt, "ap")
    order = hd.rank_heads(oracle)
    assert order[0] == ("s1", 1) and oracle["s1"][1] > 0.9
    assert abs(oracle["s2"][1] - average_precision(maps["s2"][1], gt)) < 1e-12

    top = hd.select_heads(oracle, 2, "top")
    assert sum(map(sum, top.values())) == 2 and top["s1"][1]
    bottom = hd.select_heads(oracle, 1, "bottom")
    (worst_site, worst_h) = order[-1]
    assert bottom[worst_site][worst_h] and sum(map(sum, bottom.values())) == 1
    with pytest.raises(EngineError):
        hd.select_heads(oracle, 7)

    # selective map == aggregate_frames with the same head mask (uniform, mean, keyword pooling)
    sel = hd.selective_map(maps, top)
    ref, used = aggregate_frames(
        frames,
        LAT,
        pooling="keyword",
        keywords=CONCEPT,
        head_mask=top,
        target=(8, 8),
        method="mean",
    )
    np.testing.assert_allclose(sel, ref, atol=1e-12)
    assert average_precision(sel, gt) > average_precision(hd.selective_map(maps), gt)

    removed, curve = hd.ordered_weakening(maps, order, gt, "ap")
    assert removed.tolist() == list(range(6))
    assert curve[0] == pytest.approx(average_precision(hd.selective_map(maps), gt))
    assert curve[1] < curve[0]  # removing the relevant head hurts
    assert curve[-1] == pytest.approx(oracle[worst_site][worst_h])


def test_daam_map_against_torch():
    rng = np.random.default_rng(12)
    frames = _frames(rng, {})
    got = hd.daam_map(frames, LAT, CONCEPT, target=(8, 8))
    ref = np.zeros((8, 8))
    for p in frames.values():
        for h in range(p.shape[0]):
            m = torch.from_numpy(p[h, :, CONCEPT[0]].astype(np.float64).reshape(1, 1, 4, 4))
            ref += F.interpolate(m, size=(8, 8), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-10)
