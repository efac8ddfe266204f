"""AIBA Studio's engine. ``engine.trace(pipe)`` (:mod:`engine.tracing`) is imported on first use, so
that ``import engine`` stays free of torch."""

from __future__ import annotations

from typing import Any

__all__ = ["trace"]


def __getattr__(name: str) -> Any:
    if name == "trace":
        from engine.tracing import trace

        return trace
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
