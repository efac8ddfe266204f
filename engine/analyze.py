"""``python main.py analyze``: one generation with capture, written to a folder.

The folder is claimed with :class:`engine.output_dir.Output`: assembled under a hidden temporary
name beside the target and renamed into place only when everything was written, so a failed,
cancelled or killed run leaves nothing half-written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import RunResult
from engine.convergence.command import resolve_lsac
from engine.output_dir import Output
from engine.probe.kept_maps import KeptMaps
from engine.recipe import LIMITS, LsacSpec, Recipe, check_float, check_int
from engine.site_choice import resolve_sites
from engine.types import (
    AttentionFrame,
    CancelToken,
    EngineError,
    GenerationRequest,
    StepInfo,
)


@dataclass(frozen=True, kw_only=True)
class AnalyzeOptions(Recipe):
    """What ``analyze`` does: the run recipe, what to capture and how to map it."""

    out: str
    sites: str | None = None
    per_head: bool = False
    grid: tuple[int, int] = (128, 64)
    pooling: str = "max"
    keywords: tuple[str, ...] | None = None
    boundary: str = "nearest"
    aggregator: str = "mean"
    weighting: str = "uniform"
    memory_budget_mb: float = 2048.0
    stream_dir: str | None = None
    figures: bool = True
    lsac: LsacSpec | None = None  # layer-selective attention caching (engine.convergence.lsac)

    def validate(self, *, require_prompt: bool = True) -> AnalyzeOptions:
        """Reject bad input before any model is loaded; each message says what to do."""
        super().validate(require_prompt=require_prompt)
        t, f = self.grid
        check_int("grid time size", t, 1, LIMITS.grid_max)
        check_int("grid mel size", f, 1, LIMITS.grid_max)
        check_float("memory budget (MB)", self.memory_budget_mb, 0.0, LIMITS.memory_budget_max_mb, low_open=True)
        if self.lsac is not None:
            self.lsac.validate()
        return self


class _ProgressObserver:
    """Counts steps for a progress callable; frames are kept by the backend's recorder."""

    def __init__(self, progress: Callable[[int, int], None] | None) -> None:
        self.progress = progress

    def on_frame(self, frame: AttentionFrame) -> None:
        return None

    def on_step(self, info: StepInfo) -> None:
        if self.progress is not None:
            self.progress(info.step + 1, info.total)


