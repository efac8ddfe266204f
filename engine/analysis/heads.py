"""Per-head relevance to a concept, head selection, selective aggregation, ordered weakening.

Needs per-head frames (``GenerationRequest.per_head=True``), i.e. ``(H, Q, K)`` with ``H > 1``.

Label-free relevance (:func:`label_free_relevance`), per site and head ``h``. For one frame,
with concept tokens ``C`` and the other tokens ``O`` (all keys not in ``C`` and not in ``ignore``,
e.g. padding or an attention-sink start token)::

    s_h = log( mean_q mean_{k∈C} A_h[q, k] + ε ) − log( mean_q mean_{k∈O} A_h[q, k] + ε )

(how much more attention per token the head gives the concept than the rest; 0 = none, ε = 1e-12).
``s`` is averaged over a run's recorded steps; over ``R`` runs (prompts / seeds) with run values
``s_{h,r}`` the score is ``mean_r s_{h,r} − λ·std_r s_{h,r}`` (population std, λ = 1): heads that
prefer the concept strongly *and* consistently rank first. No ground truth is used.

Oracle relevance (:func:`oracle_head_scores`): AP or IoU of each head's concept map against a
ground-truth mask. It uses the labels it is judged by: for analysis only, never for claims of a
label-free method (the critique of the selective-aggregation paper).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.analysis.mapping import DEFAULT_TARGET, lattice_to_grid
from engine.analysis.metrics import average_precision, tf_iou
from engine.types import EngineError

_EPS = 1e-12
HeadKey = tuple[str, int]


def _per_head(probs: np.ndarray, site: str = "") -> np.ndarray:
    a = np.asarray(probs, dtype=np.float64)
    if a.ndim != 3:
        raise EngineError(f"attention must be (heads, queries, keys), got shape {a.shape}")
    if a.shape[0] < 2:
        raise EngineError(
            f"site {site} was recorded head-mean: record with per_head=True for head analysis"
        )
    return a


def concept_log_ratio(
    probs: np.ndarray, concept: Sequence[int], ignore: Sequence[int] = ()
) -> np.ndarray:
    """``s_h`` for one frame ``(H, Q, K)`` (see module docstring): ``(H,)``."""
    a = _per_head(probs)
    n_k = a.shape[2]
    c = np.unique(np.asarray(concept, dtype=np.int64))
    if c.size == 0 or c.min() < 0 or c.max() >= n_k:
        raise EngineError(
            f"concept token indices {list(c)} must be non-empty and within 0..{n_k - 1}"
        )
    other = np.setdiff1d(np.arange(n_k), np.union1d(c, np.asarray(ignore, dtype=np.int64)))
    if other.size == 0:
        raise EngineError("no non-concept tokens remain to compare with: ignore fewer tokens")
    per_key = a.mean(axis=1)  # (H, K): mean over queries
    return np.log(per_key[:, c].mean(axis=1) + _EPS) - np.log(per_key[:, other].mean(axis=1) + _EPS)


@dataclass(frozen=True)
class HeadRelevance:
    """Label-free relevance of one site's heads: ``score = mean − λ·std`` over runs."""

    score: np.ndarray  # (H,)
    mean: np.ndarray  # (H,)
    std: np.ndarray  # (H,)
    runs: int


class RunRelevance:
    """One run's per-site head values ``s`` (mean over its recorded steps), built frame by frame:
    :meth:`add` the frames as they arrive (each is read once), :meth:`means` at any time. A live
    view pays for each frame when it comes in instead of for every frame at the end."""

    def __init__(self, concept: Sequence[int], ignore: Sequence[int] = (), sites: Sequence[str] | None = None) -> None:
        self.concept, self.ignore = list(concept), list(ignore)
        self.sites = None if sites is None else set(sites)
        self._values: dict[str, list[np.ndarray]] = {}
        self._seen: set[tuple[int, str]] = set()

    def add(self, frames: Mapping[tuple[int, str], np.ndarray]) -> None:
        for key, probs in frames.items():
            site = key[1]
            if key in self._seen or (self.sites is not None and site not in self.sites):
                continue
            self._values.setdefault(site, []).append(concept_log_ratio(_per_head(probs, site), self.concept,
                                                                       self.ignore))
            self._seen.add(key)

    def means(self) -> dict[str, np.ndarray]:
        """``mean over steps of s_h`` per site, ``(H,)``."""
        return {site: np.mean(vals, axis=0) for site, vals in self._values.items()}


