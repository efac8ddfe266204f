"""Layer-selective attention caching (LSAC, SAM-Audio probing Sec. 2.4 / 4.4).

For each planned site with freeze step ``s``: steps ``< s`` run the stock processor; at step
``s`` ``softmax(QKᵀ/√d + mask)`` of **every** batch item (both CFG halves) is computed once (fp32),
cached, and the step's output is made from it (the same output as the stock processor's, up to
rounding); at every later step the query–key product is skipped: only ``V = to_v(ctx)``,
``probs @ V`` (GQA: query head ``h`` uses K/V head ``h // (heads // kv_heads)``) and the output
projection run. RoPE (Stable Audio ``attn1``) touches only Q and K, so it is baked into the
cache. A freeze step at (or after) the last step caches nothing, so it reproduces the full run
exactly.

Presets turn a :class:`~engine.convergence.diagnostics.ConvergenceReport` into a plan for ``T``
steps (``⌈f·T⌉``, clipped to ``1..T−1``; the paper's Eq. 5 is not legible in our copy, so the
fractions follow its Sec. 4.2 results: stable layers freeze safely from T/4, fast ones from
3T/4). Presets plan **self-attention sites only** by default (:data:`DEFAULT_KINDS`). Given a
causal freezing sweep (``convergence --sweep``), :func:`plan_from_sweep` replaces the table below:
each site freezes at the earliest swept step whose measured deviation is within the preset's
tolerance (:data:`SWEEP_TOLERANCE`):

============  =======================  ==========================  =========================
preset        stable sites             moderate sites (fast, ≤ q75)  other fast sites
============  =======================  ==========================  =========================
safe          T/2                      —                           —
balanced      T/4                      3T/4                        —
aggressive    T/4                      T/2                         3T/4
============  =======================  ==========================  =========================

The cache lives on the model's device in the model's dtype, or in ``cache_dtype`` when given
(``"bfloat16"`` halves an fp32 model's cache; on CPUs with AVX-512 BF16 it made the embedded model's
cached ``probs @ V`` about 2.4× faster, but on Stable Audio Open at published size it was slower than
fp32 (docs/PERFORMANCE.md); the product then runs in that dtype); its size is estimated before the run
(:func:`estimate_cache_bytes`) and enforced while it runs: sites that do not fit the budget are
left uncached, with a warning in :attr:`LSAC.warnings` (also in ``describe()``, which the run's
recipe records).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.probe.attention_core import AttentionCall, DifferentialCall, attention_probs
from engine.probe.cfg_layout import CfgLayout
from engine.probe.run_context import RunContext, StepClock
from engine.probe.site_processors import SiteCall, site_processor_for
from engine.recipe import LSAC_CHOICES  # noqa: F401  (callers import it from here too)
from engine.types import EngineError, GenerationRequest

# Presets cache self-attention only (SAM-Audio's LSAC targets the self-attention topology). On the
# embedded model v2, whose cross-attention carries the prompt, caching the "stable" cross sites too
# made Balanced deviate more than compute-matched naive step reduction (3 of 6 pairs); self-only
# beats it in 6 of 6 pairs at every preset (docs/RESULTS.md). Pass kinds=("self", "cross") to opt in.
DEFAULT_KINDS: tuple[str, ...] = ("self",)
STOCK_PROCESSORS = ("AttnProcessor2_0", "AttnProcessor", "StableAudioAttnProcessor2_0", "AceStepAttnProcessor2_0",
                    "StableAudio3SelfAttnProcessor", "StableAudio3CrossAttnProcessor")
DEFAULT_BUDGET_MB = 1024.0
CACHE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                        "float16": torch.float16}


def cache_dtype_named(name: str | None) -> torch.dtype | None:
    """``None``/``"model"``: the model's dtype; else one of :data:`CACHE_DTYPES`."""
    if name is None or str(name).lower() in ("", "model", "auto"):
        return None
    key = str(name).lower().replace("bf16", "bfloat16").replace("fp16", "float16").replace("fp32", "float32")
    if key not in CACHE_DTYPES:
        raise EngineError(f"unknown LSAC cache dtype {name!r}: use model, {', '.join(CACHE_DTYPES)}")
    return CACHE_DTYPES[key]


@dataclass(frozen=True)
class Preset:
    """Freeze points of a preset as fractions of the step count (``None``: not cached)."""

    name: str
    stable_at: float
    moderate_at: float | None = None
    fast_at: float | None = None
    moderate_quantile: float = 0.75


PRESETS: dict[str, Preset] = {
    "safe": Preset("safe", 0.5),
    "balanced": Preset("balanced", 0.25, 0.75),
    "aggressive": Preset("aggressive", 0.25, 0.5, 0.75),
}


