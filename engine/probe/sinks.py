"""Attention sinks: probability mass on padded keys, and renormalising over the real keys.

Stable Audio zeroes its padded T5 positions instead of masking them, so they get logit 0 and
absorb softmax mass while contributing nothing to the output. Frames keep the raw probabilities
over all keys; these helpers derive the two other views.
"""

from __future__ import annotations

import numpy as np

from engine.types import EngineError


def sink_mass(probs: np.ndarray, pad_keys: np.ndarray) -> np.ndarray:
    """Mass on padded keys per head and query: ``(H, Q)`` from ``(H, Q, K)``."""
    pad = _check(probs, pad_keys)
    return probs.astype(np.float32)[..., pad].sum(-1)


def renormalise_over_real_keys(probs: np.ndarray, pad_keys: np.ndarray) -> np.ndarray:
    """``(H, Q, K_real)`` probabilities over the non-padded keys, each row summing to 1."""
    pad = _check(probs, pad_keys)
    real = probs.astype(np.float32)[..., ~pad]
    total = real.sum(-1, keepdims=True)
    return np.divide(real, total, out=np.zeros_like(real), where=total > 0)


def _check(probs: np.ndarray, pad_keys: np.ndarray) -> np.ndarray:
    pad = np.asarray(pad_keys, dtype=bool)
    if pad.ndim != 1 or pad.shape[0] != probs.shape[-1]:
        raise EngineError(
            f"pad_keys has {pad.shape} entries but the frame has {probs.shape[-1]} keys; "
            "pass RunResult.aux['pad_keys'][context] of the same run"
        )
    return pad
