"""Aggregation of (site, step) maps into one map (AIBA Eq. 8) and learned layer weights.

Each call ``(step, site)`` yields a map ``G`` (``(T, F)`` or ``(K, T, F)``) and a weight
``w = w_layer(site) · w_step(step)``. Calls with weight 0 are left out; the remaining weights
are scaled to mean 1 (so uniform weights give the plain aggregators), and

* ``mean``: ``(1/N) Σ w·G`` (a weighted mean),
* ``max``: ``max w·G`` per cell,
* ``topk``: mean of the ``k`` largest ``w·G`` per cell (``k`` clipped to ``N``).

Step policies: ``uniform``; ``sigma_late``: ``w(τ) ∝ exp(−α·σ_τ)`` (late, low-noise steps
count more). Layer weights: a ``dict[site, weight]`` (sites not named get 0), e.g. from
:func:`fit_layer_weights`. Maps are combined streaming, so memory stays at one map plus the
top-k buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from engine.analysis.mapping import DEFAULT_TARGET, lattice_to_grid
from engine.analysis.pooling import pool_tokens, reduce_heads
from engine.types import EngineError

METHODS = ("mean", "max", "topk")
STEP_POLICIES = ("uniform", "sigma_late")


def step_weights(
    sigmas: Sequence[float], policy: str = "uniform", alpha: float = 1.0
) -> np.ndarray:
    """Weights over steps summing to 1: uniform, or ``∝ exp(−α·σ_τ)`` for ``sigma_late``."""
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise EngineError("step weighting needs a non-empty 1-D list of sigmas (one per step)")
    if policy == "uniform":
        return np.full(s.size, 1.0 / s.size)
    if policy == "sigma_late":
        if not np.all(np.isfinite(s)):
            raise EngineError("sigma-late weighting needs finite sigmas: use policy 'uniform'")
        z = np.exp(-alpha * (s - s.min()))  # shift for stability; cancels in the normalisation
        return z / z.sum()
    raise EngineError(f"unknown step policy {policy!r}: use one of {', '.join(STEP_POLICIES)}")


class MapAccumulator:
    """Streaming ``mean`` / ``max`` / ``topk`` of weighted maps (see module docstring).

    Scaling all weights by ``c = N/Σw`` scales every aggregator by ``c``, so maps are combined
    with raw weights as they come and the result is scaled once at the end.
    """

    def __init__(self, method: str = "mean", k: int = 3) -> None:
        if method not in METHODS:
            raise EngineError(f"unknown aggregator {method!r}: use one of {', '.join(METHODS)}")
        if method == "topk" and k < 1:
            raise EngineError(f"top-K aggregation needs k ≥ 1, got {k}")
        self.method, self.k = method, k
        self._acc: np.ndarray | None = None
        self._n = 0
        self._wsum = 0.0

    def add(self, grid: np.ndarray, weight: float = 1.0) -> None:
        """Combine one map with its (unnormalised, non-negative) weight; weight 0 is skipped."""
        if weight < 0 or not np.isfinite(weight):
            raise EngineError(f"map weights must be finite and ≥ 0, got {weight}")
        if weight == 0:
            return
        x = float(weight) * np.asarray(grid, dtype=np.float64)
        if self._acc is None:
            if self.method == "topk":
                self._acc = np.full((self.k,) + x.shape, -np.inf)
                self._acc[0] = x
            else:
                self._acc = x.copy()
        elif self._acc.shape[-x.ndim :] != x.shape:
            raise EngineError(
                f"map shape {x.shape} differs from earlier maps {self._acc.shape}: use one target grid"
            )
        elif self.method == "mean":
            self._acc += x
        elif self.method == "max":
            np.maximum(self._acc, x, out=self._acc)
        else:
            self._push_topk(x)
        self._n += 1
        self._wsum += float(weight)

    def _push_topk(self, x: np.ndarray) -> None:
        """Insert into the per-cell buffer kept sorted descending (rows start at −inf)."""
        assert self._acc is not None
        carry = x
        for row in self._acc:
            hi = np.maximum(row, carry)
            carry = np.minimum(row, carry)
            row[...] = hi

    @property
    def count(self) -> int:
        """How many maps were combined."""
        return self._n

    def result(self) -> np.ndarray:
        """The aggregated map, with weights scaled to mean 1 over the combined maps."""
        if self._acc is None:
            raise EngineError(
                "nothing to aggregate: no map with a positive weight (check sites, steps, head mask)"
            )
        scale = self._n / self._wsum
        if self.method == "mean":
            return self._acc * (scale / self._n)
        if self.method == "topk":
            return self._acc[: min(self.k, self._n)].mean(axis=0) * scale
        return self._acc * scale


def aggregate_maps(
    maps: np.ndarray, weights: Sequence[float] | None = None, method: str = "mean", k: int = 3
) -> np.ndarray:
    """Aggregate stacked maps ``(N, ...)`` along axis 0 with optional per-map weights."""
    m = np.asarray(maps, dtype=np.float64)
    w = np.ones(m.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (m.shape[0],):
        raise EngineError(f"{w.size} weights for {m.shape[0]} maps: give one weight per map")
    acc = MapAccumulator(method, k)
    for g, wi in zip(m, w, strict=True):
        acc.add(g, float(wi))
    return acc.result()


def call_map(
    probs: np.ndarray,
    lattice: tuple[int, int],
    *,
    pooling: str = "none",
    relevance: Sequence[float] | None = None,
    beta: float = 1.0,
    keywords: Sequence[int] | None = None,
    head_mask: Sequence[bool] | None = None,
    target: tuple[int, int] = DEFAULT_TARGET,
    boundary: str = "nearest",
    query_offset: int = 0,
    time_only: str = "broadcast",
) -> np.ndarray | None:
    """One call's ``(H, Q, K)`` attention → ``(T, F)`` (pooled) or ``(K, T, F)`` (``pooling="none"``).

    Returns ``None`` when ``head_mask`` keeps no head of this site.
    """
    a = reduce_heads(probs, head_mask)
    if a is None:
        return None
    p = pool_tokens(a, pooling, relevance=relevance, beta=beta, keywords=keywords)
    return lattice_to_grid(p, lattice, target, boundary, query_offset, time_only)


@dataclass
class Aggregate:
    """An aggregated map and where it came from."""

    maps: np.ndarray  # (K, T, F) per token, or (T, F) pooled
    tokens: list[str]
    context: str
    sites: list[str]
    steps: list[int]
    settings: dict[str, Any] = field(default_factory=dict)


def _calls_and_step_weights(frames, sites, steps, sigmas, step_policy: str, alpha: float):
    """The recorded ``(step, site)`` calls of the chosen sites and steps in order, and the step
    weights of ``step_policy`` (``None`` for uniform); one EngineError line when nothing matches or
    a weighted step has no sigma."""
    site_set = set(sites) if sites is not None else None
    step_set = set(steps) if steps is not None else None
    calls = sorted(
        key
        for key in frames
        if (site_set is None or key[1] in site_set) and (step_set is None or key[0] in step_set)
    )
    if not calls:
        raise EngineError(
            "no recorded frames match the chosen sites and steps: record them or widen the choice"
        )
    if step_policy == "uniform":
        return calls, None
    if sigmas is None or max(s for s, _ in calls) >= len(sigmas):
        raise EngineError("sigma-late weighting needs the run's sigmas for every recorded step")
    return calls, step_weights(sigmas, step_policy, alpha)


def aggregate_frames(
    frames: Mapping[tuple[int, str], np.ndarray],
    lattices: Mapping[str, tuple[int, int]],
    sigmas: Sequence[float] | None = None,
    *,
    sites: Iterable[str] | None = None,
    steps: Iterable[int] | None = None,
    method: str = "mean",
    k: int = 3,
    step_policy: str = "uniform",
    alpha: float = 1.0,
    layer_weights: Mapping[str, float] | None = None,
    head_mask: Mapping[str, Sequence[bool]] | None = None,
    query_offsets: Mapping[str, int] | None = None,
    **map_kw: Any,
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Aggregate recorded frames ``{(step, site): (H, Q, K)}`` over sites and steps (Eq. 8).

    ``map_kw`` goes to :func:`call_map` (``pooling``, ``relevance``, ``beta``, ``keywords``,
    ``target``, ``boundary``, ``time_only``). ``sigmas[step]`` feeds the step policy. Returns the
    map and the ``(step, site)`` calls that contributed.
    """
    calls, sw_all = _calls_and_step_weights(frames, sites, steps, sigmas, step_policy, alpha)
    acc = MapAccumulator(method, k)
    used: list[tuple[int, str]] = []
    for step, site in calls:
        w = 1.0 if step_policy == "uniform" else float(sw_all[step])
        if layer_weights is not None:
            w *= float(layer_weights.get(site, 0.0))
        if w <= 0:
            continue
        if site not in lattices:
            raise EngineError(f"no lattice known for site {site}: the run result must list it")
        mask = head_mask.get(site) if head_mask is not None else None
        offset = query_offsets.get(site, 0) if query_offsets is not None else 0
        g = call_map(
            frames[(step, site)], lattices[site], head_mask=mask, query_offset=offset, **map_kw
        )
        if g is None:
            continue
        acc.add(g, w)
        used.append((step, site))
    return acc.result(), used


