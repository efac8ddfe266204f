"""Scores of one attention map against an item's ground truths (what goes into ``items.jsonl``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.analysis.metrics import alignment_report, binarise, confusion, frequency_profile_of
from engine.evaluation.ground_truth import GroundTruth


def attention_profile(g: np.ndarray) -> np.ndarray:
    """``g_f = mean_t G[t, f]`` scaled to sum 1 (a flat profile for an all-zero map)."""
    p = frequency_profile_of(g)
    s = float(p.sum())
    return p / s if s > 0 else np.full(p.shape, 1.0 / p.size)


def _clean(v: float) -> float | None:
    """JSON has no nan: undefined scores are stored as ``null``."""
    return None if v is None or not np.isfinite(v) else float(v)


def score_map(g: np.ndarray, gt: GroundTruth, tau: float = 0.5) -> dict[str, dict[str, Any]]:
    """Per ground-truth kind: IoU@tau, swept IoU, AP, pointing game, profile correlations, counts."""
    pred = binarise(g, tau)
    out: dict[str, dict[str, Any]] = {}
    for kind, mask in gt.masks.items():
        rep = alignment_report(g, mask, profile=gt.profiles[kind], tau=tau)
        c = confusion(pred, mask)
        out[kind] = {
            **{k: _clean(v) for k, v in rep.items() if k != "pointing_frames"},
            "pointing_frames": int(rep["pointing_frames"]),
            "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
        }
    return out