def preset_named(name: str) -> Preset:
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise EngineError(f"unknown LSAC preset {name!r}: use one of {', '.join(LSAC_CHOICES)}")
    return PRESETS[key]


def freeze_step_at(fraction: float, steps: int) -> int:
    """``⌈fraction · steps⌉`` clipped to ``1 .. steps − 1``."""
    return int(min(steps - 1, max(1, math.ceil(fraction * steps - 1e-9))))


def plan_from_preset(report, preset: str | Preset, steps: int,
                     kinds: tuple[str, ...] = DEFAULT_KINDS) -> dict[str, int]:
    """Site → freeze step for ``steps`` denoising steps from a convergence report."""
    p = preset if isinstance(preset, Preset) else preset_named(preset)
    if steps < 2:
        raise EngineError(f"LSAC needs at least 2 steps (got {steps})")
    moderate = set(report.moderate_sites(p.moderate_quantile))
    plan: dict[str, int] = {}
    for site, kind, stable in zip(report.sites, report.kinds, report.stable, strict=True):
        if kind not in kinds:
            continue
        frac = p.stable_at if stable else (p.moderate_at if site in moderate else p.fast_at)
        if frac is not None:
            step = freeze_step_at(frac, steps)
            if step < steps - 1:  # freezing at the last step saves nothing
                plan[site] = step
    return plan


# Per-site deviation a preset accepts when a causal freezing sweep is available: the mean |Δ| of the
# model-scale mel against the full run (1 unit = 40 dB), so 0.1 / 0.2 / 0.4 dB per frozen site.
SWEEP_TOLERANCE: dict[str, float] = {"safe": 0.0025, "balanced": 0.005, "aggressive": 0.01}


def plan_from_sweep(sweep, preset: str | Preset, steps: int, kinds: tuple[str, ...] = DEFAULT_KINDS,
                    metric: str = "mel_distance", tolerance: float | None = None) -> dict[str, int]:
    """Site → freeze step from a causal freezing sweep (:class:`~engine.convergence.freeze.FreezeSweep`):
    each site of ``kinds`` freezes at the earliest swept step whose measured ``metric`` is within
    the preset's tolerance (:data:`SWEEP_TOLERANCE`); sites over it at every swept step are not
    cached. Swept steps are rescaled to ``steps`` as fractions of the sweep's step count."""
    p = preset if isinstance(preset, Preset) else preset_named(preset)
    if steps < 2:
        raise EngineError(f"LSAC needs at least 2 steps (got {steps})")
    if metric not in sweep.metrics:
        raise EngineError(f"the freeze sweep has no {metric!r} (it has {', '.join(sweep.metrics)})")
    tol = SWEEP_TOLERANCE[p.name] if tolerance is None else float(tolerance)
    values = np.asarray(sweep.metrics[metric], dtype=np.float64)
    order = np.argsort(sweep.freeze_steps)
    plan: dict[str, int] = {}
    for i, (site, kind) in enumerate(zip(sweep.sites, sweep.kinds, strict=True)):
        if kind not in kinds:
            continue
        for j in order:
            if np.isfinite(values[i, j]) and values[i, j] <= tol:
                step = freeze_step_at(sweep.freeze_steps[j] / sweep.steps, steps)
                if step < steps - 1:
                    plan[site] = step
                break
    return plan


def cache_shapes(backend, request: GenerationRequest) -> dict[str, tuple[int, int, int, int]]:
    """Site → ``(batch, heads, Q, K)`` of its cached probabilities (all queries the site
    computes: Stable Audio's global token and full latent length included)."""
    shapes = backend.frame_shapes(request)
    out = {}
    for site in backend.sites():
        heads, q, k = shapes[site.name]
        if getattr(backend, "family", "") == "stable_audio":
            q = int(backend.pipe.transformer.config.sample_size) + 1
            k = q if site.kind == "self" else k
        out[site.name] = (CfgLayout.of(backend, request).copies, heads, q, k)
    return out


def estimate_cache_bytes(backend, request: GenerationRequest, plan: dict[str, int],
                         itemsize: int = 4) -> dict[str, int]:
    """Bytes the cache of each planned site will take."""
    shapes = cache_shapes(backend, request)
    return {s: math.prod(shapes[s]) * itemsize for s in plan}


