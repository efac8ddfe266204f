"""Alignment metrics between an attention map ``G`` and ground truth ``B`` (AIBA Sec. 2.2, Tables 1/3).

Binarisation rule (:func:`binarise`): ``G`` is min–max normalised to ``[0, 1]`` (a constant map
becomes all 0), then a cell is on when its value is ``≥ tau``, or, with ``top_q``, when it is among
the top ``q`` fraction of cells (ties at the cut included). Empty-set conventions: IoU of two empty
masks is 1 (perfect agreement); precision/recall/F1 with a zero denominator take ``zero_division``
(0 by default, as scikit-learn). Correlations of a constant profile are ``nan``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.types import EngineError


def normalise_map(g: np.ndarray) -> np.ndarray:
    """Min–max normalise to ``[0, 1]``; a constant map becomes zeros."""
    a = np.asarray(g, dtype=np.float64)
    lo, hi = a.min(), a.max()
    return np.zeros_like(a) if hi - lo <= 0 else (a - lo) / (hi - lo)


def binarise(g: np.ndarray, tau: float | None = 0.5, top_q: float | None = None) -> np.ndarray:
    """Boolean mask of ``g`` after min–max normalisation: ``≥ tau``, or the top ``top_q`` fraction."""
    n = normalise_map(g)
    if top_q is not None:
        if not 0 < top_q <= 1:
            raise EngineError(f"top_q must be in (0, 1], got {top_q}")
        count = max(1, int(np.ceil(top_q * n.size)))
        cut = np.sort(n, axis=None)[n.size - count]
        return n >= cut
    if tau is None:
        raise EngineError("give a threshold tau or a top_q fraction to binarise a map")
    return n >= tau


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise EngineError(
            f"map {a.shape} and ground truth {b.shape} differ in shape: put both on one grid"
        )


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1 when both are empty)."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _same_shape(p, g)
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


def tf_iou(g: np.ndarray, gt: np.ndarray, tau: float = 0.5) -> float:
    """T–F IoU of ``binarise(g, tau)`` with the ground-truth mask."""
    return iou(binarise(g, tau), gt)


def iou_sweep(
    g: np.ndarray, gt: np.ndarray, taus: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """IoU over thresholds (default 0.05, 0.10, …, 0.95); returns ``(taus, ious)``."""
    t = (
        np.round(np.arange(0.05, 0.951, 0.05), 10)
        if taus is None
        else np.asarray(taus, dtype=np.float64)
    )
    return t, np.array([tf_iou(g, gt, float(x)) for x in t])


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP = ``Σ_n (R_n − R_{n−1})·P_n`` over distinct score thresholds (no interpolation).

    Same definition as scikit-learn's ``average_precision_score``; ``nan`` when no label is positive.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise EngineError(f"{s.size} scores for {y.size} labels: put map and mask on one grid")
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def frequency_profile_of(g: np.ndarray) -> np.ndarray:
    """``g_f = mean_t G[t, f]`` for a ``(T, F)`` map (a ``(F,)`` array passes through)."""
    a = np.asarray(g, dtype=np.float64)
    return a.mean(axis=0) if a.ndim == 2 else a


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays (``nan`` if either is constant)."""
    a, b = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    _same_shape(a, b)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float("nan") if den == 0 else float((a * b).sum() / den)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    a = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_a))[0] + 1]
    ends = np.r_[starts[1:], a.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1..end
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation: Pearson of average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def profile_correlation(g: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) between the map's frequency profile and a template profile ``b_f``."""
    gp, bp = frequency_profile_of(g), frequency_profile_of(b)
    return pearson(gp, bp), spearman(gp, bp)


def pointing_game(g: np.ndarray, gt: np.ndarray) -> tuple[float, int]:
    """Share of frames with any ground-truth activity whose ``argmax_f G[t, f]`` is active.

    Returns ``(hit rate, number of frames scored)``; the rate is ``nan`` when no frame is active.
    """
    a, m = np.asarray(g, dtype=np.float64), np.asarray(gt, dtype=bool)
    _same_shape(a, m)
    frames = np.nonzero(m.any(axis=1))[0]
    if frames.size == 0:
        return float("nan"), 0
    hits = m[frames, np.argmax(a[frames], axis=1)]
    return float(hits.mean()), int(frames.size)


@dataclass(frozen=True)
class Counts:
    """Confusion counts of one binarised map against its mask."""

    tp: int
    fp: int
    fn: int
    tn: int


def confusion(pred: np.ndarray, gt: np.ndarray) -> Counts:
    """TP/FP/FN/TN of two boolean masks."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _same_shape(p, g)
    return Counts(
        int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum()), int((~p & ~g).sum())
    )


def _ratio(num: float, den: float, zero_division: float) -> float:
    return zero_division if den == 0 else num / den


def scores_from_counts(c: Counts, zero_division: float = 0.0) -> dict[str, float]:
    """Precision, recall, F1 and IoU (``TP/(TP+FP+FN)``) from counts."""
    p = _ratio(c.tp, c.tp + c.fp, zero_division)
    r = _ratio(c.tp, c.tp + c.fn, zero_division)
    f1 = _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, zero_division)
    j = _ratio(c.tp, c.tp + c.fp + c.fn, zero_division)
    return {"precision": p, "recall": r, "f1": f1, "iou": j}


def class_table(
    preds: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray], zero_division: float = 0.0
) -> dict[str, dict[str, float]]:
    """Per-class and averaged precision / recall / F1 / IoU (AIBA Tables 1 and 3).

    ``preds`` and ``gts`` map a class to boolean masks (any shape; several examples may be
    concatenated). Rows: each class, then ``micro`` (from counts pooled over classes), ``macro``
    (unweighted mean of the class scores) and ``posweighted`` (class scores weighted by the
    number of positive ground-truth cells; all-zero weights give ``nan``).
    """
    if set(preds) != set(gts) or not preds:
        raise EngineError(
            "predictions and ground truth must name the same, non-empty set of classes"
        )
    table: dict[str, dict[str, float]] = {}
    counts = {c: confusion(preds[c], gts[c]) for c in preds}
    for c, k in counts.items():
        table[c] = scores_from_counts(k, zero_division)
    pooled = Counts(
        *(sum(getattr(k, f) for k in counts.values()) for f in ("tp", "fp", "fn", "tn"))
    )
    table["micro"] = scores_from_counts(pooled, zero_division)
    keys = ("precision", "recall", "f1", "iou")
    table["macro"] = {m: float(np.mean([table[c][m] for c in counts])) for m in keys}
    support = np.array([k.tp + k.fn for k in counts.values()], dtype=np.float64)
    if support.sum() == 0:
        table["posweighted"] = {m: float("nan") for m in keys}
    else:
        table["posweighted"] = {
            m: float(np.dot(support, [table[c][m] for c in counts]) / support.sum()) for m in keys
        }
    return table


def alignment_report(
    g: np.ndarray, gt: np.ndarray, profile: np.ndarray | None = None, tau: float = 0.5
) -> dict[str, float]:
    """All single-map scores: IoU@tau, mean IoU over the sweep, AP, pointing game, correlations.

    ``profile`` (``(F,)``) is the template for the correlations; by default the mask's own
    frequency profile ``mean_t gt``.
    """
    g = np.asarray(g, dtype=np.float64)
    m = np.asarray(gt, dtype=bool)
    _same_shape(g, m)
    _, sweep = iou_sweep(g, m)
    pg, n_frames = pointing_game(g, m)
    pr, sp = profile_correlation(g, m.astype(np.float64) if profile is None else profile)
    scores = scores_from_counts(confusion(binarise(g, tau), m))
    return {
        "iou": tf_iou(g, m, tau),
        "iou_sweep_mean": float(sweep.mean()),
        "ap": average_precision(g, m),
        "pointing": pg,
        "pointing_frames": float(n_frames),
        "pearson": pr,
        "spearman": sp,
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
    }
