"""What steer-and-listen keeps and computes, without Qt: the A/B records, the clips and their
bounded cache, the key that says two recipes give the same audio, the preview's step count and
the α prefetch grid (used by :mod:`gui.steer_listen`)."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from engine.interventions.caa import ALPHA_MAX, Steer
from engine.types import GenerationRequest, MelSpec

ABKind = Literal["steer", "mask"]
ClipKind = Literal["preview", "prefetch", "run"]
PREVIEW_FRACTION = 0.125  # a preview runs this share of the recipe's steps (3 of 25)…
PREVIEW_MIN_STEPS = 2  # …but at least this many (never more than the recipe)
PREFETCH_STEP = 1.0  # α between grid points: one arrow-key step of the sliders
PREFETCH_RADIUS = 2  # grid points on each side of the current α
CACHE_CLIPS = 24  # clips the cache keeps (least recently used go first)
CACHE_RUNS = 2 * PREFETCH_RADIUS  # captured prefetch results kept whole (one α grid)…
CACHE_RUN_MB = 512.0  # …holding at most this many MB of frames together


@dataclass(frozen=True)
class RunSpec:
    """One generation as the window starts it: model, device and request."""

    model: str
    device: str
    request: GenerationRequest

    def changed(self, **changes: Any) -> RunSpec:
        return RunSpec(self.model, self.device, replace(self.request, **changes))


@dataclass
class PendingAB:
    """An A/B in the making: ``a`` (the reference) and ``b`` (the change); the run ids once started."""

    kind: ABKind
    a: RunSpec
    b: RunSpec
    a_id: int | None = None
    b_id: int | None = None


@dataclass(frozen=True)
class ABPair:
    """An A/B the player was switched to."""

    kind: ABKind
    a_id: int
    b_id: int


@dataclass(frozen=True)
class Clip:
    """Audio of one recipe: a slider preview (fewer steps), a prefetched α or a finished run, with
    its mel (the model's own; None: the player computes it from the audio with ``mel_spec``)."""

    audio: np.ndarray
    sample_rate: int
    steps: int
    alphas: tuple[float, ...]
    kind: ClipKind
    mel: np.ndarray | None = None
    mel_spec: MelSpec | None = None

    @classmethod
    def of(cls, result: Any, steps: int, alphas: tuple[float, ...], kind: ClipKind) -> Clip:
        """The clip of a finished generation's ``RunResult``."""
        mel = None if result.mel is None else np.asarray(result.mel)
        return cls(np.asarray(result.audio), int(result.sample_rate), steps, alphas, kind, mel, result.mel_spec)


@dataclass(frozen=True)
class Render:
    """The background render going on, and what it is for."""

    job_id: int
    kind: Literal["preview", "prefetch"]
    key: Hashable
    steps: int
    alphas: tuple[float, ...]
    spec: RunSpec | None = None


class ClipCache:
    """At most ``capacity`` clips by :func:`audio_key`, least recently used dropped first."""

    def __init__(self, capacity: int = CACHE_CLIPS) -> None:
        self.capacity = int(capacity)
        self._clips: OrderedDict[Hashable, Clip] = OrderedDict()

    def get(self, key: Hashable) -> Clip | None:
        clip = self._clips.get(key)
        if clip is not None:
            self._clips.move_to_end(key)
        return clip

    def put(self, key: Hashable, clip: Clip) -> None:
        self._clips[key] = clip
        self._clips.move_to_end(key)
        while len(self._clips) > self.capacity:
            self._clips.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._clips

    def __len__(self) -> int:
        return len(self._clips)


def frame_bytes(result: Any) -> int:
    """Bytes of a run result's frames held in memory."""
    return sum(int(np.asarray(a).nbytes) for a in result.frames.values())


class RunCache:
    """Whole results of captured prefetch renders by (:func:`audio_key`, :func:`capture_key`): a
    release onto a prefetched α adopts one as the run instead of generating it again. At most
    ``capacity`` results and ``max_mb`` of frames; least recently used dropped first; a result
    over ``max_mb`` alone is not kept (its clip still is)."""

    def __init__(self, capacity: int = CACHE_RUNS, max_mb: float = CACHE_RUN_MB) -> None:
        self.capacity, self.max_bytes = int(capacity), int(max_mb * 1e6)
        self._runs: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()

    def put(self, spec: RunSpec, result: Any) -> bool:
        """Keep ``result`` (made from ``spec``); False when it is too large to keep."""
        size = frame_bytes(result)
        key = (audio_key(spec), capture_key(spec))
        self._runs.pop(key, None)
        if size > self.max_bytes:
            return False
        self._runs[key] = (result, size)
        while len(self._runs) > self.capacity or self.nbytes > self.max_bytes:
            self._runs.popitem(last=False)
        return True

    def take(self, spec: RunSpec) -> Any | None:
        """The kept result ``spec`` would generate (removed: it becomes a run of the history)."""
        entry = self._runs.pop((audio_key(spec), capture_key(spec)), None)
        return None if entry is None else entry[0]

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)


