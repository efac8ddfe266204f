"""``python main.py analyze``: one generation with capture, written to a folder.

The folder is assembled under a hidden temporary name beside the target and renamed into place
only when everything was written, so a failed or cancelled run leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import RunResult
from engine.types import (
    AttentionFrame,
    CancelToken,
    EngineError,
    GenerationRequest,
    Site,
    StepInfo,
)

MAX_STEPS = 1000
MAX_GRID = 4096


@dataclass
class AnalyzeOptions:
    """What ``analyze`` does; mirrors the command-line flags."""

    prompt: str
    out: str
    negative_prompt: str = ""
    model: str = "embedded"
    steps: int = 25
    guidance: float = 3.0
    seed: int = 0
    duration: float = 4.0
    sites: str | None = None
    per_head: bool = False
    device: str = "cpu"
    grid: tuple[int, int] = (128, 64)
    pooling: str = "max"
    keywords: list[str] | None = None
    boundary: str = "nearest"
    aggregator: str = "mean"
    weighting: str = "uniform"
    memory_budget_mb: float = 2048.0
    stream_dir: str | None = None
    figures: bool = True
    lsac: str = "off"  # layer-selective attention caching preset (engine.convergence.lsac)
    lsac_profile: str | None = None
    lsac_budget_mb: float = 1024.0
    lsac_dtype: str = "model"  # or bfloat16 / float16 / float32 (engine.convergence.lsac.CACHE_DTYPES)
    lsac_kinds: tuple[str, ...] = ("self",)  # attention kinds the preset caches


def validate(options: AnalyzeOptions) -> None:
    """Reject bad input before any model is loaded; each message says what to do."""
    if not options.prompt or not options.prompt.strip():
        raise EngineError("empty prompt: give --prompt a description, e.g. --prompt 'bass and drums'")
    if not 1 <= options.steps <= MAX_STEPS:
        raise EngineError(f"--steps must be between 1 and {MAX_STEPS} (got {options.steps})")
    if not math.isfinite(options.guidance) or options.guidance < 0:
        raise EngineError(f"--guidance must be a finite number >= 0 (got {options.guidance})")
    if not math.isfinite(options.duration) or options.duration <= 0:
        raise EngineError(f"--duration must be a positive number of seconds (got {options.duration})")
    t, f = options.grid
    if not (1 <= t <= MAX_GRID and 1 <= f <= MAX_GRID):
        raise EngineError(f"--grid sizes must be between 1 and {MAX_GRID} (got {t}x{f})")
    if options.memory_budget_mb <= 0:
        raise EngineError(f"--memory-budget-mb must be positive (got {options.memory_budget_mb})")


def prepare_output(out: str | Path) -> tuple[Path, Path]:
    """Check the output folder can be written; return (final, temporary) paths."""
    final = Path(out).expanduser().resolve()
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise EngineError(f"output folder {final} already exists and is not empty: choose a new --out")
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
    except OSError as exc:
        raise EngineError(f"cannot write to {parent} ({exc.strerror}): choose a writable --out") from exc
    return final, tmp


def resolve_sites(spec: str | None, sites: list[Site]) -> list[str] | None:
    """``--sites`` as names or indices (comma-separated) → site names; ``None`` = all cross."""
    if spec is None or not spec.strip():
        return None
    by_name = {s.name: s for s in sites}
    by_index = {str(s.index): s for s in sites}
    chosen: list[str] = []
    for item in (p.strip() for p in spec.split(",")):
        site = by_name.get(item) or by_index.get(item)
        if site is None:
            raise EngineError(f"unknown site {item!r}: list them with `python main.py sites --model ...`")
        chosen.append(site.name)
    return chosen


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

    validate(options)
    final, tmp = prepare_output(options.out)
    try:
        backend = load_backend(options.model, device=options.device)
        if options.keywords:
            _check_keywords(options.keywords, backend.tokens(options.prompt))
        request = GenerationRequest(
            prompt=options.prompt,
            negative_prompt=options.negative_prompt,
            seed=options.seed,
            steps=options.steps,
            guidance=options.guidance,
            duration=options.duration,
            sites=resolve_sites(options.sites, backend.sites()),
            per_head=options.per_head,
            memory_budget_mb=options.memory_budget_mb,
            stream_dir=options.stream_dir,
        )
        if options.lsac != "off":
            from engine.convergence.command import lsac_for_request

            request = lsac_for_request(backend, request, options.lsac, options.lsac_profile,
                                       options.lsac_budget_mb, options.lsac_dtype, options.lsac_kinds)
        result = backend.generate(request, _ProgressObserver(progress), cancel)
        bad = [w for w in result.warnings if "NaN" in w or "inf" in w]
        if bad:
            raise EngineError(f"{bad[0]}; try float32, fewer steps or another seed")
        write_outputs(tmp, result, backend.mel_spec(), options)
        os.replace(tmp, final) if not final.exists() else _move_into(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


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


def _move_into(tmp: Path, final: Path) -> None:
    """Replace an empty existing ``final`` folder with ``tmp``."""
    final.rmdir()
    os.replace(tmp, final)


def contexts_of(result: RunResult) -> list[str]:
    """The contexts the run's captured cross-attention sites attend to, main context first."""
    found = sorted({s.context for s in result.sites if s.kind == "cross" and s.name in result.lattices})
    preferred = [c for c in ("text", "t5") if c in found]
    return preferred + [c for c in found if c not in preferred]


