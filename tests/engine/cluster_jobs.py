"""Small jobs for the Ray tests, in a module that imports nothing heavy (a worker that unpickles one
imports this module; it starts in a couple of seconds instead of loading torch)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class SlowFirst:
    """Item 0 takes a second, the others a few ms; results carry the worker's pid and setup time."""

    def setup(self) -> tuple[int, float]:
        return os.getpid(), time.time()

    def run(self, state: tuple[int, float], item: int) -> tuple[int, int, float]:
        if item == 5:
            raise ValueError("five is refused")
        time.sleep(1.0 if item == 0 else 0.02)
        return item * item, state[0], state[1]


@dataclass(frozen=True)
class DiesOnce:
    """The first worker to run an item claims ``marker`` and dies (os._exit) on that item."""

    marker: str

    def setup(self) -> int:
        return os.getpid()

    def run(self, pid: int, item: int) -> tuple[int, int]:
        die_first(self.marker)
        return item + 100, pid


@dataclass(frozen=True)
class Poison:
    """Item 2 kills every worker that runs it."""

    def setup(self) -> None:
        return None

    def run(self, state: None, item: int) -> int:
        if item == 2:
            os._exit(3)
        return -item


def die_first(marker: str) -> None:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)


@dataclass(frozen=True)
class FailsSetup:
    """A worker that cannot set up (as when the model is missing on a node)."""

    def setup(self) -> None:
        raise ValueError("no weights at /models/x on this node")

    def run(self, state: None, item: int) -> int:
        return item
