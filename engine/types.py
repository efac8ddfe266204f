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
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engine.errors import EngineError, RunCancelled
from engine.recipe import NAN_POLICIES, HeadMask, LsacSpec, NanPolicy, RunSettings, check_head_mask

__all__ = ["EngineError", "RunCancelled"]  # defined in engine.errors, imported from here by most modules

SITE_KINDS = ("cross", "self")


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


@dataclass(frozen=True)
class GenerationRequest(RunSettings):
    """One generation: the run settings (:class:`~engine.recipe.RunSettings`), what to capture and
    what to change. Frozen: derive variants with :func:`dataclasses.replace`.

    ``interventions`` are objects with a ``wrap`` method (:mod:`engine.probe.intervention`), applied
    in order; ``lsac`` asks for layer-selective attention caching (resolved into an intervention
    before generating); ``head_mask`` ablates the heads marked ``False`` in the cross-attention
    output of their site; ``nan_policy`` says whether NaN/inf attention stops the run; ``maps``
    (:class:`~engine.probe.kept_maps.KeptMaps`) says what the caller builds from the frames, so
    that ``memory_budget_mb`` counts it too.
    """

    capture: bool = True
    sites: tuple[str, ...] | None = None  # None: every cross-attention site
    capture_steps: tuple[int, ...] | None = None  # None: every step
    per_head: bool = False  # False: head-mean reduced on the device
    memory_budget_mb: float = 2048.0
    stream_dir: str | None = None  # where frames go when over budget (None: reduce instead)
    head_mask: HeadMask | None = None
    interventions: tuple[Any, ...] = ()
    lsac: LsacSpec | None = None
    nan_policy: NanPolicy = "warn"
    maps: Any = None  # engine.probe.kept_maps.KeptMaps: the maps the caller keeps; the budget counts them
    # a quick listen (the GUI's slider preview): a family with an iterative vocoder spends fewer
    # iterations on it (embedded model: Griffin-Lim 8 instead of 32); changes nothing else
    preview: bool = False

    def __post_init__(self) -> None:
        # normalise list arguments to tuples so that requests compare and copy as values
        for name in ("sites", "capture_steps", "interventions"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.head_mask, dict):
            object.__setattr__(self, "head_mask", {k: tuple(v) for k, v in self.head_mask.items()})

    def validate(self) -> GenerationRequest:
        """Check the settings against the engine's limits (:data:`engine.recipe.LIMITS`)."""
        from engine.recipe import LIMITS, check_float, check_int

        self.validate_settings(require_prompt=False)
        check_float("memory budget (MB)", self.memory_budget_mb, 0.0, LIMITS.memory_budget_max_mb,
                    low_open=True)
        if self.nan_policy not in NAN_POLICIES:
            raise EngineError(f"nan_policy must be one of {', '.join(NAN_POLICIES)} (got {self.nan_policy!r})")
        for step in self.capture_steps or ():
            check_int("each capture step", step, 0, LIMITS.steps_max)  # the run's range: plan_capture
        check_head_mask(self.head_mask)
        if self.lsac is not None:
            self.lsac.validate()
        if self.maps is not None:
            self.maps.validate()
        for item in self.interventions:
            if not callable(getattr(item, "wrap", None)):
                raise EngineError(f"{type(item).__name__} is not an intervention (it has no wrap method)")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data: interventions as their descriptions, the LSAC spec as its record."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["sites"] = list(self.sites) if self.sites is not None else None
        data["capture_steps"] = list(self.capture_steps) if self.capture_steps is not None else None
        data["head_mask"] = {k: list(v) for k, v in self.head_mask.items()} if self.head_mask else None
        data["interventions"] = [iv.describe() if hasattr(iv, "describe") else {"type": type(iv).__name__}
                                 for iv in self.interventions]
        data["lsac"] = self.lsac.describe() if self.lsac is not None else None
        data["maps"] = self.maps.to_dict() if self.maps is not None else None
        return data


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