def relevance_over_runs(per_run: Sequence[Mapping[str, np.ndarray]], lam: float = 1.0) -> dict[str, HeadRelevance]:
    """``mean_r s − λ·std_r s`` per site from each run's :meth:`RunRelevance.means`."""
    per_site: dict[str, list[np.ndarray]] = {}
    for means in per_run:
        for site, value in means.items():
            per_site.setdefault(site, []).append(value)
    if not per_site:
        raise EngineError("no frames of the chosen sites in the runs: record them first")
    out = {}
    for site, vals in per_site.items():
        v = np.stack(vals)  # (R, H)
        mean, std = v.mean(axis=0), v.std(axis=0)
        out[site] = HeadRelevance(mean - lam * std, mean, std, v.shape[0])
    return out


def label_free_relevance(
    runs: Sequence[Mapping[tuple[int, str], np.ndarray]],
    concepts: Sequence[Sequence[int]],
    ignore: Sequence[Sequence[int]] | None = None,
    sites: Sequence[str] | None = None,
    lam: float = 1.0,
) -> dict[str, HeadRelevance]:
    """Per-site head relevance from several runs' frames ``{(step, site): (H, Q, K)}``.

    ``concepts[r]`` (and ``ignore[r]``) are run ``r``'s concept (and ignored) token indices.
    """
    if not runs or len(concepts) != len(runs):
        raise EngineError("give at least one run and one concept token list per run")
    if ignore is not None and len(ignore) != len(runs):
        raise EngineError("give one ignore list per run (or none)")
    per_run = []
    for r, frames in enumerate(runs):
        run = RunRelevance(concepts[r], ignore[r] if ignore is not None else (), sites)
        run.add(frames)
        per_run.append(run.means())
    return relevance_over_runs(per_run, lam)


def head_maps(
    frames: Mapping[tuple[int, str], np.ndarray],
    lattices: Mapping[str, tuple[int, int]],
    keywords: Sequence[int],
    *,
    sites: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    target: tuple[int, int] = DEFAULT_TARGET,
    boundary: str = "nearest",
) -> dict[str, np.ndarray]:
    """Each head's concept map ``(H, T, F)`` per site: keyword pooling, mapped, mean over steps."""
    idx = np.asarray(keywords, dtype=np.int64)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for (step, site), probs in sorted(frames.items()):
        if (sites is not None and site not in sites) or (steps is not None and step not in steps):
            continue
        a = _per_head(probs, site)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= a.shape[2]:
            raise EngineError(
                f"keyword indices {list(idx)} must be non-empty and within 0..{a.shape[2] - 1}"
            )
        pooled = a[:, :, idx].mean(axis=2).T  # (Q, H)
        g = lattice_to_grid(pooled, lattices[site], target, boundary)  # (H, T, F)
        sums[site] = sums.get(site, 0.0) + g
        counts[site] = counts.get(site, 0) + 1
    if not sums:
        raise EngineError("no frames of the chosen sites and steps: record them first")
    return {s: sums[s] / counts[s] for s in sums}


def oracle_head_scores(
    maps: Mapping[str, np.ndarray], gt: np.ndarray, metric: str = "ap", tau: float = 0.5
) -> dict[str, np.ndarray]:
    """ORACLE: each head's AP (or IoU at ``tau``) against the ground-truth mask ``(T, F)``."""
    if metric not in ("ap", "iou"):
        raise EngineError(f"unknown head metric {metric!r}: use 'ap' or 'iou'")
    return {site: np.array([_score(m, gt, metric, tau) for m in hm]) for site, hm in maps.items()}


def _score(g: np.ndarray, gt: np.ndarray, metric: str, tau: float) -> float:
    return average_precision(g, gt) if metric == "ap" else tf_iou(g, gt, tau)


