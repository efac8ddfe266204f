"""Memory budget of attention capture: estimate before the run, then reduce or stream.

A frame costs ``H × Q × K × 2`` bytes (fp16), ``H`` = heads (per-head) or 1 (head-mean), with the
query lattice and key count of each site for the request's duration and prompt (from the
backend's ``frame_shapes(request)``, derived from the architecture without running the model).
Where the family drops padded keys before storage (``backend.drop_pad_keys``, Stable Audio), ``K``
counts only the kept keys; where a context has padded keys the per-query sink mass (``Q × 4``
bytes, float32) is counted too: the estimate is what the recorder holds.

The maps the caller builds from the frames (``request.maps``, :mod:`engine.probe.kept_maps`:
analyze's per-step maps, eval's concept and per-head maps, the GUI's thumbnails, with their
accumulators) are taken off the budget first; a budget smaller than the maps alone is an error.
When the frames' estimate is over what is left:

* with ``request.stream_dir`` set, every frame is written to disk and only what fits is kept in
  memory;
* otherwise the capture is reduced, in this order, each step reported as a warning: per-head →
  head-mean; then fewer capture steps (evenly spaced over the run, the last step always kept); then fewer sites
  (evenly spaced in call order).
"""

from __future__ import annotations

import numpy as np

from engine.probe.recorder import CapturePlan, human_bytes
from engine.types import EngineError, GenerationRequest, Site

BYTES_PER_VALUE = 2  # float16


def selected_sites(all_sites: list[Site], request: GenerationRequest) -> list[Site]:
    """The sites the request captures (default: every cross-attention site), in call order."""
    if request.sites is None:
        return [s for s in all_sites if s.kind == "cross"]
    by_name = {s.name: s for s in all_sites}
    unknown = [n for n in request.sites if n not in by_name]
    if unknown:
        raise EngineError(
            f"unknown site {unknown[0]!r} in request.sites; pick names from backend.sites()"
        )
    wanted = set(request.sites)
    return [s for s in all_sites if s.name in wanted]


def selected_steps(request: GenerationRequest) -> list[int]:
    """The denoising steps the request captures (default: all)."""
    if request.steps < 1:
        raise EngineError(f"steps must be at least 1, got {request.steps}")
    if request.capture_steps is None:
        return list(range(request.steps))
    bad = [s for s in request.capture_steps if not 0 <= s < request.steps]
    if bad:
        raise EngineError(
            f"capture step {bad[0]} is outside 0..{request.steps - 1}; fix request.capture_steps"
        )
    return sorted(set(request.capture_steps))


def _bytes(shapes: dict[str, tuple[int, int, int, int]], sites: list[Site], n_steps: int,
           per_head: bool) -> int:
    per_step = sum(
        (shapes[s.name][0] if per_head else 1) * shapes[s.name][1] * shapes[s.name][2]
        * BYTES_PER_VALUE + shapes[s.name][3]
        for s in sites
    )
    return per_step * n_steps


def stored_shapes(backend, request: GenerationRequest) -> dict[str, tuple[int, int, int, int]]:
    """Per site: ``(heads, Q, K stored, sink bytes per frame)`` as the recorder will keep them."""
    shapes = backend.frame_shapes(request)
    pads = backend.pad_keys(request) if hasattr(backend, "pad_keys") else {}
    drop = bool(getattr(backend, "drop_pad_keys", False))
    out = {}
    for site in backend.sites():
        if site.name not in shapes:
            continue
        h, q, k = shapes[site.name]
        pad = pads.get(site.context)
        sink = 0
        if site.kind == "cross" and pad is not None and int(pad.shape[0]) == k:
            sink = 4 * q
            if drop:
                k -= int(pad.sum())
        out[site.name] = (h, q, k, sink)
    return out


def estimate_capture_bytes(backend, request: GenerationRequest) -> int:
    """Bytes the request's capture would record (fp16), before any reduction."""
    if not request.capture:
        return 0
    sites = selected_sites(backend.sites(), request)
    shapes = stored_shapes(backend, request)
    return _bytes(shapes, sites, len(selected_steps(request)), request.per_head)


