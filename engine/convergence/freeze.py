"""Causal freezing (SAM-Audio probing Sec. 2.2 / 4.2): freeze one site's attention from step
``s`` on and measure how far the output moves from the full run.

Freezing reuses the site's attention probabilities of step ``s`` at every later step — the same
mechanism as LSAC (:class:`engine.convergence.lsac.LSAC` with one site). The sweep runs every
site × freeze step and returns heatmaps (sites × freeze steps) of every
:func:`engine.convergence.quality.deviation` metric; :func:`write_sweep` writes them as
``freeze_sweep.npz``, ``freeze_sweep.csv`` and ``freeze_sweep.png``.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.convergence.lsac import LSAC, freeze_step_at, with_lsac
from engine.convergence.quality import RunDigest, deviation, digest
from engine.types import EngineError, GenerationRequest
from engine.work_items import Runner, counter, in_process

DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 0.75)
METRICS = ("mel_distance", "wave_distance", "iou", "ap", "pearson", "map_l1")


@dataclass
class FreezeSweep:
    """Deviation of each (site, freeze step) run from the full run: ``metrics[name]`` is
    ``(sites, freeze steps)``."""

    sites: list[str]
    kinds: list[str]
    freeze_steps: list[int]
    steps: int
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    stable: list[bool] | None = None


def default_freeze_steps(steps: int) -> list[int]:
    """Freeze steps at T/8, T/4, T/2 and 3T/4 (unique, within 1..T−2)."""
    return sorted({s for s in (freeze_step_at(f, steps) for f in DEFAULT_FRACTIONS) if s <= steps - 2})


@dataclass(frozen=True)
class FreezeRun:
    """Work item: the request with ``site`` frozen from ``step`` on (row ``row``, column ``column``)."""

    row: int
    column: int
    site: str
    step: int


def run_freeze(backend, base: GenerationRequest, reference: RunDigest, item: FreezeRun) -> dict[str, float]:
    """The deviations of one frozen run from the full run ``reference`` (pure: no files)."""
    run = backend.generate(with_lsac(base, LSAC({item.site: item.step}, name="freeze")))
    return deviation(digest(run), reference)


@dataclass(frozen=True)
class FreezeJob:
    """The worker job of ``convergence --sweep --ray``: loads the backend once per worker and
    computes :class:`FreezeRun` items against the driver's full run ``reference``."""

    model: str
    device: str
    base: GenerationRequest
    reference: RunDigest

    def setup(self):
        from engine.backends.registry import load_backend

        return load_backend(self.model, device=self.device)

    def run(self, backend, item: FreezeRun) -> dict[str, float]:
        return run_freeze(backend, self.base, self.reference, item)


def sweep_request(request: GenerationRequest) -> GenerationRequest:
    """The request of the full and the frozen runs: cross-attention capture for the map metrics."""
    return dataclasses.replace(request, capture=True, sites=None, per_head=False, capture_steps=None)


def freeze_sweep(backend, request: GenerationRequest, sites: list[str] | None = None,
                 freeze_steps: list[int] | None = None, report=None,
                 progress: Callable[[int, int], None] | None = None,
                 runner_for: Callable[[RunDigest], Runner] | None = None) -> FreezeSweep:
    """Run the full request once (with cross-attention capture for the map metrics), then once
    per site × freeze step with that site frozen (one :class:`FreezeRun` work item each, here or
    through ``runner_for(reference)``: ``convergence --sweep --ray``, whose workers call
    :func:`run_freeze`); ``report`` (a ConvergenceReport) adds the stable / fast class of each site."""
    known = {s.name: s for s in backend.sites()}
    names = [s.name for s in backend.sites()] if sites is None else list(sites)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EngineError(f"unknown site {unknown[0]!r}: pick names from `python main.py sites`")
    if request.steps < 2:
        raise EngineError("freezing needs at least 2 denoising steps: raise --steps")
    fs = default_freeze_steps(request.steps) if freeze_steps is None else sorted(set(freeze_steps))
    bad = [s for s in fs if not 0 <= s < request.steps]
    if bad or not fs:
        raise EngineError(f"freeze steps must lie in 0..{request.steps - 1} (got {bad or fs})")
    base = sweep_request(request)
    reference = digest(backend.generate(base))
    runner = runner_for(reference) if runner_for is not None else \
        in_process(lambda item: run_freeze(backend, base, reference, item))
    items = [FreezeRun(i, j, site, step) for i, site in enumerate(names) for j, step in enumerate(fs)]
    out = {m: np.full((len(names), len(fs)), np.nan) for m in METRICS}
    for item, values in zip(items, runner(items, counter(len(items), progress)), strict=True):
        for m, v in values.items():
            out[m][item.row, item.column] = v
    stable = None
    if report is not None:
        cls = dict(zip(report.sites, report.stable, strict=True))
        stable = [bool(cls.get(n, False)) for n in names]
    return FreezeSweep(names, [known[n].kind for n in names], fs, request.steps, out, stable)