def rank_heads(scores: Mapping[str, np.ndarray]) -> list[HeadKey]:
    """All ``(site, head)`` pairs, most relevant first (ties: site order given, then head)."""
    items = [
        (site, h, float(v)) for site, vals in scores.items() for h, v in enumerate(np.asarray(vals))
    ]
    if any(np.isnan(v) for *_, v in items):
        raise EngineError(
            "head scores contain nan (a head without ground-truth positives?): fix the scores"
        )
    order = sorted(range(len(items)), key=lambda i: -items[i][2])
    return [(items[i][0], items[i][1]) for i in order]


def select_heads(
    scores: Mapping[str, np.ndarray], k: int, which: str = "top"
) -> dict[str, list[bool]]:
    """Head masks keeping the ``k`` most (``top``) or least (``bottom``) relevant heads overall."""
    if which not in ("top", "bottom"):
        raise EngineError(f"unknown selection {which!r}: use 'top' or 'bottom'")
    ranked = rank_heads(scores)
    if not 1 <= k <= len(ranked):
        raise EngineError(f"cannot keep {k} of {len(ranked)} heads: choose 1..{len(ranked)}")
    chosen = set(ranked[:k] if which == "top" else ranked[-k:])
    return {site: [(site, h) in chosen for h in range(len(v))] for site, v in scores.items()}


def selective_map(
    maps: Mapping[str, np.ndarray],
    mask: Mapping[str, Sequence[bool]] | None = None,
) -> np.ndarray:
    """Mean over sites of the mean of each site's kept heads (sites with none kept drop out).

    With per-site maps from :func:`head_maps` this equals ``aggregate_frames(..., method="mean",
    pooling="keyword", head_mask=mask)`` with uniform weights.
    """
    parts = []
    for site, hm in maps.items():
        keep = (
            np.ones(hm.shape[0], bool)
            if mask is None or site not in mask
            else np.asarray(mask[site], bool)
        )
        if keep.shape != (hm.shape[0],):
            raise EngineError(
                f"head mask for {site} has {keep.size} entries for {hm.shape[0]} heads"
            )
        if keep.any():
            parts.append(hm[keep].mean(axis=0))
    if not parts:
        raise EngineError("the head mask keeps no head at all: keep at least one")
    return np.mean(parts, axis=0)


def ordered_weakening(
    maps: Mapping[str, np.ndarray],
    order: Sequence[HeadKey],
    gt: np.ndarray,
    metric: str = "ap",
    tau: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Score of the selective map as heads are removed in ``order`` (most relevant first).

    Returns ``(removed, scores)`` with ``removed = 0 .. N−1`` (at least one head always remains).
    """
    masks = {site: np.ones(hm.shape[0], bool) for site, hm in maps.items()}
    removed, scores = [], []
    for n in range(len(order)):
        if n > 0:
            site, h = order[n - 1]
            masks[site][h] = False
        removed.append(n)
        scores.append(_score(selective_map(maps, masks), gt, metric, tau))
    return np.array(removed), np.array(scores)


def daam_map(
    frames: Mapping[tuple[int, str], np.ndarray],
    lattices: Mapping[str, tuple[int, int]],
    keywords: Sequence[int],
    *,
    sites: Sequence[str] | None = None,
    target: tuple[int, int] = DEFAULT_TARGET,
    boundary: str = "nearest",
) -> np.ndarray:
    """DAAM-style map: the sum over every step, site and head of the concept maps.

    DAAM (Tang et al., 2023) upsamples each head bicubically and sums; here bilinear resizing is
    used (one resampler for all maps). Mapping is linear, so heads are summed before resizing.
    """
    idx = np.asarray(keywords, dtype=np.int64)
    total: np.ndarray | None = None
    for (_, site), probs in frames.items():
        if sites is not None and site not in sites:
            continue
        a = np.asarray(probs, dtype=np.float64)
        pooled = a[:, :, idx].mean(axis=2).sum(axis=0)  # (Q,): sum over heads
        g = lattice_to_grid(pooled, lattices[site], target, boundary)
        total = g if total is None else total + g
    if total is None:
        raise EngineError("no frames of the chosen sites: record them first")
    return total
