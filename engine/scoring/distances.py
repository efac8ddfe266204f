"""TADA's two preservation measures, in the instrument scorer's own feature space.

* :func:`frechet_distance` — the Fréchet distance between two Gaussians fitted to two sets of
  embeddings (FAD's formula; here on the scorer's 256 ms frame embeddings, not VGGish's, so it is
  named ``scorer_frechet_distance`` and is not comparable with published FAD values).
* :func:`perceptual_distance` — LPAPS-style: at every patch (time × frequency position) of every
  conv block, the channel vectors of the two clips are scaled to unit length and their squared
  difference summed over channels; averaged over patches, then over blocks. LPAPS also learns one
  weight per channel on human-free "same/different" pairs; we have none, so every channel weighs 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.types import EngineError


def gaussian_stats(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``samples`` ``(N, D)``; needs N ≥ 2."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise EngineError("the Fréchet distance needs at least two embeddings per set; generate more audio")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_stats(mu1: np.ndarray, c1: np.ndarray, mu2: np.ndarray, c2: np.ndarray) -> float:
    """‖μ₁ − μ₂‖² + tr(C₁ + C₂ − 2 (C₁ C₂)^½), with tr (C₁ C₂)^½ = tr (C₁^½ C₂ C₁^½)^½ (symmetric,
    so an eigen-decomposition suffices; exact for positive semi-definite C₁, C₂)."""
    s1 = _psd_sqrt(np.asarray(c1, np.float64))
    m = s1 @ np.asarray(c2, np.float64) @ s1
    tr_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None))))
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    value = float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt)
    return max(value, 0.0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and of ``b``."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise EngineError("both embedding sets must be (N, D) with the same D")
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def _unit(x: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    return x / (np.sqrt(np.sum(x * x, axis=0, keepdims=True)) + eps)


def perceptual_distance(acts_a: Sequence[np.ndarray], acts_b: Sequence[np.ndarray]) -> float:
    """Mean over blocks of the patch-mean of ‖â − b̂‖² (channel-unit-normalised activations
    ``(C, T, F)``); clips of different length are cropped to the shorter along time."""
    if len(acts_a) != len(acts_b) or not acts_a:
        raise EngineError("the perceptual distance needs the same (non-empty) list of layers for both clips")
    per_layer = []
    for x, y in zip(acts_a, acts_b, strict=True):
        t = min(x.shape[1], y.shape[1])
        d = _unit(np.asarray(x[:, :t], np.float64)) - _unit(np.asarray(y[:, :t], np.float64))
        per_layer.append(float(np.mean(np.sum(d * d, axis=0))))
    return float(np.mean(per_layer))
