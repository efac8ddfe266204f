"""Run-recipe helpers: library versions, scheduler description, noise levels per step."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine a run's numbers."""
    import diffusers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
    }


def json_safe(value: Any) -> Any:
    """``value`` with tuples, numpy scalars/arrays and tensors turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # torch tensors
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def scheduler_info(scheduler) -> dict[str, Any]:
    """Class name and configuration of a diffusers scheduler."""
    return {"class": type(scheduler).__name__, "config": json_safe(dict(scheduler.config))}


def scheduler_sigmas(scheduler, timesteps: np.ndarray) -> np.ndarray:
    """Noise level σ of each step: the scheduler's own ``sigmas`` where it has them, else
    ``sqrt((1 - ᾱ_t) / ᾱ_t)`` from ``alphas_cumprod`` (DDPM/DDIM); NaN when neither exists."""
    n = len(timesteps)
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) >= n:
        return np.asarray(sigmas[:n].detach().cpu().double() if hasattr(sigmas, "detach")
                          else sigmas[:n], dtype=np.float64)
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is not None:
        ac = np.asarray(alphas.detach().cpu().double() if hasattr(alphas, "detach") else alphas)
        idx = np.clip(np.asarray(timesteps).astype(np.int64), 0, len(ac) - 1)
        return np.sqrt((1.0 - ac[idx]) / ac[idx])
    return np.full(n, np.nan)
