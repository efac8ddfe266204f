"""Alignment metrics against hand cases, scipy.stats and scikit-learn."""

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import average_precision_score, jaccard_score, precision_recall_fscore_support

from engine.analysis import metrics as m
from engine.types import EngineError


def test_iou_cases():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert m.iou(a, a) == 1.0
    assert m.iou(a, ~a) == 0.0
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert m.iou(a, b) == pytest.approx(4 / 12)
    assert m.iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    g = np.linspace(0, 1, 16).reshape(4, 4)  # normalised map; >= 0.5 is the lower half of cells
    assert m.tf_iou(g, np.arange(16).reshape(4, 4) >= 8, tau=0.5) == 1.0
    taus, ious = m.iou_sweep(g, np.arange(16).reshape(4, 4) >= 8)
    assert taus.size == 19 and ious[np.isclose(taus, 0.5)][0] == 1.0 and ious.max() == 1.0
    with pytest.raises(EngineError):
        m.iou(a, np.zeros((2, 2), bool))


def test_binarise_rules():
    g = np.array([[2.0, 4.0], [6.0, 10.0]])  # normalised: 0, .25, .5, 1
    np.testing.assert_array_equal(m.binarise(g, 0.5), [[False, False], [True, True]])
    np.testing.assert_array_equal(m.binarise(g, top_q=0.25), [[False, False], [False, True]])
    assert not m.binarise(np.ones((2, 2)), 0.5).any()  # constant map -> nothing on


def test_average_precision_known_case_and_sklearn():
    assert m.average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(
        0.5 + 0.5 * 2 / 3
    )
    rng = np.random.default_rng(7)
    for _ in range(20):
        y = rng.random(300) < 0.3
        s = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
        assert abs(m.average_precision(s, y) - average_precision_score(y, s)) < 1e-9
    assert np.isnan(m.average_precision([0.1, 0.2], [0, 0]))


def test_correlations_match_scipy():
    rng = np.random.default_rng(8)
    for _ in range(10):
        x = np.round(rng.random(64), 1)  # ties
        y = x + rng.normal(0, 0.3, 64)
        assert abs(m.pearson(x, y) - pearsonr(x, y)[0]) < 1e-9
        assert abs(m.spearman(x, y) - spearmanr(x, y)[0]) < 1e-9
    g = rng.random((128, 64))
    b = rng.random(64)
    pr, sp = m.profile_correlation(g, b)
    assert (
        abs(pr - pearsonr(g.mean(axis=0), b)[0]) < 1e-9
        and abs(sp - spearmanr(g.mean(axis=0), b)[0]) < 1e-9
    )
    assert np.isnan(m.pearson(np.ones(5), np.arange(5.0)))


def test_pointing_game_by_hand():
    gt = np.zeros((4, 5), bool)
    gt[0, 0:2] = True  # frame 0: argmax at f=1 -> hit
    gt[1, 3:] = True  # frame 1: argmax at f=0 -> miss
    gt[3, 2] = True  # frame 3: argmax at f=2 -> hit; frame 2 has no activity: not scored
    g = np.zeros((4, 5))
    g[0, 1] = g[1, 0] = g[2, 4] = g[3, 2] = 1.0
    rate, n = m.pointing_game(g, gt)
    assert n == 3 and rate == pytest.approx(2 / 3)
    assert np.isnan(m.pointing_game(g, np.zeros_like(gt))[0])


def test_class_table_matches_sklearn():
    rng = np.random.default_rng(9)
    classes = ["Bass", "Drums", "Guitar", "Piano"]
    rates = [0.1, 0.5, 0.3, 0.05]
    gts = {c: rng.random((32, 16)) < r for c, r in zip(classes, rates, strict=True)}
    preds = {
        c: (gts[c] & (rng.random((32, 16)) < 0.8)) | (rng.random((32, 16)) < 0.02) for c in classes
    }
    table = m.class_table(preds, gts)
    y_true = np.stack([gts[c].ravel() for c in classes], axis=1)
    y_pred = np.stack([preds[c].ravel() for c in classes], axis=1)
    for ours, avg in (("micro", "micro"), ("macro", "macro"), ("posweighted", "weighted")):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        j = jaccard_score(y_true, y_pred, average=avg, zero_division=0)
        row = table[ours]
        assert abs(row["precision"] - p) < 1e-9 and abs(row["recall"] - r) < 1e-9
        assert abs(row["f1"] - f) < 1e-9 and abs(row["iou"] - j) < 1e-9
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    for i, c in enumerate(classes):
        assert abs(table[c]["precision"] - p[i]) < 1e-9 and abs(table[c]["f1"] - f[i]) < 1e-9


