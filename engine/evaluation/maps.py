"""From one run's recorded attention to the evaluation's concept map ``(T, F)`` (AIBA Eq. 2–8).

Cross-only (default): the cross-attention sites of the run's main context (``text`` for the
embedded model, ``t5`` for AudioLDM2) are pooled over text tokens and aggregated over sites and
steps with :func:`engine.analysis.aggregate.aggregate_frames` — the same code as ``analyze``.

All sites (ablation ``cross_only=False``): self-attention has keys = queries (``K = Q``), so it has
no text token to pool. Each self call contributes the attention every lattice position *receives*,
``r_k = mean_h mean_q A[h, q, k]``, mapped like a query map (keys share the query lattice). This map
is the same for every class word — it shows where the model looks, not what for. Because a
softmax over ``Q`` keys and one over a few text tokens live on different scales, in this mode
every call's map (cross and self) is divided by its mean over the grid before aggregation.

Pooling ``weighted`` (Eq. 6) needs a relevance ``u_k`` per token; without a class vector in every
model's embedding space, ``u_k = 1`` for the tokens that spell the class word and 0 otherwise
(a soft keyword pooling whose sharpness is ``beta``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.analysis.aggregate import MapAccumulator, aggregate_frames, call_map, step_weights
from engine.analysis.heads import head_maps, label_free_relevance
from engine.analysis.mapping import lattice_to_grid
from engine.analysis.pooling import keyword_indices, normalise_token
from engine.backends.base import RunResult
from engine.types import EngineError

POOLINGS = ("keyword", "mean", "max", "weighted")
AGGREGATORS = ("mean", "max", "topk")
WEIGHTINGS = ("uniform", "sigma_late", "learned")
SPECIAL = {"<s>", "</s>", "<pad>", "<bos>", "<eos>", "<unk>", "[bos]", "[pad]", "[cls]", "[sep]"}


@dataclass(frozen=True)
class MapSettings:
    """How a run becomes one map: the ablation switches of the evaluation."""

    grid: tuple[int, int] = (128, 64)
    pooling: str = "keyword"
    aggregator: str = "mean"
    topk: int = 3
    weighting: str = "uniform"  # "learned" means: use the given layer weights
    alpha: float = 1.0
    beta: float = 4.0
    cross_only: bool = True
    boundary: str = "nearest"

    def check(self) -> None:
        if self.pooling not in POOLINGS:
            raise EngineError(f"unknown --pooling {self.pooling!r}: use one of {', '.join(POOLINGS)}")
        if self.aggregator not in AGGREGATORS:
            raise EngineError(
                f"unknown --aggregator {self.aggregator!r}: use one of {', '.join(AGGREGATORS)}"
            )
        if self.weighting not in WEIGHTINGS:
            raise EngineError(
                f"unknown --weighting {self.weighting!r}: use one of {', '.join(WEIGHTINGS)}"
            )


def main_context(result: RunResult) -> str:
    """The context the prompt words live in: ``text`` or ``t5`` first, else the only one."""
    found = sorted({s.context for s in result.sites if s.kind == "cross" and s.name in result.lattices})
    for pref in ("text", "t5"):
        if pref in found:
            return pref
    if not found:
        raise EngineError("the run recorded no cross-attention site: record cross sites")
    return found[0]


def special_indices(tokens: list[str]) -> list[int]:
    """Indices of special tokens (start, end, padding) — left out of the head scores' 'other' set."""
    return [i for i, t in enumerate(tokens) if t.strip().lower() in SPECIAL or not normalise_token(t)]


def concept_tokens(result: RunResult, word: str) -> tuple[str, list[int], list[str]]:
    """``(context, keyword indices, tokens)`` of the class word in the run's main context."""
    context = main_context(result)
    tokens = list(result.tokens.get(context, []))
    return context, keyword_indices(tokens, [word]), tokens


def time_only(result: RunResult) -> bool:
    """True when every cross site of the run's main context has a ``(T, 1)`` lattice (Stable Audio):
    its maps are broadcast over frequency and carry no frequency information."""
    sites = cross_sites(result, main_context(result))
    return bool(sites) and all(int(result.lattices[s][1]) == 1 for s in sites)


def cross_sites(result: RunResult, context: str) -> list[str]:
    return [s.name for s in result.sites
            if s.kind == "cross" and s.context == context and s.name in result.lattices]


def self_sites(result: RunResult) -> list[str]:
    return [s.name for s in result.sites if s.kind == "self" and s.name in result.lattices]


def _pool_kw(settings: MapSettings, keywords: list[int], n_tokens: int) -> dict:
    if settings.pooling == "keyword":
        return {"pooling": "keyword", "keywords": keywords}
    if settings.pooling == "weighted":
        u = np.zeros(n_tokens)
        u[keywords] = 1.0
        return {"pooling": "weighted", "relevance": u, "beta": settings.beta}
    return {"pooling": settings.pooling}


def received_attention_map(probs: np.ndarray, lattice: tuple[int, int],
                           grid: tuple[int, int], boundary: str = "nearest") -> np.ndarray:
    """Self-attention call ``(H, Q, Q)`` → attention each position receives, on the grid."""
    a = np.asarray(probs, dtype=np.float64)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise EngineError(f"self-attention must be (heads, Q, Q), got {a.shape}")
    return lattice_to_grid(a.mean(axis=(0, 1)), lattice, grid, boundary)