def cached_attention_output(call: AttentionCall, probs_t: torch.Tensor) -> torch.Tensor:
    """The output of an attention call given its **transposed** probabilities ``probs_t`` =
    ``(B, heads, K, Q)``: the core's values per K/V head, ``probs @ V`` (GQA by grouping), the
    core's output projection."""
    value = call.values(expand=False)  # (B, kv, K, d)
    batch, kv_heads = value.shape[:2]
    group = call.heads // kv_heads
    # (V^T P^T)^T: with P^T stored contiguous (B, heads, K, Q) the product has the long query
    # axis as its wide dimension, about twice as fast on CPU as P @ V for small head widths
    v_t = value.transpose(-1, -2).unsqueeze(2)  # (B, kv, 1, d, K)
    p_t = probs_t.view(batch, kv_heads, group, probs_t.shape[-2], probs_t.shape[-1])
    # the product runs in the cache's dtype (a reduced-precision cache is the point of storing it so)
    out = torch.matmul(v_t.to(p_t.dtype), p_t).to(value.dtype).view(batch, call.heads, call.head_dim, -1)
    return call.output(out.permute(0, 3, 1, 2).reshape(batch, -1, call.heads * call.head_dim))


class LSAC:
    """The attention-cache intervention (see the module docstring).

    ``plan`` maps site → freeze step; ``budget_mb`` bounds the cache. After a run,
    :attr:`cache` is emptied; :attr:`stats` and :attr:`warnings` describe what happened.
    ``keep_cache=True`` keeps the cached probabilities after the run (for inspection/tests).
    """

    def __init__(self, plan: dict[str, int], budget_mb: float = DEFAULT_BUDGET_MB, name: str = "custom",
                 keep_cache: bool = False, cache_dtype: str | None = None) -> None:
        if not isinstance(plan, dict):
            raise EngineError("an LSAC plan maps site names to freeze steps, e.g. {'...attn1': 4}")
        for site, step in plan.items():
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise EngineError(f"freeze step of {site} must be a whole number ≥ 0 (got {step!r})")
        if not budget_mb > 0:
            raise EngineError(f"the LSAC cache budget must be positive (got {budget_mb} MB)")
        self.plan = dict(plan)
        self.active: dict[str, int] = dict(plan)
        self.budget_bytes = int(budget_mb * 2**20)
        self.name = name
        self.keep_cache = keep_cache
        self.cache_dtype = cache_dtype_named(cache_dtype)
        self.clock = StepClock()
        self.cache: dict[str, torch.Tensor] = {}
        self.cached_bytes = 0
        self.peak_bytes = 0
        self.warnings: list[str] = []
        self.stats: dict[str, int] = {"reused_calls": 0, "full_calls": 0, "fallback_calls": 0}
        self._last_step = -1

    @classmethod
    def from_preset(cls, report, preset: str, steps: int, budget_mb: float = DEFAULT_BUDGET_MB,
                    kinds: tuple[str, ...] = DEFAULT_KINDS, sweep=None, **kw: Any) -> LSAC:
        """A preset's plan: from the causal freezing ``sweep`` when one is given (each site's
        measured tolerance), else from the entropy ``report`` (stable / fast fractions)."""
        p = preset_named(preset)
        if sweep is not None:
            return cls(plan_from_sweep(sweep, p, steps, kinds), budget_mb, name=f"{p.name} (sweep)", **kw)
        return cls(plan_from_preset(report, p, steps, kinds), budget_mb, name=p.name, **kw)

    # -- intervention protocol -------------------------------------------------------------
    def begin(self, backend, request: GenerationRequest) -> None:
        self.cache.clear()
        self.cached_bytes = 0
        self.peak_bytes = 0
        self.warnings = []
        self.stats = {"reused_calls": 0, "full_calls": 0, "fallback_calls": 0}
        names = {s.name for s in backend.sites()}
        unknown = sorted(set(self.plan) - names)
        if unknown:
            raise EngineError(f"unknown LSAC site {unknown[0]!r}: pick names from `python main.py sites`")
        late = {s: t for s, t in self.plan.items() if t >= request.steps}
        if late:
            site, step = next(iter(late.items()))
            raise EngineError(f"freeze step {step} of {site} is outside 0..{request.steps - 1}: "
                              f"lower it or raise --steps")
        self.active = self._fit_budget(backend, request)
        self._last_step = request.steps - 1

    def _fit_budget(self, backend, request: GenerationRequest) -> dict[str, int]:
        sizes = estimate_cache_bytes(backend, request, self.plan, self._itemsize(backend))
        if sum(sizes.values()) <= self.budget_bytes:
            return dict(self.plan)
        keep: dict[str, int] = {}
        total = 0
        for site in sorted(self.plan, key=lambda s: (self.plan[s], sizes[s])):
            if total + sizes[site] <= self.budget_bytes:
                keep[site] = self.plan[site]
                total += sizes[site]
        dropped = [s for s in self.plan if s not in keep]
        mb = 2**20
        self.warnings.append(
            f"LSAC cache would need {sum(sizes.values()) / mb:.1f} MB, over its budget of "
            f"{self.budget_bytes / mb:.1f} MB; {len(dropped)} site(s) left uncached "
            f"(e.g. {dropped[0]}); raise the budget to cache them")
        return keep

    def _itemsize(self, backend) -> int:
        if self.cache_dtype is not None:
            return torch.empty((), dtype=self.cache_dtype).element_size()
        try:
            return next(backend.denoiser.parameters()).element_size()
        except (StopIteration, AttributeError):
            return 4

    def pre_hooks(self, backend, run: RunContext) -> list:
        self.clock = run.clock  # the run's step clock
        return []

    def wrap(self, site: str, module, inner):
        if site not in self.active:
            return None
        if type(inner).__name__ not in STOCK_PROCESSORS:
            raise EngineError(f"LSAC at {site} must wrap the stock attention processor, found "
                              f"{type(inner).__name__}: put LSAC first in the request's interventions "
                              "and do not head-mask the sites it caches")
        return site_processor_for(site, inner, self._handle)

    def cached_probs(self, site: str) -> torch.Tensor:
        """The cached probabilities of ``site`` as ``(B, heads, Q, K)`` (needs ``keep_cache``
        after a run); for differential attention (Stable Audio 3) the weights ``p1 − p2``."""
        if site not in self.cache:
            raise EngineError(f"no cached attention for {site}: it was not frozen in the last run")
        return self.cache[site].transpose(-1, -2)

    def end(self) -> None:
        if not self.keep_cache:
            self.cache.clear()
            self.cached_bytes = 0

    def describe(self) -> dict[str, Any]:
        dtype = "model" if self.cache_dtype is None else str(self.cache_dtype).removeprefix("torch.")
        return {"type": "lsac", "preset": self.name, "plan": dict(self.plan), "active": dict(self.active),
                "cache_dtype": dtype,
                "budget_mb": self.budget_bytes / 2**20, "peak_cache_mb": self.peak_bytes / 2**20,
                **self.stats, "warnings": list(self.warnings)}

    # -- the cached processor --------------------------------------------------------------
    def _handle(self, call: SiteCall) -> torch.Tensor:
        site = call.site
        step, freeze = self.clock.step, self.active.get(site)
        if freeze is None or step < freeze or freeze >= self._last_step:
            self.stats["full_calls"] += 1
            return call.run_inner()
        cached = self.cache.get(site)
        core = None
        if step == freeze and cached is None:
            core = call.core()
            cached = self._store(site, core)
            self.stats["full_calls"] += 1
            if cached is None:  # over budget: this site runs uncached
                return call.run_inner()
        elif cached is None:
            self.stats["full_calls"] += 1
            return call.run_inner()
        elif cached.shape[0] != call.batch:
            self.stats["fallback_calls"] += 1  # a call with another batch size (not a CFG step)
            return call.run_inner()
        else:
            self.stats["reused_calls"] += 1
        with torch.no_grad():  # at the freeze step: its output from the probabilities just cached
            return cached_attention_output(core or call.core(), cached)

    def _store(self, site: str, core: AttentionCall) -> torch.Tensor | None:
        """Compute and cache ``site``'s transposed probabilities; ``None`` when over budget."""
        with torch.no_grad():
            # every batch item in one product, (B, H, K, Q) as the cache keeps it
            probs = attention_probs(core, transposed=True)
            if isinstance(core, DifferentialCall) and core.branches == 2:
                # differential attention weighs V with p1 − p2: one matrix holds the call's weights
                probs = probs.sub_(attention_probs(core.with_branch(2), transposed=True))
        probs = probs.to(self.cache_dtype or next(core.attn.parameters()).dtype)
        size = probs.numel() * probs.element_size()
        if self.cached_bytes + size > self.budget_bytes:
            self.warnings.append(
                f"LSAC cache of {site} ({size / 2**20:.1f} MB) does not fit the budget of "
                f"{self.budget_bytes / 2**20:.1f} MB; it runs uncached")
            self.active.pop(site, None)
            return None
        self.cache[site] = probs
        self.cached_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.cached_bytes)
        return probs


def with_lsac(request: GenerationRequest, lsac: LSAC) -> GenerationRequest:
    """A copy of ``request`` whose interventions start with ``lsac`` (it must wrap the stock
    processors)."""
    others = tuple(iv for iv in request.interventions if iv is not lsac)
    return dataclasses.replace(request, interventions=(lsac, *others))
