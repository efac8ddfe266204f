"""Where a command's work items run: this process, a local Ray cluster, or a running one."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from engine.errors import EngineError

RAY_MISSING = "Ray is not installed: pip install 'aiba-studio[cluster]'"
MAX_WORKERS = 4096
MAX_GPUS_PER_WORKER = 64.0
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def ray_available() -> bool:
    """Whether the optional ``ray`` package can be imported (the ``cluster`` extra)."""
    return importlib.util.find_spec("ray") is not None


@dataclass(frozen=True)
class ClusterSpec:
    """``address``: ``None`` runs the items in this process (the default); ``"local"`` starts a
    local Ray cluster; ``"auto"`` connects to a running one; otherwise a Ray address
    (``host:port`` or ``ray://host:port``). ``workers`` actors each hold ``gpus_per_worker`` GPUs
    (fractions share a GPU). The spec changes where numbers are computed, never a number, so it is
    left out of every resume check."""

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0

    @property
    def distributed(self) -> bool:
        return self.address is not None

    def validate(self) -> None:
        """One :class:`EngineError` line for bad settings, or Ray missing when it is needed."""
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or not 1 <= self.workers <= MAX_WORKERS:
            raise EngineError(f"--workers must be a whole number between 1 and {MAX_WORKERS} "
                              f"(got {self.workers!r})")
        gpus = self.gpus_per_worker
        if isinstance(gpus, bool) or not isinstance(gpus, int | float) or gpus != gpus \
                or not 0 <= gpus <= MAX_GPUS_PER_WORKER:
            raise EngineError(f"--gpus-per-worker must be a number between 0 and {MAX_GPUS_PER_WORKER:g}, "
                              f"e.g. 0.5 to put two workers on one GPU (got {gpus!r})")
        if self.address is None:
            if self.workers != 1 or gpus:
                raise EngineError("--workers and --gpus-per-worker need --ray local|auto|ADDRESS")
            return
        if not isinstance(self.address, str) or not (
                self.address in ("local", "auto") or _ADDRESS.match(self.address)):
            raise EngineError(f"--ray must be local, auto or a Ray address such as 10.0.0.5:6379 or "
                              f"ray://10.0.0.5:10001 (got {self.address!r})")
        if gpus > 1 and not float(gpus).is_integer():
            raise EngineError(f"--gpus-per-worker above 1 must be a whole number (got {gpus:g})")
        if not ray_available():
            raise EngineError(RAY_MISSING)