def load_sweep(path: str | Path) -> FreezeSweep:
    """A sweep written by :func:`write_sweep` (``freeze_sweep.npz``); names, shapes and sizes
    are checked (:mod:`engine.loaders`) before use."""
    from engine.loaders import Checker, read_npz

    check = Checker(f"freeze sweep {path}", "re-run `python main.py convergence --sweep`")
    z = read_npz(path, check)
    for name in ("sites", "kinds", "freeze_steps", "steps"):
        check.key(z, name)
    sites = check.array(z["sites"], "sites", (1,), "U")
    kinds = check.array(z["kinds"], "kinds", (1,), "U")
    steps = check.array(z["freeze_steps"], "freeze_steps", (1,), "iu")
    total = check.whole(int(check.array(z["steps"], "steps", (0,), "iu")), "steps", 1, 1_000_000)
    if kinds.shape != sites.shape or not len(sites) or not len(steps):
        raise check.fail(f"lists {len(sites)} sites, {len(kinds)} kinds and {len(steps)} freeze steps")
    if steps.min() < 0 or steps.max() >= total:
        raise check.fail(f"has freeze steps outside 0..{total - 1}")
    metrics = {}
    for m in METRICS:
        if m in z:
            metrics[m] = check.array(z[m], m, (2,), "f")
            if metrics[m].shape != (len(sites), len(steps)):
                raise check.fail(f"has a {m} table of shape {metrics[m].shape}, expected {(len(sites), len(steps))}")
    return FreezeSweep(sites=[str(s) for s in sites], kinds=[str(k) for k in kinds],
                       freeze_steps=[int(s) for s in steps], steps=total, metrics=metrics)


def write_sweep(sweep: FreezeSweep, folder: str | Path) -> list[Path]:
    """``freeze_sweep.npz`` / ``.csv`` / ``.png`` (mel- and waveform-distance heatmaps)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    npz = folder / "freeze_sweep.npz"
    np.savez(npz, sites=np.array(sweep.sites), kinds=np.array(sweep.kinds),
             freeze_steps=np.array(sweep.freeze_steps), steps=sweep.steps,
             **{m: a for m, a in sweep.metrics.items()})
    table = folder / "freeze_sweep.csv"
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "kind", "class", "freeze_step", *METRICS])
        for i, site in enumerate(sweep.sites):
            cls = "" if sweep.stable is None else ("stable" if sweep.stable[i] else "fast")
            for j, step in enumerate(sweep.freeze_steps):
                w.writerow([site, sweep.kinds[i], cls, step,
                            *[f"{sweep.metrics[m][i, j]:.6g}" for m in METRICS]])
    png = folder / "freeze_sweep.png"
    plot_sweep(sweep, png)
    return [npz, table, png]


def plot_sweep(sweep: FreezeSweep, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(sweep.sites)
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.8 + 0.28 * n), squeeze=False)
    labels = [f"{s}{'' if sweep.stable is None else (' [S]' if sweep.stable[i] else ' [F]')}"
              for i, s in enumerate(sweep.sites)]
    for ax, metric in zip(axes[0], ("mel_distance", "wave_distance"), strict=True):
        im = ax.imshow(sweep.metrics[metric], aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_xticks(range(len(sweep.freeze_steps)), [str(s) for s in sweep.freeze_steps])
        ax.set_yticks(range(n), labels if ax is axes[0][0] else [""] * n, fontsize=6)
        ax.set_xlabel("freeze step")
        ax.set_title(f"{metric.replace('_', ' ')} to the full run")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