def is_steer(iv: Any) -> bool:
    return isinstance(iv, Steer)


def alphas_of(request: GenerationRequest) -> tuple[float, ...]:
    return tuple(iv.alpha for iv in request.interventions if is_steer(iv))


def masks_some_head(request: GenerationRequest) -> bool:
    """The request's head mask switches at least one head off (an all-on mask changes nothing)."""
    return any(not all(flags) for flags in (request.head_mask or {}).values())


def _intervention_key(iv: Any) -> tuple:
    if is_steer(iv):
        return ("steer", id(iv.vectors), tuple(iv.sites), iv.use_renorm, iv.halves, float(iv.alpha))
    return (type(iv).__name__, json.dumps(iv.describe(), sort_keys=True, default=str))


def audio_key(spec: RunSpec) -> tuple:
    """What decides a run's audio (not what it captures): equal keys, equal audio. An all-on
    head mask counts as none."""
    r = spec.request
    masks = tuple(sorted((s, tuple(f)) for s, f in (r.head_mask or {}).items())) if masks_some_head(r) else ()
    lsac = None if r.lsac is None or r.lsac.preset == "off" else (
        r.lsac.preset, r.lsac.dtype, tuple(r.lsac.kinds), r.lsac.profile, id(r.lsac.report), id(r.lsac.sweep))
    return (spec.model, spec.device, r.prompt, r.negative_prompt, int(r.seed), int(r.steps), float(r.guidance),
            float(r.duration), masks, lsac, tuple(_intervention_key(iv) for iv in r.interventions), bool(r.preview))


def capture_key(spec: RunSpec) -> tuple:
    """What decides a run's frames besides its audio: two requests with equal :func:`audio_key`
    and equal capture keys make the same run."""
    r = spec.request
    maps = None if r.maps is None else json.dumps(r.maps.to_dict(), sort_keys=True, default=str)
    return (bool(r.capture), r.sites, r.capture_steps, bool(r.per_head), float(r.memory_budget_mb), r.stream_dir,
            r.nan_policy, maps)


def preview_steps(request: GenerationRequest) -> int:
    """Steps of a slider preview: an eighth of the recipe's (at least 2); all of them for per-step
    steering vectors, which only fit the step count they were computed for."""
    if any(is_steer(iv) and iv.vectors.per_step for iv in request.interventions):
        return request.steps
    return min(request.steps, max(PREVIEW_MIN_STEPS, round(request.steps * PREVIEW_FRACTION)))


def prefetch_grid(alpha: float, step: float = PREFETCH_STEP, radius: int = PREFETCH_RADIUS) -> list[float]:
    """The α values around ``alpha``, nearest first (+1, −1, +2, −2 steps), within ±ALPHA_MAX."""
    out = []
    for k in range(1, radius + 1):
        for sign in (1, -1):
            a = round(alpha + sign * k * step, 6)
            if abs(a) <= ALPHA_MAX:
                out.append(a)
    return out