def test_alignment_report_perfect_map():
    gt = np.zeros((8, 6), bool)
    gt[2:6, 1:3] = True
    rep = m.alignment_report(gt.astype(float), gt)
    assert rep["iou"] == 1.0 and rep["ap"] == 1.0 and rep["pointing"] == 1.0 and rep["f1"] == 1.0
    assert rep["pearson"] == pytest.approx(1.0) and rep["pointing_frames"] == 4


def test_nonfinite_scores_are_nan_with_a_warning():
    y = np.array([1, 0, 1, 0], bool)
    for s in ([0.9, np.nan, 0.7, 0.6], [np.nan] * 4, [np.inf, 0.8, 0.7, 0.6], [0.9, 0.8, -np.inf, 0.6]):
        with pytest.warns(m.NonFiniteMapWarning, match="average precision"):
            assert np.isnan(m.average_precision(s, y))
        with pytest.raises(ValueError):  # the reference refuses such input
            average_precision_score(y, s)
    g = np.tile(np.arange(4.0), (3, 1))
    gt = np.zeros((3, 4), bool)
    gt[:, :2] = True
    g[0, 3] = np.nan  # the NaN must not be "pointed at"
    with pytest.warns(m.NonFiniteMapWarning, match="pointing game"):
        assert m.pointing_game(g, gt) == (pytest.approx(np.nan, nan_ok=True), 3)
    with pytest.warns(m.NonFiniteMapWarning):
        assert np.isnan(m.tf_iou(g, gt))
    with pytest.warns(m.NonFiniteMapWarning):
        assert np.isnan(m.iou_sweep(g, gt)[1]).all()
    with pytest.raises(EngineError, match="NaN/inf"):
        m.binarise(g)
    with pytest.warns(m.NonFiniteMapWarning, match="alignment report") as rec:
        rep = m.alignment_report(g, gt)
    assert len(rec) == 1 and rep["pointing_frames"] == 3
    assert all(np.isnan(v) for k, v in rep.items() if k != "pointing_frames")


def test_correlations_of_nonfinite_profiles_are_nan():
    x, y = np.array([1.0, 2.0, np.nan, 4.0]), np.array([1.0, 2.0, 3.0, 5.0])
    with pytest.warns(m.NonFiniteMapWarning):
        assert np.isnan(m.pearson(x, y)) and np.isnan(m.spearman(x, y))
    with np.errstate(all="ignore"):
        assert np.isnan(pearsonr(x, y)[0]) and np.isnan(spearmanr(x, y)[0])  # scipy agrees on NaN
    z = np.array([1.0, 2.0, np.inf, 4.0])  # scipy's spearmanr ranks inf as the largest value;
    with pytest.warns(m.NonFiniteMapWarning):  # here an infinite profile is undefined, like NaN
        assert np.isnan(m.spearman(z, y)) and np.isnan(m.pearson(z, y))
    g = np.ones((3, 4))
    g[1, 2] = np.nan
    with pytest.warns(m.NonFiniteMapWarning):
        pr, sp = m.profile_correlation(g, np.arange(4.0))
    assert np.isnan(pr) and np.isnan(sp)


def test_pointing_game_ties_score_the_share_of_tied_bins_in_the_mask():
    flat = np.tile(np.array([0.2, 0.9, 0.5])[:, None], (1, 16))  # flat in frequency, varies in time
    low = np.zeros((3, 16), bool)
    low[:, :4] = True
    assert m.pointing_game(flat, low) == (pytest.approx(4 / 16), 3)  # not 1.0 (argmax = bin 0)
    assert m.pointing_game(flat, ~low) == (pytest.approx(12 / 16), 3)  # not 0.0
    g = np.array([[1.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0], [5.0, 1.0, 2.0, 2.0]])
    gt = np.array([[0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]], bool)
    # frame 0: tie of bins 1, 2, one in the mask -> 1/2; frame 1: all four tied, two in -> 2/4;
    # frame 2: unique maximum at bin 0 -> 1
    assert m.pointing_game(g, gt) == (pytest.approx((0.5 + 0.5 + 1.0) / 3), 3)
    near = np.array([[1.0, 1.0 + 1e-12, 0.0]])  # within TIE_RTOL: a tie
    assert m.pointing_game(near, np.array([[True, False, False]]))[0] == pytest.approx(0.5)


def test_frequency_flat_maps():
    assert m.frequency_flat(np.tile(np.arange(5.0)[:, None], (1, 8)))
    assert m.frequency_flat(np.zeros((4, 8)))  # constant: flat too
    g = np.tile(np.arange(5.0)[:, None], (1, 8))
    g[2, 3] += 1e-3
    assert not m.frequency_flat(g)
    assert not m.frequency_flat(np.arange(8.0)[None, :])
    assert not m.frequency_flat(np.ones((4, 1)))  # one bin: no frequency axis to be flat along