def _unit_mean(g: np.ndarray) -> np.ndarray:
    m = float(np.mean(g))
    return g / m if m > 0 else g


def concept_map(result: RunResult, word: str, settings: MapSettings,
                layer_weights: Mapping[str, float] | None = None) -> np.ndarray:
    """The class word's aggregated map ``(T, F)`` of one run (see module docstring)."""
    settings.check()
    context, keywords, tokens = concept_tokens(result, word)
    n_k = len(tokens)
    first = next((p for (_, s), p in result.frames.items() if s in cross_sites(result, context)), None)
    if first is not None:
        n_k = first.shape[2]
    pool = _pool_kw(settings, keywords, n_k)
    policy = "uniform" if settings.weighting == "learned" else settings.weighting
    if settings.weighting == "learned" and layer_weights is None:
        raise EngineError("learned weighting needs fitted layer weights: run the fit split first")
    weights = layer_weights if settings.weighting == "learned" else None
    cross = cross_sites(result, context)
    if settings.cross_only:
        g, _ = aggregate_frames(result.frames, result.lattices, result.sigmas, sites=cross,
                                method=settings.aggregator, k=settings.topk, step_policy=policy,
                                alpha=settings.alpha, layer_weights=weights, target=settings.grid,
                                boundary=settings.boundary, **pool)
        return g
    selfs = set(self_sites(result))
    if not selfs:
        raise EngineError("all-sites mode needs recorded self-attention: record the self sites too")
    calls = sorted(k for k in result.frames if k[1] in selfs or k[1] in cross)
    sw = step_weights(result.sigmas, policy, settings.alpha) if policy != "uniform" else None
    acc = MapAccumulator(settings.aggregator, settings.topk)
    for step, site in calls:
        w = 1.0 if sw is None else float(sw[step])
        if weights is not None:
            w *= float(weights.get(site, 0.0))
        if w <= 0:
            continue
        probs, lattice = result.frames[(step, site)], result.lattices[site]
        if site in selfs:
            g = received_attention_map(probs, lattice, settings.grid, settings.boundary)
        else:
            g = call_map(probs, lattice, target=settings.grid, boundary=settings.boundary, **pool)
        acc.add(_unit_mean(g), w)
    return acc.result()


def site_maps(result: RunResult, word: str, settings: MapSettings) -> dict[str, np.ndarray]:
    """Per-site maps ``(T, F)`` (uniform mean over steps) of the sites the settings use.

    Input of :func:`engine.analysis.aggregate.fit_layer_weights` (learned layer weighting).
    """
    context, _, _ = concept_tokens(result, word)
    sites = cross_sites(result, context) + ([] if settings.cross_only else self_sites(result))
    return {site: _one_site(result, word, settings, site) for site in sites}


def _one_site(result: RunResult, word: str, settings: MapSettings, site: str) -> np.ndarray:
    """The uniform mean over steps of one site's map (as :func:`concept_map` would weigh it)."""
    context, keywords, tokens = concept_tokens(result, word)
    steps = sorted(t for t, s in result.frames if s == site)
    if not steps:
        raise EngineError(f"site {site} recorded no frame")
    maps = []
    for t in steps:
        probs = result.frames[(t, site)]
        if site in cross_sites(result, context):
            g = call_map(probs, result.lattices[site], target=settings.grid,
                         boundary=settings.boundary, **_pool_kw(settings, keywords, probs.shape[2]))
        else:
            g = received_attention_map(probs, result.lattices[site], settings.grid, settings.boundary)
        maps.append(g if settings.cross_only else _unit_mean(g))
    return np.mean(maps, axis=0)


@dataclass
class HeadData:
    """Per-head evidence of one run: concept maps per head and the label-free log-ratio."""

    maps: dict[str, np.ndarray]  # site -> (H, T, F)
    log_ratio: dict[str, np.ndarray]  # site -> (H,), mean over the run's steps


def head_data(result: RunResult, word: str, grid: tuple[int, int],
              boundary: str = "nearest") -> HeadData:
    """Each cross site's per-head concept maps and ``s_h`` (needs per-head frames).

    ``s_h`` compares the class word's tokens with the prompt's other words; special tokens
    (start, end, padding) are left out unless the prompt has no other word (then they are the
    comparison).
    """
    context, keywords, tokens = concept_tokens(result, word)
    sites = cross_sites(result, context)
    frames = {k: v for k, v in result.frames.items() if k[1] in sites}
    maps = head_maps(frames, result.lattices, keywords, target=grid, boundary=boundary)
    n_k = next(iter(frames.values())).shape[2]
    ignore = [i for i in special_indices(tokens) if i < n_k] + list(range(len(tokens), n_k))
    if not set(range(n_k)) - set(ignore) - set(keywords):
        ignore = []  # a one-word prompt: compare the concept with the special tokens instead
    rel = label_free_relevance([frames], [keywords], ignore=[ignore])
    return HeadData(maps=maps, log_ratio={s: r.mean for s, r in rel.items()})
