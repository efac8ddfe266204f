"""Device and dtype names as users type them, checked against what this machine has."""

from __future__ import annotations

import torch

from engine.types import EngineError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str) -> torch.dtype:
    """``"float32"``/``"float16"``/``"bfloat16"`` (also ``fp32``/``fp16``/``bf16``) as a torch dtype."""
    key = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(
        name.lower(), name.lower()
    )
    if key not in DTYPES:
        raise EngineError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[key]


def resolve_device(name: str) -> str:
    """A device string torch accepts and this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise EngineError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EngineError(f"device {name!r} asked for, but no CUDA GPU is available; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EngineError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise EngineError(f"device {name!r} asked for, but MPS is not available; use cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise EngineError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or mps")
    return str(device)