def aggregate_run(
    result: Any,
    context: str | None = None,
    *,
    sites: Iterable[str] | None = None,
    **kw: Any,
) -> Aggregate:
    """Per-token aggregate ``(K, T, F)`` of a :class:`~engine.backends.base.RunResult`.

    Uses the cross-attention sites of one ``context`` (required when the run has several, e.g.
    AudioLDM2's ``t5`` and ``loa``). A streamed run (``result.frames_dir``) is read back from its
    stream folder one frame at a time, so every frame counts. Token labels come from ``result.tokens[context]``; when the
    frames have more keys than labels, the extra keys are named ``#<index>``. ``kw`` goes to
    :func:`aggregate_frames` (``pooling`` defaults to ``"none"`` here).
    """
    cross = [s for s in result.sites if s.kind == "cross"]
    contexts = sorted({s.context for s in cross})
    if context is None:
        if len(contexts) != 1:
            raise EngineError(f"the run attends to several contexts {contexts}: choose one")
        context = contexts[0]
    chosen = [s.name for s in cross if s.context == context]
    if sites is not None:
        wanted = set(sites)
        chosen = [s for s in chosen if s in wanted]
    if not chosen:
        raise EngineError(
            f"no cross-attention site attends to context {context!r}: choose one of {contexts}"
        )
    kw.setdefault("pooling", "none")
    sigmas = getattr(result, "sigmas", None)
    frames = result.frames
    if getattr(result, "frames_dir", None) is not None:  # streamed: every frame is on disk
        from engine.probe.frame_store import StoredFrames

        frames = StoredFrames(result.frames_dir)
    maps, used = aggregate_frames(frames, result.lattices, sigmas, sites=chosen, **kw)
    labels = list(result.tokens.get(context, []))
    if kw["pooling"] == "none":
        n_k = maps.shape[0]
        labels = labels[:n_k] + [f"#{i}" for i in range(len(labels), n_k)]
    settings = {
        key: val for key, val in kw.items() if isinstance(val, str | int | float | bool | tuple)
    }
    return Aggregate(
        maps=maps,
        tokens=labels,
        context=context,
        sites=sorted({s for _, s in used}),
        steps=sorted({t for t, _ in used}),
        settings=settings,
    )


