"""What ``python main.py convergence`` and ``analyze --lsac`` do (headless, no Qt)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.cluster import ClusterSpec
from engine.convergence.diagnostics import ConvergenceReport, diagnose, plot_entropy
from engine.convergence.lsac import (
    DEFAULT_BUDGET_MB,
    LSAC,
    preset_named,
    with_lsac,
)
from engine.output_dir import Output
from engine.recipe import Recipe
from engine.site_choice import resolve_sites
from engine.types import EngineError, GenerationRequest


@dataclass(frozen=True, kw_only=True)
class ConvergenceOptions(Recipe):
    """Options of the ``convergence`` command (mirror its flags)."""

    out: str
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
    cluster: ClusterSpec = ClusterSpec()  # where the freezing sweep's runs go (--ray); the rest runs here


def resolve_site_list(spec: str | None, backend) -> list[str] | None:
    """``--sites`` as names or indices, or ``all`` / ``self`` / ``cross``; ``None`` = every site."""
    if spec is None or not spec.strip() or spec.strip() == "all":
        return None
    sites = backend.sites()
    if spec.strip() in ("self", "cross"):
        return [s.name for s in sites if s.kind == spec.strip()]
    return resolve_sites(spec, sites)


def run_convergence(options: ConvergenceOptions,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Diagnose (``convergence.json/.csv/.png``), optionally sweep freezing and compare LSAC."""
    options.validate()
    options.cluster.validate()
    if options.cluster.distributed and not options.sweep:
        raise EngineError("--ray runs the freezing sweep on a cluster: add --sweep (the diagnosis runs here)")
    if options.steps < 2:
        raise EngineError(f"--steps must be at least 2 for convergence (got {options.steps})")
    for p in options.presets:
        preset_named(p)
    with Output(options.out) as claim:
        _convergence(options, claim.work, progress)
    return claim.final


def _convergence(options: ConvergenceOptions, out: Path, progress: Callable[[int, int], None] | None) -> None:
    """The body of :func:`run_convergence`, writing into the claimed folder ``out``."""
    from engine.backends.registry import load_backend

    backend = load_backend(options.model, device=options.device)
    request = GenerationRequest(prompt=options.prompt, seed=options.seed, steps=options.steps,
                                guidance=options.guidance, duration=options.duration, capture=False)
    sites = resolve_site_list(options.sites, backend)
    report, _ = diagnose(backend, request, sites, late_fraction=options.late_fraction,
                         quantile=options.quantile, group=options.group, pads=options.pads)
    report.save(out / "convergence.json")
    report.write_csv(out / "convergence.csv")
    plot_entropy(report, out / "convergence.png")
    sweep = None
    if options.sweep:
        from engine.cluster import cluster_session
        from engine.convergence.freeze import FreezeJob, freeze_sweep, sweep_request, write_sweep
        from engine.work_items import on_cluster

        def runner_for(reference):
            return on_cluster(FreezeJob(options.model, options.device, sweep_request(request), reference),
                              options.cluster)

        with cluster_session(options.cluster):
            sweep = freeze_sweep(backend, request, sites, options.freeze_steps, report, progress,
                                 runner_for if options.cluster.distributed else None)
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


def resolve_lsac(backend, request: GenerationRequest) -> GenerationRequest:
    """``request`` with its :class:`~engine.recipe.LsacSpec` turned into the LSAC intervention
    (first in ``interventions``); unchanged when LSAC is off. The stable / fast split comes from
    the spec's report (when it covers this model's sites), its ``profile`` (a ``convergence.json``;
    a ``freeze_sweep.npz`` beside it sets the freeze steps) or a diagnostic run of the request."""
    spec = request.lsac
    if spec is None or not spec.active:
        return request
    spec.validate()
    known = {s.name for s in backend.sites()}
    report, sweep = spec.report, spec.sweep
    if report is not None and not set(report.sites) <= known:
        report, sweep = None, None  # a diagnosis of another model
    if report is None and spec.profile:
        report = ConvergenceReport.load(spec.profile)
        if not set(report.sites) <= known:
            raise EngineError(f"the profile {spec.profile} was made for another model: "
                              "run `python main.py convergence` with this --model")
        beside = Path(spec.profile).expanduser().parent / "freeze_sweep.npz"
        if beside.is_file():
            from engine.convergence.freeze import load_sweep

            sweep = load_sweep(beside)
    if report is None:
        report, _ = diagnose(backend, dataclasses.replace(request, capture=False, lsac=None))
    if sweep is not None and not set(sweep.sites) <= set(report.sites):
        sweep = None  # a sweep of another model
    lsac = LSAC.from_preset(report, spec.preset, request.steps, spec.budget_mb, kinds=tuple(spec.kinds),
                            sweep=sweep, cache_dtype=spec.dtype)
    return with_lsac(request, lsac)
