"""Shared value types of the engine: sites, requests, attention frames, run results.

Conventions used everywhere in AIBA Studio:

* A *site* is one attention module of a denoiser, named by its module path
  (e.g. ``down_blocks.1.attentions.2.transformer_blocks.0.attn2``).
* Attention probabilities are recorded for the **conditional** half of classifier-free
  guidance only, as ``(heads, Q, K)`` (per-head) or ``(1, Q, K)`` (head-mean).
* Queries are ordered **time-major** on the site's lattice ``(T_l, F_l)``: ``q = t * F_l + f``.
  Time-only models (Stable Audio) have ``F_l == 1``.
* Time × frequency arrays are ``(T, F)`` with ``F`` index 0 the **lowest** frequency.
* Arrays handed to observers are fresh copies marked read-only.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

SITE_KINDS = ("cross", "self")


class EngineError(Exception):
    """An error the user can act on; its message is one line that says what to do."""


class RunCancelled(EngineError):
    """Raised inside a run when its cancel token was set; the run leaves nothing attached."""


@dataclass(frozen=True)
class Site:
    """One attention module of the denoiser.

    ``context`` names what the keys come from: ``"t5"``, ``"loa"`` (AudioLDM2's GPT-2 tokens),
    ``"text"`` (embedded model / Stable Audio conditioning tokens) or ``"self"``.
    ``lattice`` is the query lattice ``(T_l, F_l)`` of the last call, ``None`` before the first.
    """

    name: str
    kind: str
    context: str
    heads: int
    kv_heads: int
    index: int
    lattice: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MelSpec:
    """The model's mel definition; gives the Hz axis of every time × frequency figure."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    fmin: float
    fmax: float
    mel_scale: str = "slaney"  # "slaney" or "htk"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationRequest:
    """Everything that determines one generation (the run recipe, without the model)."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 25
    guidance: float = 3.0
    duration: float = 4.0
    capture: bool = True
    sites: list[str] | None = None  # None: every cross-attention site
    capture_steps: list[int] | None = None  # None: every step
    per_head: bool = False  # False: head-mean reduced on the device
    memory_budget_mb: float = 2048.0
    stream_dir: str | None = None  # where frames go when over budget (None: reduce instead)
    head_mask: dict[str, list[bool]] | None = None  # site -> heads kept in aggregation
    extras: dict[str, Any] = field(default_factory=dict)  # interventions, LSAC, ... (by later layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AttentionFrame:
    """Attention of one site at one denoising step (conditional CFG half).

    ``probs``: float16, read-only, shape ``(H, Q, K)`` with ``H`` = heads or 1 (head-mean).
    """

    run_id: int
    step: int
    site: str
    probs: np.ndarray
    lattice: tuple[int, int]
    context: str
    head_mean: bool


@dataclass(frozen=True)
class StepInfo:
    """Progress of a run after a denoising step."""

    run_id: int
    step: int
    total: int
    timestep: float
    sigma: float


@runtime_checkable
class RunObserver(Protocol):
    """Receives a run's data while it goes on (called in the engine thread)."""

    def on_frame(self, frame: AttentionFrame) -> None: ...

    def on_step(self, info: StepInfo) -> None: ...


class NullObserver:
    """An observer that ignores everything."""

    def on_frame(self, frame: AttentionFrame) -> None:
        return None

    def on_step(self, info: StepInfo) -> None:
        return None


class CancelToken:
    """Thread-safe cancel flag, checked by the engine at every denoising step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise RunCancelled("run cancelled")


def readonly(array: np.ndarray) -> np.ndarray:
    """A fresh, read-only copy of ``array`` (for crossing threads)."""
    out = np.array(array, copy=True)
    out.setflags(write=False)
    return out