def fit_layer_weights(
    layer_maps: np.ndarray, targets: np.ndarray, normalise: bool = True
) -> np.ndarray:
    """Non-negative layer weights summing to 1 that best rebuild ground-truth maps (held-out set).

    ``layer_maps``: ``(E, L, T, F)`` per example and layer (already aggregated over steps);
    ``targets``: ``(E, T, F)`` (e.g. binary activity masks). Solves
    ``min_w ‖Σ_ℓ w_ℓ·G_ℓ − M‖²`` s.t. ``w ≥ 0`` with :func:`scipy.optimize.nnls` over all cells of
    all examples, then divides by ``Σ w``. ``normalise`` first scales each map and target to max 1
    (so layers with small raw attention are not favoured by scale). No gradient touches the model.
    """
    g = np.asarray(layer_maps, dtype=np.float64)
    m = np.asarray(targets, dtype=np.float64)
    if g.ndim != 4 or m.shape != (g.shape[0],) + g.shape[2:]:
        raise EngineError(
            f"layer maps {g.shape} and targets {m.shape} must be (E, L, T, F) and (E, T, F)"
        )
    if normalise:
        g = g / np.maximum(g.max(axis=(2, 3), keepdims=True), 1e-12)
        m = m / np.maximum(m.max(axis=(1, 2), keepdims=True), 1e-12)
    design = np.moveaxis(g, 1, -1).reshape(-1, g.shape[1])  # (E·T·F, L)
    w, _ = nnls(design, m.reshape(-1))
    if w.sum() <= 0:
        raise EngineError(
            "no layer correlates with the targets: check the maps and ground-truth masks"
        )
    return w / w.sum()