def maps_bytes(backend, request: GenerationRequest) -> int:
    """Bytes the maps of ``request.maps`` will hold (:meth:`~engine.probe.kept_maps.KeptMaps.nbytes`),
    from the architecture and prompt; 0 without capture or maps."""
    if not request.capture or request.maps is None:
        return 0
    sites = selected_sites(backend.sites(), request)
    shapes = stored_shapes(backend, request)
    cross: dict[str, list[tuple[int, int]]] = {}
    for site in sites:
        if site.kind == "cross" and site.name in shapes:
            heads, _, keys, _ = shapes[site.name]
            cross.setdefault(site.context, []).append((heads if request.per_head else 1, keys))
    return request.maps.nbytes(cross, len(sites), len(selected_steps(request)), request.steps)


def _frames_budget(backend, request: GenerationRequest, budget: int) -> tuple[int, int, str | None]:
    """``(maps' bytes, the frames' share of budget, a note when the maps take more than 5 %)``."""
    maps = maps_bytes(backend, request)
    if maps >= budget:
        raise EngineError(f"the maps alone need {human_bytes(maps)}, over the memory budget of "
                          f"{human_bytes(budget)}: raise the memory budget, or use a smaller grid or fewer steps")
    note = None
    if maps > 0.05 * budget:
        note = (f"the maps take {human_bytes(maps)} of the memory budget of {human_bytes(budget)}; "
                f"frames get the remaining {human_bytes(budget - maps)}")
    return maps, budget - maps, note


def _evenly(items: list, n: int) -> list:
    if n >= len(items):
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))
    return [items[i] for i in idx]


def plan_capture(backend, request: GenerationRequest) -> CapturePlan:
    """Sites, steps and reduction for the request, fitted to its memory budget: the maps the caller
    keeps (``request.maps``) first, the frames in what is left."""
    budget = int(request.memory_budget_mb * 2**20)
    if budget <= 0:
        raise EngineError(f"memory_budget_mb must be positive, got {request.memory_budget_mb}")
    if not request.capture:
        return CapturePlan(sites=[], steps=[], per_head=request.per_head, budget_bytes=budget)
    maps, budget, note = _frames_budget(backend, request, budget)
    sites = selected_sites(backend.sites(), request)
    steps = selected_steps(request)
    shapes = stored_shapes(backend, request)
    per_head = request.per_head
    estimate = _bytes(shapes, sites, len(steps), per_head)
    plan = CapturePlan(sites=sites, steps=steps, per_head=per_head, budget_bytes=budget,
                       estimate_bytes=estimate, maps_bytes=maps, warnings=[note] if note else [])
    if estimate <= budget:
        return plan
    if request.stream_dir:
        plan.stream = True
        plan.warnings.append(
            f"capture needs {human_bytes(estimate)}, over the budget of {human_bytes(budget)}; "
            f"frames are streamed to {request.stream_dir}"
        )
        return plan
    if per_head:
        plan.per_head = False
        estimate = _bytes(shapes, sites, len(steps), False)
        plan.warnings.append(
            f"capture over the memory budget ({human_bytes(budget)}): recording the head mean "
            "instead of every head"
        )
    if estimate > budget:
        per_step = _bytes(shapes, sites, 1, False)
        n_steps = max(1, budget // per_step)
        kept = _evenly(steps[::-1], n_steps)[::-1]  # evenly spaced, keeping the last step
        plan.warnings.append(
            f"capture over the memory budget ({human_bytes(budget)}): recording "
            f"{len(kept)} of {len(steps)} steps"
        )
        steps = kept
        estimate = _bytes(shapes, sites, len(steps), False)
    if estimate > budget:
        costs = {s.name: _bytes(shapes, [s], len(steps), False) for s in sites}
        if min(costs.values()) > budget:
            raise EngineError(
                f"memory budget of {human_bytes(budget)} is smaller than one site's frames "
                f"({human_bytes(min(costs.values()))}); raise memory_budget_mb or set stream_dir"
            )
        n_sites = len(sites)
        kept_sites = sites
        while n_sites > 1 and _bytes(shapes, kept_sites, len(steps), False) > budget:
            n_sites -= 1
            kept_sites = _evenly(sites, n_sites)
        if _bytes(shapes, kept_sites, len(steps), False) > budget:
            kept_sites = [min(sites, key=lambda s: costs[s.name])]
        plan.warnings.append(
            f"capture over the memory budget ({human_bytes(budget)}): recording "
            f"{len(kept_sites)} of {len(sites)} sites"
        )
        sites = kept_sites
        estimate = _bytes(shapes, sites, len(steps), False)
    plan.sites, plan.steps, plan.estimate_bytes = sites, steps, estimate
    return plan
