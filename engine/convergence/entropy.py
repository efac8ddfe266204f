"""Attention entropy of probability rows, in nats (natural log), with ``0 · log 0 = 0``.

For a site at a step the diagnostic quantity is the entropy of every query's key distribution,
averaged over heads and queries (SAM-Audio probing, Sec. 2.2): a uniform row over ``K`` keys has
``log K``, a one-hot row has 0.

Padded keys (Stable Audio zeroes, but does not mask, its T5 padding, so pads take softmax mass):
``pad_keys=None`` keeps the raw distribution the model uses (what LSAC caches); with a boolean
``pad_keys`` mask the rows are renormalised over the real keys first (a row with no mass on real
keys then counts as entropy 0).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.types import EngineError


def _check_pads(k: int, pad_keys) -> None:
    if pad_keys is not None and int(pad_keys.shape[-1]) != k:
        raise EngineError(f"pad mask has {int(pad_keys.shape[-1])} keys but the attention has {k}: "
                          "pass the pad mask of the same context")


def row_entropy(probs: np.ndarray, pad_keys: np.ndarray | None = None) -> np.ndarray:
    """Entropy (nats) of each row of ``probs`` (last axis = keys); shape ``probs.shape[:-1]``."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] == 0:
        raise EngineError("attention probabilities need a non-empty key axis")
    if pad_keys is not None:
        pads = np.asarray(pad_keys, dtype=bool)
        _check_pads(p.shape[-1], pads)
        p = p[..., ~pads]
        total = p.sum(-1, keepdims=True)
        p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    p = np.clip(p, 0.0, None)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(-1)


def mean_entropy(probs: np.ndarray, pad_keys: np.ndarray | None = None) -> float:
    """Entropy of ``(H, Q, K)`` (or ``(Q, K)``) probabilities averaged over heads and queries."""
    return float(row_entropy(probs, pad_keys).mean())


def mean_entropy_torch(probs: torch.Tensor, pad_keys: torch.Tensor | None = None) -> float:
    """:func:`mean_entropy` on a torch tensor, computed where it lies (fp32 / fp64)."""
    p = probs.double() if probs.dtype == torch.float64 else probs.float()
    if pad_keys is not None:
        _check_pads(p.shape[-1], pad_keys)
        p = p[..., ~pad_keys.to(p.device)]
        p = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    p = p.clamp_min(0.0)
    terms = torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)), torch.zeros_like(p))
    return float(-terms.sum(-1).mean())


def mean_abs_change(series: np.ndarray) -> np.ndarray:
    """``|H_t − H_{t−1}|`` along axis 0 of a ``(steps, sites)`` array → ``(steps − 1, sites)``."""
    a = np.asarray(series, dtype=np.float64)
    if a.shape[0] < 2:
        raise EngineError("the entropy change needs at least 2 denoising steps: raise --steps")
    return np.abs(np.diff(a, axis=0))
