"""The :class:`Command` record and the registry the command modules add themselves to."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class Command:
    """One headless command."""

    name: str
    summary: str
    example: str
    outputs: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Any]  # flags -> the engine's options (validated)
    execute: Callable[[Any, Progress], Any]  # options, progress -> what it wrote (Path) or lines
    unit: str = "step"  # what the progress bar counts

    def describe(self) -> str:
        return f"{self.summary}\n\nwrites: {self.outputs}\n\nexample:\n  {self.example}"


REGISTRY: dict[str, Command] = {}


def register(command: Command) -> Command:
    if command.name in REGISTRY:
        raise ValueError(f"command {command.name} registered twice")
    REGISTRY[command.name] = command
    return command


def lazy(module: str, function: str) -> Callable[[Any, Progress], Any]:
    """An ``execute`` that imports ``module`` only when the command runs (keeps ``--help`` light)
    and calls ``function(options, progress=progress)``."""

    def execute(options: Any, progress: Progress) -> Any:
        import importlib

        return getattr(importlib.import_module(module), function)(options, progress=progress)

    execute.__qualname__ = f"lazy({module}.{function})"
    return execute