def build_maps(result: RunResult, spec, options: AnalyzeOptions) -> dict[str, np.ndarray]:
    """Aggregate, per-site and per-step maps of every context, ready for ``attention.npz``."""
    from engine.analysis.aggregate import aggregate_run
    from engine.analysis.melscale import grid_hz

    policy = {"uniform": "uniform", "sigma-late": "sigma_late"}[options.weighting]
    from engine.analysis.pooling import keyword_indices

    common: dict[str, Any] = {"target": tuple(options.grid), "method": options.aggregator,
                              "step_policy": policy, "boundary": options.boundary}
    arrays: dict[str, np.ndarray] = {}
    for i, context in enumerate(contexts_of(result)):
        agg = aggregate_run(result, context, **common)
        suffix = "" if i == 0 else f"_{context}"
        arrays[f"aggregate{suffix}"] = agg.maps.astype(np.float32)
        arrays[f"tokens{suffix}"] = np.array(agg.tokens)
        pool: dict[str, Any] = {"pooling": options.pooling}
        if options.keywords and i == 0:
            found = keyword_indices(agg.tokens, options.keywords)
            if not found:
                raise EngineError(f"none of the keywords {options.keywords} is a token of the prompt "
                                  f"(tokens: {agg.tokens}): pick words from the prompt")
            pool = {"pooling": "keyword", "keywords": found}
        arrays[f"pooled{suffix}"] = aggregate_run(result, context, **common, **pool).maps.astype(np.float32)
        arrays[f"sites{suffix}"] = np.array(agg.sites)
        arrays[f"site_maps{suffix}"] = np.stack(
            [aggregate_run(result, context, sites=[s], **common).maps for s in agg.sites]
        ).astype(np.float16)
        arrays[f"step_maps{suffix}"] = np.stack(
            [aggregate_run(result, context, steps=[t], **common).maps for t in agg.steps]
        ).astype(np.float16)
        arrays[f"steps{suffix}"] = np.array(agg.steps)
    if not arrays:
        raise EngineError("nothing was captured: choose cross-attention sites or drop --sites")
    arrays["hz"] = grid_hz(spec, options.grid[1])
    arrays["times"] = (np.arange(options.grid[0]) + 0.5) * (len(result.audio) / result.sample_rate) / options.grid[0]
    arrays["sigmas"] = np.asarray(result.sigmas, dtype=np.float64)
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
                     "keywords": options.keywords, "boundary": options.boundary,
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
