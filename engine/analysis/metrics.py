"""Alignment metrics between an attention map ``G`` and ground truth ``B`` (AIBA Sec. 2.2, Tables 1/3).

Binarisation rule (:func:`binarise`): ``G`` is min–max normalised to ``[0, 1]`` (a constant map
becomes all 0), then a cell is on when its value is ``≥ tau``, or, with ``top_q``, when it is among
the top ``q`` fraction of cells (ties at the cut included). Empty-set conventions: IoU of two empty
masks is 1 (perfect agreement); precision/recall/F1 with a zero denominator take ``zero_division``
(0 by default, as scikit-learn). Correlations of a constant profile are ``nan``.

Undefined inputs: a map (or profile) holding NaN or ±inf has no order, so every score of it —
IoU, swept IoU, AP, pointing game, Pearson, Spearman — is ``nan`` and a
:class:`NonFiniteMapWarning` is issued (scikit-learn refuses such input with a ``ValueError``);
:func:`binarise` raises :class:`EngineError` (a mask cannot be ``nan``).

Pointing-game ties: when several bins of a frame share the maximum, the frame scores the share of
the tied bins that lie in the ground truth (the expected hit of a uniformly random tie-break), so a
map flat in frequency scores the mask's share of bins, not 1 or 0 depending on where the mask is.
Values within ``TIE_RTOL`` of the frame maximum (relative to the map's largest magnitude) are ties.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.types import EngineError

TIE_RTOL = 1e-9  # bins within this fraction of max|G| of a frame's maximum count as tied


class NonFiniteMapWarning(RuntimeWarning):
    """A score was asked of a map or profile holding NaN or inf: the score is ``nan``."""


def nonfinite_count(a: np.ndarray) -> int:
    """Number of NaN or ±inf values in ``a``."""
    return int(np.size(a) - np.count_nonzero(np.isfinite(np.asarray(a, dtype=np.float64))))


def _finite(a: np.ndarray, what: str) -> bool:
    """True when ``a`` is all finite; otherwise warn that ``what`` is undefined and return False."""
    bad = nonfinite_count(a)
    if bad:
        warnings.warn(f"{what}: the input holds {bad} NaN/inf value(s) of {np.size(a)}, so the "
                      "score is undefined (nan); check the map", NonFiniteMapWarning, stacklevel=3)
    return bad == 0


def frequency_flat(g: np.ndarray, rtol: float = TIE_RTOL) -> bool:
    """True for a ``(T, F)`` map (``F > 1``) whose every frame is constant across frequency.

    Such a map (a time-only model, e.g. Stable Audio's ``(T, 1)`` lattices broadcast over the
    grid) carries no frequency information; a map that is constant everywhere is flat too.
    """
    a = np.asarray(g, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or nonfinite_count(a):
        return False
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    return bool(np.all(np.ptp(a, axis=1) <= rtol * scale))


def normalise_map(g: np.ndarray) -> np.ndarray:
    """Min–max normalise to ``[0, 1]``; a constant map becomes zeros."""
    a = np.asarray(g, dtype=np.float64)
    lo, hi = a.min(), a.max()
    return np.zeros_like(a) if hi - lo <= 0 else (a - lo) / (hi - lo)


def binarise(g: np.ndarray, tau: float | None = 0.5, top_q: float | None = None) -> np.ndarray:
    """Boolean mask of ``g`` after min–max normalisation: ``≥ tau``, or the top ``top_q`` fraction."""
    bad = nonfinite_count(g)
    if bad:
        raise EngineError(f"the map holds {bad} NaN/inf value(s): it cannot be binarised; "
                          "regenerate it (fewer steps, another seed) or drop it")
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
    """T–F IoU of ``binarise(g, tau)`` with the ground-truth mask (``nan`` for a NaN/inf map)."""
    if not _finite(g, "IoU"):
        _same_shape(np.asarray(g), np.asarray(gt))
        return float("nan")
    return iou(binarise(g, tau), gt)


def iou_sweep(
    g: np.ndarray, gt: np.ndarray, taus: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """IoU over thresholds (default 0.05, 0.10, …, 0.95); returns ``(taus, ious)`` (all ``nan`` for
    a NaN/inf map)."""
    t = (
        np.round(np.arange(0.05, 0.951, 0.05), 10)
        if taus is None
        else np.asarray(taus, dtype=np.float64)
    )
    if not _finite(g, "swept IoU"):
        return t, np.full(t.shape, np.nan)
    return t, np.array([tf_iou(g, gt, float(x)) for x in t])


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP = ``Σ_n (R_n − R_{n−1})·P_n`` over distinct score thresholds (no interpolation).

    Same definition as scikit-learn's ``average_precision_score``; ``nan`` when no label is positive
    or a score is NaN/inf (scikit-learn raises for those).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise EngineError(f"{s.size} scores for {y.size} labels: put map and mask on one grid")
    n_pos = int(y.sum())
    if not _finite(s, "average precision") or n_pos == 0:
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
    """Pearson correlation of two 1-D arrays (``nan`` if either is constant or holds NaN/inf)."""
    a, b = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    _same_shape(a, b)
    if not _finite(np.r_[a, b], "Pearson correlation"):
        return float("nan")
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
    """Spearman correlation: Pearson of average ranks (``nan`` if either input holds NaN/inf).

    scipy's ``spearmanr`` gives ``nan`` for NaN too, but ranks ``inf`` as the largest value; here an
    infinite value is treated as undefined, as in every other score.
    """
    a, b = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    _same_shape(a, b)
    if not _finite(np.r_[a, b], "Spearman correlation"):
        return float("nan")
    return pearson(average_ranks(a), average_ranks(b))


def profile_correlation(g: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) between the map's frequency profile and a template profile ``b_f``."""
    gp, bp = frequency_profile_of(g), frequency_profile_of(b)
    return pearson(gp, bp), spearman(gp, bp)


def pointing_game(g: np.ndarray, gt: np.ndarray) -> tuple[float, int]:
    """Mean over frames with any ground-truth activity of the hit of ``argmax_f G[t, f]``.

    A frame's hit is 1 or 0 when its maximum is unique; with tied maxima it is the share of the
    tied bins that are active (see module docstring). Returns ``(hit rate, frames scored)``; the
    rate is ``nan`` when no frame is active or the map holds NaN/inf.
    """
    a, m = np.asarray(g, dtype=np.float64), np.asarray(gt, dtype=bool)
    _same_shape(a, m)
    frames = np.nonzero(m.any(axis=1))[0]
    if not _finite(a, "pointing game") or frames.size == 0:
        return float("nan"), int(frames.size)
    rows, mrows = a[frames], m[frames]
    tol = TIE_RTOL * float(np.max(np.abs(a)))
    tied = rows >= rows.max(axis=1, keepdims=True) - tol
    hits = (tied & mrows).sum(axis=1) / tied.sum(axis=1)
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
    frequency profile ``mean_t gt``. A map holding NaN/inf gets ``nan`` for every score (one
    :class:`NonFiniteMapWarning`).
    """
    g = np.asarray(g, dtype=np.float64)
    m = np.asarray(gt, dtype=bool)
    _same_shape(g, m)
    if not _finite(g, "alignment report"):
        names = ("iou", "iou_sweep_mean", "ap", "pointing", "pearson", "spearman", "precision",
                 "recall", "f1")
        return {**{k: float("nan") for k in names},
                "pointing_frames": float(np.count_nonzero(m.any(axis=1)) if m.ndim == 2 else 0)}
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
