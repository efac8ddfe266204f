"""What ``python main.py convergence`` and ``analyze --lsac`` do (headless, no Qt)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.convergence.diagnostics import ConvergenceReport, diagnose, plot_entropy
from engine.convergence.lsac import (
    DEFAULT_BUDGET_MB,
    DEFAULT_KINDS,
    LSAC,
    LSAC_CHOICES,
    preset_named,
    with_lsac,
)
from engine.types import EngineError, GenerationRequest


@dataclass
class ConvergenceOptions:
    """Options of the ``convergence`` command (mirror its flags)."""

    prompt: str
    out: str
    model: str = "embedded"
    steps: int = 25
    guidance: float = 3.0
    seed: int = 0
    duration: float = 4.0
    device: str = "cpu"
    sites: str | None = None
    late_fraction: float = 0.5
    quantile: float = 0.5
    group: str = "kind"
    pads: str = "include"
    sweep: bool = False
    freeze_steps: list[int] | None = None
    compare_prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    presets: list[str] = field(default_factory=lambda: ["safe", "balanced", "aggressive"])
    budget_mb: float = DEFAULT_BUDGET_MB


def resolve_site_list(spec: str | None, backend) -> list[str] | None:
    """``--sites`` as names or indices, or ``all`` / ``self`` / ``cross``; ``None`` = every site."""
    if spec is None or not spec.strip() or spec.strip() == "all":
        return None
    sites = backend.sites()
    if spec.strip() in ("self", "cross"):
        return [s.name for s in sites if s.kind == spec.strip()]
    from engine.analyze import resolve_sites

    return resolve_sites(spec, sites)


def run_convergence(options: ConvergenceOptions,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Diagnose (``convergence.json/.csv/.png``), optionally sweep freezing and compare LSAC."""
    from engine.backends.registry import load_backend

    if not options.prompt.strip():
        raise EngineError("empty prompt: give --prompt a description, e.g. --prompt 'bass and drums'")
    if options.steps < 2:
        raise EngineError(f"--steps must be at least 2 for convergence (got {options.steps})")
    for p in options.presets:
        preset_named(p)
    out = Path(options.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EngineError(f"output folder {out} already exists and is not empty: choose a new --out")
    backend = load_backend(options.model, device=options.device)
    request = GenerationRequest(prompt=options.prompt, seed=options.seed, steps=options.steps,
                                guidance=options.guidance, duration=options.duration, capture=False)
    sites = resolve_site_list(options.sites, backend)
    report, _ = diagnose(backend, request, sites, late_fraction=options.late_fraction,
                         quantile=options.quantile, group=options.group, pads=options.pads)
    out.mkdir(parents=True, exist_ok=True)
    report.save(out / "convergence.json")
    report.write_csv(out / "convergence.csv")
    plot_entropy(report, out / "convergence.png")
    sweep = None
    if options.sweep:
        from engine.convergence.freeze import freeze_sweep, write_sweep

        sweep = freeze_sweep(backend, request, sites, options.freeze_steps, report, progress)
        write_sweep(sweep, out)
    if options.compare_prompts:
        from engine.convergence.compare import compare_lsac, write_comparison

        # with a sweep the presets freeze each site where the sweep measured it tolerable
        cmp = compare_lsac(backend, report, options.compare_prompts, options.seeds, request,
                           tuple(options.presets), options.budget_mb, progress, sweep=sweep)
        write_comparison(cmp, out)
    notes = {"warnings": list(getattr(backend, "warnings", [])), "model_id": backend.model_id,
             "stable": report.stable_sites, "fast": report.fast_sites}
    (out / "summary.json").write_text(json.dumps(notes, indent=1))
    return out


def lsac_for_request(backend, request: GenerationRequest, preset: str, profile: str | None = None,
                     budget_mb: float = DEFAULT_BUDGET_MB, cache_dtype: str | None = None,
                     kinds: tuple[str, ...] = DEFAULT_KINDS) -> GenerationRequest:
    """``request`` with an LSAC preset attached; the stable / fast split comes from ``profile``
    (a ``convergence.json``) or, without one, from a diagnostic run of the same request. A
    ``freeze_sweep.npz`` beside the profile (``convergence --sweep``) sets the freeze steps instead."""
    key = str(preset).strip().lower()
    if key not in LSAC_CHOICES:
        raise EngineError(f"unknown LSAC preset {preset!r}: use one of {', '.join(LSAC_CHOICES)}")
    if key == "off":
        return request
    sweep = None
    if profile:
        report = ConvergenceReport.load(profile)
        known = {s.name for s in backend.sites()}
        if not set(report.sites) <= known:
            raise EngineError(f"the profile {profile} was made for another model: "
                              "run `python main.py convergence` with this --model")
        beside = Path(profile).expanduser().parent / "freeze_sweep.npz"
        if beside.is_file():
            from engine.convergence.freeze import load_sweep

            sweep = load_sweep(beside)
    else:
        report, _ = diagnose(backend, dataclasses.replace(request, capture=False))
    lsac = LSAC.from_preset(report, key, request.steps, budget_mb, kinds=tuple(kinds), sweep=sweep,
                            cache_dtype=cache_dtype)
    return with_lsac(request, lsac)
