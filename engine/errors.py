"""The engine's error types: every failure a user can act on is one of these."""

from __future__ import annotations


class EngineError(Exception):
    """An error the user can act on; its message is one line that says what to do."""


class RunCancelled(EngineError):
    """Raised inside a run when its cancel token was set; the run leaves nothing attached."""
