"""The one seam between the views and ``engine.analysis``: captured frames → 2-D maps for display.

Everything scientific is delegated to ``engine.analysis``; this module only picks what a view
asks for (one frame, one head, a token subset) and hands it over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from engine.analysis.aggregate import METHODS, STEP_POLICIES, aggregate_frames, call_map
from engine.analysis.heads import (
    RunRelevance,
    relevance_over_runs,
    select_heads,
)
from engine.analysis.melscale import band_centres_hz, grid_hz
from engine.types import EngineError, MelSpec

AGGREGATORS = METHODS
WEIGHTINGS = STEP_POLICIES
POOLINGS = ("max", "mean")


def _pool_kw(token_ids: Sequence[int] | None, pooling: str) -> dict:
    """Token pooling: every token with ``pooling``, or the mean of the chosen tokens."""
    if token_ids:
        return {"pooling": "keyword", "keywords": list(token_ids)}
    return {"pooling": pooling}


def _offset(probs: np.ndarray, lattice: tuple[int, int]) -> int:
    """Leading queries that are not on the lattice (e.g. a global token)."""
    return max(0, int(np.asarray(probs).shape[1]) - lattice[0] * lattice[1])


def site_map(
    probs: np.ndarray,
    lattice: tuple[int, int],
    grid: tuple[int, int],
    token_ids: Sequence[int] | None = None,
    head: int | None = None,
    pooling: str = "mean",
    head_mask: Sequence[bool] | None = None,
) -> np.ndarray | None:
    """``(T, F)`` map of one frame on ``grid``: one head or the (masked) head mean, tokens pooled.

    ``token_ids`` None pools every token. Returns ``None`` when the mask keeps no head.
    """
    p = np.asarray(probs)
    if head is not None:
        if not 0 <= head < p.shape[0]:
            raise EngineError(f"head {head} does not exist (the frame has {p.shape[0]}): pick another head")
        head_mask = [i == head for i in range(p.shape[0])]
    if head_mask is not None and len(head_mask) != p.shape[0]:
        head_mask = None  # head-mean frames: masks cannot apply
    m = call_map(p, lattice, head_mask=head_mask, target=grid, query_offset=_offset(p, lattice),
                 **_pool_kw(token_ids, pooling))
    return None if m is None else m.astype(np.float32)


def aggregate(
    frames: Mapping[tuple[int, str], np.ndarray],
    lattices: Mapping[str, tuple[int, int]],
    token_ids: Sequence[int] | None,
    grid: tuple[int, int],
    pooling: str = "mean",
    aggregator: str = "mean",
    weighting: str = "uniform",
    sigmas: np.ndarray | None = None,
    head_masks: Mapping[str, Sequence[bool]] | None = None,
    top_k: int = 3,
) -> np.ndarray:
    """Aggregate the frames' maps on ``grid`` over their sites and steps (AIBA Eq. 8)."""
    if not frames:
        return np.zeros(grid, dtype=np.float32)
    masks = None
    if head_masks:
        masks = {}
        for (_, site), p in frames.items():
            mask = head_masks.get(site)
            if mask is not None and len(mask) == p.shape[0]:
                masks[site] = mask
    offsets = {site: _offset(p, lattices[site]) for (_, site), p in frames.items()}
    try:
        g, _ = aggregate_frames(
            frames, lattices, sigmas, method=aggregator, k=top_k, step_policy=weighting,
            head_mask=masks, query_offsets=offsets, target=grid, **_pool_kw(token_ids, pooling),
        )
    except EngineError:
        if masks and not any(any(m) for m in masks.values()):
            return np.zeros(grid, dtype=np.float32)  # every head switched off
        raise
    return np.asarray(g, dtype=np.float32)


def relevance_concept(n_tokens: int, token_ids: Sequence[int] | None) -> list[int]:
    """The tokens relevance is scored for: the chosen ones, else every token after the first
    (empty when nothing would be left to compare with)."""
    concept = list(token_ids) if token_ids else list(range(1, n_tokens))
    return concept if concept and len(concept) < n_tokens else []


class LiveHeadRelevance:
    """Label-free relevance of every head of every per-head site to the chosen tokens (with no
    token chosen, every token after the first: the prompt's words against the start token;
    head-mean sites left out), over one run's growing frames: each frame is read once, when it
    is added (during the run), so the scores at the end only average what is already computed."""

    def __init__(self) -> None:
        self._key: tuple = ()
        self._run: RunRelevance | None = None

    def add(self, key: tuple, frames: Mapping[tuple[int, str], np.ndarray], n_tokens: int,
            token_ids: Sequence[int] | None) -> None:
        """Read ``frames`` (new or not) for the run / context ``key`` and the chosen tokens."""
        concept = relevance_concept(n_tokens, token_ids)
        if (key, tuple(concept)) != self._key:
            self._key, self._run = (key, tuple(concept)), RunRelevance(concept) if concept else None
        if self._run is not None:
            self._run.add({k: v for k, v in frames.items() if np.asarray(v).shape[0] > 1})

    def scores(self, key: tuple, frames: Mapping[tuple[int, str], np.ndarray], n_tokens: int,
               token_ids: Sequence[int] | None) -> dict[str, np.ndarray]:
        """The scores of ``frames`` (reading only the frames not added yet)."""
        self.add(key, frames, n_tokens, token_ids)
        means = self._run.means() if self._run is not None else {}
        return {site: rel.score for site, rel in relevance_over_runs([means]).items()} if means else {}


def top_heads(scores: Mapping[str, np.ndarray], k: int) -> dict[str, list[bool]]:
    """Masks keeping the ``k`` most relevant heads over all sites."""
    total = sum(len(v) for v in scores.values())
    return select_heads(scores, int(np.clip(k, 1, max(total, 1))), "top")


def grid_centres_hz(spec: MelSpec, n_bins: int) -> np.ndarray:
    """Centre Hz of each of ``n_bins`` frequency bins of a map on the analysis grid."""
    return grid_hz(spec, n_bins)


def mel_centres_hz(spec: MelSpec) -> np.ndarray:
    """Centre frequency in Hz of each mel band (low first), for the Hz axis."""
    return band_centres_hz(spec)


def selected_map(run, sel, head_masks: Mapping[str, Sequence[bool]], grid: tuple[int, int]) -> np.ndarray | None:
    """The ``(T, F)`` map a :class:`gui.workspace.Selection` asks for on ``run`` (None: no data yet).

    ``site`` mode: that site at that step (one head or the masked head mean). ``aggregate`` mode:
    every recorded site of the same context and every step up to the selected one.
    """
    if sel.site is None or not run.frames:
        return None
    if sel.mode == "aggregate":
        context = run.context_of(sel.site)
        frames = {
            k: v for k, v in run.frames.items() if k[0] <= sel.step and run.context_of(k[1]) == context
        }
        if not frames:
            return None
        return aggregate(
            frames, run.lattices, sel.tokens, grid, sel.pooling, sel.aggregator, sel.weighting,
            run.sigmas, head_masks,
        )
    probs = run.frames.get((sel.step, sel.site))
    if probs is None:
        return None
    head = sel.head if sel.head is not None and sel.head < probs.shape[0] else None
    mask = None if head is not None else head_masks.get(sel.site)
    m = site_map(probs, run.lattices[sel.site], grid, sel.tokens, head, sel.pooling, mask)
    return np.zeros(grid, dtype=np.float32) if m is None else m