def analyze(
    options: AnalyzeOptions,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Run the analysis and return the output folder (see the README for its contents)."""
    from engine.backends.registry import load_backend

    options.validate()
    recipe = options
    with Output(options.out) as claim:
        backend = load_backend(recipe.model, device=recipe.device)
        if options.keywords:
            _check_keywords(list(options.keywords), backend.tokens(recipe.prompt))
        request = GenerationRequest(
            **vars(recipe.settings()),
            sites=resolve_sites(options.sites, backend.sites()),
            per_head=options.per_head,
            memory_budget_mb=options.memory_budget_mb,
            stream_dir=options.stream_dir,
            lsac=options.lsac,
            maps=kept_maps(options),
        )
        request = resolve_lsac(backend, request)
        result = backend.generate(request, _ProgressObserver(progress), cancel)
        bad = [w for w in result.warnings if "NaN" in w or "inf" in w]
        if bad:
            raise EngineError(f"{bad[0]}; try float32, fewer steps or another seed")
        write_outputs(claim.work, result, backend.mel_spec(), options)
    return claim.final


def kept_maps(options: AnalyzeOptions) -> KeptMaps:
    """The maps ``analyze`` builds (:func:`build_maps`), for the memory budget to count."""
    return KeptMaps(grid=tuple(options.grid), method=options.aggregator, views=True)


def _check_keywords(words: list[str], tokens: dict[str, list[str]]) -> None:
    """Fail before generating when no keyword is a token of the prompt."""
    from engine.analysis.pooling import keyword_indices

    for toks in tokens.values():
        try:
            if keyword_indices(toks, words):
                return
        except EngineError:
            continue
    raise EngineError(f"none of the keywords {words} is a word of the prompt: pick --keywords from the prompt")


def contexts_of(result: RunResult) -> list[str]:
    """The contexts the run's captured cross-attention sites attend to, main context first."""
    found = sorted({s.context for s in result.sites if s.kind == "cross" and s.name in result.lattices})
    preferred = [c for c in ("text", "t5") if c in found]
    return preferred + [c for c in found if c not in preferred]


def frame_source(result: RunResult):
    """Where the run's frames are: the stream folder when frames were streamed (read back one at a
    time, :class:`~engine.probe.frame_store.StoredFrames`), else the frames held in memory."""
    if result.frames_dir is not None:
        from engine.probe.frame_store import StoredFrames

        return StoredFrames(result.frames_dir)
    return result.frames


def build_maps(result: RunResult, spec, options: AnalyzeOptions) -> dict[str, np.ndarray]:
    """Aggregate, per-site and per-step maps of every context, ready for ``attention.npz``.

    Maps come from every recorded frame: when the run streamed its frames to disk they are read
    back one at a time (:func:`~engine.analysis.aggregate.reduce_views`, bounded memory); the raw
    frames then stay in the stream folder (``run.json``'s ``frames_dir``) instead of the npz.
    """
    from engine.analysis.aggregate import reduce_views
    from engine.analysis.melscale import grid_hz
    from engine.analysis.pooling import keyword_indices

    policy = {"uniform": "uniform", "sigma-late": "sigma_late"}[options.weighting]
    frames = frame_source(result)
    arrays: dict[str, np.ndarray] = {}
    for i, context in enumerate(contexts_of(result)):
        chosen = [s.name for s in result.sites if s.kind == "cross" and s.context == context]
        first = next((k for k in frames if k[1] in set(chosen)), None)
        if first is None:
            continue
        n_k = int(np.shape(frames[first])[-1])
        labels = list(result.tokens.get(context, []))
        labels = labels[:n_k] + [f"#{j}" for j in range(len(labels), n_k)]
        pool: dict[str, Any] = {"pooling": options.pooling}
        if options.keywords and i == 0:
            found = keyword_indices(labels, list(options.keywords))
            if not found:
                raise EngineError(f"none of the keywords {options.keywords} is a token of the prompt "
                                  f"(tokens: {labels}): pick words from the prompt")
            pool = {"pooling": "keyword", "keywords": found}
        views = reduce_views(frames, result.lattices, result.sigmas, sites=chosen, pool=pool,
                             method=options.aggregator, step_policy=policy,
                             target=tuple(options.grid), boundary=options.boundary)
        suffix = "" if i == 0 else f"_{context}"
        arrays[f"aggregate{suffix}"] = views.aggregate.astype(np.float32)
        arrays[f"tokens{suffix}"] = np.array(labels)
        arrays[f"pooled{suffix}"] = views.pooled.astype(np.float32)
        arrays[f"sites{suffix}"] = np.array(views.sites)
        arrays[f"site_maps{suffix}"] = views.site_maps
        arrays[f"step_maps{suffix}"] = views.step_maps
        arrays[f"steps{suffix}"] = np.array(views.steps)
    if not arrays:
        raise EngineError("nothing was captured: choose cross-attention sites or drop --sites")
    arrays["hz"] = grid_hz(spec, options.grid[1])
    arrays["times"] = (np.arange(options.grid[0]) + 0.5) * (len(result.audio) / result.sample_rate) / options.grid[0]
    arrays["sigmas"] = np.asarray(result.sigmas, dtype=np.float64)
    if result.frames_dir is None:
        for (step, site), probs in sorted(result.frames.items()):
            arrays[f"frame/{step}/{site}"] = np.asarray(probs)
    for site, lattice in result.lattices.items():
        arrays[f"lattice/{site}"] = np.asarray(lattice)
    return arrays


def write_outputs(folder: Path, result: RunResult, spec, options: AnalyzeOptions) -> None:
    """Write audio.wav, run.json, attention.npz and the figures into ``folder``."""
    import soundfile as sf

    arrays = build_maps(result, spec, options)
    sf.write(folder / "audio.wav", np.asarray(result.audio, dtype=np.float32), result.sample_rate)
    np.savez_compressed(folder / "attention.npz", **arrays)
    run = {
        "recipe": result.recipe,
        "analysis": {"grid": list(options.grid), "pooling": options.pooling,
                     "keywords": list(options.keywords) if options.keywords else None, "boundary": options.boundary,
                     "aggregator": options.aggregator, "weighting": options.weighting},
        "mel_spec": spec.to_dict(),
        "tokens": result.tokens,
        "sites": [s.to_dict() for s in result.sites],
        "lattices": {k: list(v) for k, v in result.lattices.items()},
        "warnings": result.warnings,
        "elapsed_s": result.elapsed_s,
        "sample_rate": result.sample_rate,
        "frames_dir": result.frames_dir,
    }
    (folder / "run.json").write_text(json.dumps(run, indent=2, default=str))
    if options.figures:
        from engine.figures import write_figures

        write_figures(folder, result, spec, arrays, pooling=options.pooling)
