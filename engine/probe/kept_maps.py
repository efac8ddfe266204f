"""The maps a caller builds from a run's frames and holds beside them, for the memory budget.

``analyze`` keeps every context's per-token aggregate, pooled, per-site and per-step maps
(:func:`engine.analysis.aggregate.reduce_views`); ``eval`` one pooled concept map and, with
per-head frames, each cross site's per-head maps (:mod:`engine.evaluation.maps`); the GUI the
layer × step overview's thumbnails and the heatmap's aggregate. Each caller says so with a
:class:`KeptMaps` on ``request.maps``; :func:`engine.probe.budget.plan_capture` takes the maps'
bytes off ``memory_budget_mb`` before it fits the frames, so one budget counts everything a run
keeps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from engine.analysis.aggregate import METHODS, accumulator_bytes, views_bytes
from engine.types import EngineError


@dataclass(frozen=True)
class KeptMaps:
    """What a caller keeps besides the frames (see the module docstring): accumulators (float64)
    and finished maps. The working maps of the one call being mapped (two to five grid-sized
    arrays, measured with tracemalloc) are not counted."""

    grid: tuple[int, int] = (128, 64)  # (T, F) of the maps
    method: str = "mean"  # aggregator of the accumulators
    k: int = 3  # rows of a top-k accumulator
    views: bool = False  # per context: reduce_views' accumulators and float16 per-step maps
    pooled: bool = False  # one accumulator of a token-pooled map (concept map, heatmap aggregate)
    head_maps: bool = False  # a (H, T, F) map per captured cross site (per-head frames)
    thumbnails: tuple[int, int, int] | None = None  # float32 mosaic: cell pitch (t, f), max columns; held twice

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(int(v) for v in self.grid))
        if self.thumbnails is not None:
            object.__setattr__(self, "thumbnails", tuple(int(v) for v in self.thumbnails))

    def validate(self) -> KeptMaps:
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise EngineError(f"the maps' grid needs two sizes >= 1 (got {self.grid})")
        if self.method not in METHODS:
            raise EngineError(f"unknown aggregator {self.method!r}: use one of {', '.join(METHODS)}")
        if self.k < 1 or (self.thumbnails is not None and (len(self.thumbnails) != 3 or min(self.thumbnails) < 1)):
            raise EngineError("the maps' top-k rows and thumbnail sizes must be at least 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["grid"] = list(self.grid)
        data["thumbnails"] = list(self.thumbnails) if self.thumbnails is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeptMaps:
        try:
            return cls(**data).validate()
        except (TypeError, ValueError) as exc:
            raise EngineError(f"the request's maps are damaged ({exc})") from None

    def nbytes(self, cross: dict[str, list[tuple[int, int]]], n_sites: int, n_steps: int,
               total_steps: int) -> int:
        """Bytes the maps hold at their peak. ``cross``: per context, ``(heads, stored keys)`` of each
        captured cross-attention site; ``n_sites``: every captured site; ``n_steps``: captured steps;
        ``total_steps``: the run's steps (the overview's columns)."""
        cell = self.grid[0] * self.grid[1]
        total = 0
        if self.views:
            total += sum(views_bytes(len(sites), n_steps, sites[0][1], self.grid, self.method, self.k)
                         for sites in cross.values() if sites)
        if self.pooled and any(cross.values()):
            total += accumulator_bytes(cell, self.method, self.k)
        if self.head_maps:
            total += sum(accumulator_bytes(h * cell) for sites in cross.values() for h, _ in sites)
        if self.thumbnails is not None:
            pt, pf, columns = self.thumbnails
            total += 2 * 4 * (n_sites * pf) * (min(total_steps, columns) * pt)
        return total