@dataclass
class RunViews:
    """Every map ``attention.npz`` holds for one context, from one pass over the frames."""

    aggregate: np.ndarray  # (K, T, F) float64
    pooled: np.ndarray  # (T, F) float64
    site_maps: np.ndarray  # (S, K, T, F) float16, in ``sites`` order
    step_maps: np.ndarray  # (N, K, T, F) float16, in ``steps`` order
    sites: list[str]
    steps: list[int]
    peak_bytes: int  # the most bytes the reduction held at once (accumulators + finished maps)


def accumulator_bytes(cells: int, method: str = "mean", k: int = 3) -> int:
    """Bytes a :class:`MapAccumulator` of maps with ``cells`` values holds (float64; ``k`` rows for top-k)."""
    return 8 * (k if method == "topk" else 1) * int(cells)


def views_bytes(n_sites: int, n_steps: int, n_keys: int, target: tuple[int, int],
                method: str = "mean", k: int = 3) -> int:
    """Bytes :func:`reduce_views` holds at its peak: the accumulators (aggregate, pooled, one per
    site, the current step) plus the finished float16 step maps."""
    cell = int(target[0]) * int(target[1])
    acc = accumulator_bytes(cell * (n_keys * (n_sites + 2) + 1), method, k)  # sites + aggregate + step, pooled
    return acc + 2 * n_steps * n_keys * cell


def reduce_views(
    frames: Mapping[tuple[int, str], np.ndarray],
    lattices: Mapping[str, tuple[int, int]],
    sigmas: Sequence[float] | None = None,
    *,
    sites: Iterable[str],
    pool: Mapping[str, Any] | None = None,
    method: str = "mean",
    k: int = 3,
    step_policy: str = "uniform",
    alpha: float = 1.0,
    **map_kw: Any,
) -> RunViews:
    """Aggregate, pooled, per-site and per-step maps of ``sites`` in one pass over ``frames``.

    Each frame is read once (``frames`` may be a lazy store such as
    :class:`engine.probe.frame_store.StoredFrames`), so memory stays at one frame plus the
    accumulators (:func:`views_bytes`), whatever the number of frames. Calls are combined in
    ``(step, site)`` order with the weights of :func:`aggregate_frames`, so every map equals the
    one :func:`aggregate_frames` gives for the same selection; a step's map is finished (cast to
    float16) as soon as the next step begins.
    """
    calls, sw_all = _calls_and_step_weights(frames, sites, None, sigmas, step_policy, alpha)
    pool_kw = dict(pool or {"pooling": "mean"})
    total, pooled = MapAccumulator(method, k), MapAccumulator(method, k)
    per_site: dict[str, MapAccumulator] = {}
    step_done: list[np.ndarray] = []
    step_ids: list[int] = []
    current: MapAccumulator | None = None
    current_step = -1
    peak = 0

    def held() -> int:
        accs = [total, pooled, *per_site.values()] + ([current] if current is not None else [])
        return (sum(a._acc.nbytes for a in accs if a._acc is not None)
                + sum(m.nbytes for m in step_done))

    def close_step() -> None:
        if current is not None and current.count:
            step_done.append(current.result().astype(np.float16))
            step_ids.append(current_step)

    for step, site in calls:
        w = 1.0 if step_policy == "uniform" else float(sw_all[step])
        if w <= 0:
            continue
        if site not in lattices:
            raise EngineError(f"no lattice known for site {site}: the run result must list it")
        if step != current_step:
            peak = max(peak, held())
            close_step()
            current, current_step = MapAccumulator(method, k), step
        probs = frames[(step, site)]
        g = call_map(probs, lattices[site], pooling="none", **map_kw)
        gp = call_map(probs, lattices[site], **pool_kw, **map_kw)
        if g is None or gp is None:
            continue
        total.add(g, w)
        pooled.add(gp, w)
        per_site.setdefault(site, MapAccumulator(method, k)).add(g, w)
        assert current is not None
        current.add(g, w)
    peak = max(peak, held())
    close_step()
    names = sorted(per_site)
    return RunViews(
        aggregate=total.result(),
        pooled=pooled.result(),
        site_maps=np.stack([per_site[s].result().astype(np.float16) for s in names]),
        step_maps=np.stack(step_done),
        sites=names,
        steps=step_ids,
        peak_bytes=max(peak, held()),
    )
