"""Scores of one attention map against an item's ground truths (what goes into ``items.jsonl``).

Undefined scores are stored as ``null``:

* a map holding NaN or inf is not scored at all: :func:`score_map` raises, and the evaluation
  lists the item in ``errors.jsonl`` (its scores and confusion counts would be meaningless);
* a **time-only** map (a model whose lattices are ``(T, 1)``, e.g. Stable Audio, or any map flat
  in frequency) carries no frequency information. Against the frequency-only ground truths
  (:data:`~engine.evaluation.ground_truth.FREQUENCY_KINDS`: masks constant in time) every score
  and the confusion counts are ``null``, so the item is left out of those tables; against the
  time-aligned ``output`` mask the time-resolved scores (IoU, swept IoU, AP, P/R/F1, counts) are
  kept and the frequency ones (pointing game, Pearson, Spearman) are ``null``. Such records carry
  ``"time_only": true``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.analysis.metrics import (
    alignment_report,
    binarise,
    confusion,
    frequency_flat,
    frequency_profile_of,
    nonfinite_count,
)
from engine.evaluation.ground_truth import FREQUENCY_KINDS, GroundTruth
from engine.types import EngineError

FREQUENCY_SCORES = ("pointing", "pearson", "spearman")
COUNTS = ("tp", "fp", "fn", "tn")


def attention_profile(g: np.ndarray) -> np.ndarray:
    """``g_f = mean_t G[t, f]`` scaled to sum 1 (a flat profile for an all-zero map)."""
    p = frequency_profile_of(g)
    s = float(p.sum())
    return p / s if s > 0 else np.full(p.shape, 1.0 / p.size)


def _clean(v: float) -> float | None:
    """JSON has no nan: undefined scores are stored as ``null``."""
    return None if v is None or not np.isfinite(v) else float(v)


def score_map(g: np.ndarray, gt: GroundTruth, tau: float = 0.5,
              time_only: bool | None = None) -> dict[str, dict[str, Any]]:
    """Per ground-truth kind: IoU@tau, swept IoU, AP, pointing game, profile correlations, counts.

    ``time_only``: the model has no frequency axis (None: decided from the map, see
    :func:`engine.analysis.metrics.frequency_flat`). Raises for a map holding NaN/inf.
    """
    g = np.asarray(g, dtype=np.float64)
    bad = nonfinite_count(g)
    if bad:
        raise EngineError(f"the attention map holds {bad} NaN/inf value(s) of {g.size}: not scored "
                          "(its scores are undefined); rerun with fewer --steps or another --seed")
    if time_only is None:
        time_only = frequency_flat(g)
    pred = binarise(g, tau)
    out: dict[str, dict[str, Any]] = {}
    for kind, mask in gt.masks.items():
        rep = alignment_report(g, mask, profile=gt.profiles[kind], tau=tau)
        c = confusion(pred, mask)
        rec: dict[str, Any] = {
            **{k: _clean(v) for k, v in rep.items() if k != "pointing_frames"},
            "pointing_frames": int(rep["pointing_frames"]),
            "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
            "time_only": bool(time_only),
        }
        if time_only:
            undefined = FREQUENCY_SCORES
            if kind in FREQUENCY_KINDS:
                undefined = tuple(k for k in rec if k not in ("pointing_frames", "time_only"))
            rec.update({k: None for k in undefined})
        out[kind] = rec
    return out
