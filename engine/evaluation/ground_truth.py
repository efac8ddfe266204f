"""Ground truth of one evaluation item on the ``(T, F)`` grid.

The generated clip is *not* the stem: the model invents its own notes and rhythm, so a T–F mask of
the stem does not line up in time with the attention map. What is compared (all on the model's own
mel axis, see ``docs/EVALUATION.md``):

* knowledge-driven, from :mod:`engine.analysis.templates`, broadcast over all time frames:
  ``region`` (the class's AIBA low / mid / high regions, :data:`CLASS_REGIONS`; the default
  headline), ``fundamental`` (the class's range of fundamentals) and ``band`` (fundamentals plus
  main harmonics — on a 0–8 kHz grid it covers all or nearly all bins for most classes, so it is
  reported but degenerate: read it with its base rate).
* ``stem`` (data-driven): the stem's T–F activity (:func:`activity_mask`) aggregated over time — a
  bin is on when it is active in at least ``min_share`` of the stem's active frames — broadcast
  over time. The class's stems in the track are summed first.
* ``output``: the T–F activity mask of the generated clip itself. It is time-aligned, but the
  clip's energy is everything the model made, not one labelled source.

Profiles for the correlations: ``stem`` = :func:`frequency_profile` of the stem audio (per-frame
normalised, mean over frames); ``band`` = the band mask as 0/1; ``output`` = profile of the clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.templates import (
    TEMPLATE_RANGES,
    activity_mask,
    band_tf_mask,
    frequency_profile,
)
from engine.data.slakh import Track
from engine.evaluation.windows import WINDOW_SLACK_S
from engine.types import EngineError, MelSpec

GT_KINDS = (*TEMPLATE_RANGES, "stem", "output")  # band, fundamental, region, stem, output
# kinds whose masks are constant in time (they resolve frequency only): undefined for a time-only map
FREQUENCY_KINDS = (*TEMPLATE_RANGES, "stem")


@dataclass
class GroundTruth:
    """Masks ``(T, F)`` bool and profiles ``(F,)`` of one item, keyed by ground-truth kind."""

    masks: dict[str, np.ndarray]
    profiles: dict[str, np.ndarray]


def class_audio(track: Track, inst_class: str, sample_rate: int, start_s: float,
                duration: float) -> np.ndarray:
    """Sum of the track's stems of ``inst_class`` over ``[start_s, start_s + duration]`` (mono).

    Raises when a stem ends before the window does (more than ``WINDOW_SLACK_S``): a window past
    the end of the audio would be scored against silence.
    """
    stems = [s for s in track.stems if s.inst_class == inst_class]
    if not stems:
        raise EngineError(f"track {track.id} has no {inst_class} stem")
    n = int(round(duration * sample_rate))
    total = np.zeros(n, dtype=np.float64)
    for stem in stems:
        x = stem.load(sample_rate, start_s, start_s + duration).astype(np.float64)
        if x.size < n - WINDOW_SLACK_S * sample_rate:
            end = start_s + x.size / sample_rate
            raise EngineError(f"stem {stem.stem_id} of {track.id} ends at {end:.2f} s, before the "
                              f"window [{start_s:g}, {start_s + duration:g}] s ends: use a shorter "
                              "--duration or a smaller --offset")
        total[: min(n, x.size)] += x[:n]
    return total


def time_aggregated_mask(active: np.ndarray, min_share: float = 0.1) -> np.ndarray:
    """``(F,)`` bins active in at least ``min_share`` of the frames that have any activity."""
    frames = active.any(axis=1)
    if not frames.any():
        return np.zeros(active.shape[1], dtype=bool)
    return active[frames].mean(axis=0) >= min_share


def stem_ground_truth(audio: np.ndarray, sample_rate: int, spec: MelSpec, grid: tuple[int, int],
                      duration: float, threshold_db: float = -30.0,
                      min_share: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``(stem mask (T, F) broadcast over time, stem profile (F,))``; raises for a silent stem."""
    if float(np.max(np.abs(audio))) <= 1e-6:
        raise EngineError("the class is silent in this window: choose another --offset")
    active = activity_mask(audio, sample_rate, spec, grid, threshold_db=threshold_db,
                           duration=duration)
    band = time_aggregated_mask(active, min_share)
    profile = frequency_profile(audio, sample_rate, spec, grid[1])
    return np.broadcast_to(band, grid).copy(), profile


def output_ground_truth(audio: np.ndarray, sample_rate: int, spec: MelSpec, grid: tuple[int, int],
                        threshold_db: float = -30.0) -> tuple[np.ndarray, np.ndarray]:
    """T–F activity ``(T, F)`` and frequency profile of the generated clip itself."""
    mask = activity_mask(audio, sample_rate, spec, grid, threshold_db=threshold_db)
    try:
        profile = frequency_profile(audio, sample_rate, spec, grid[1])
    except EngineError:  # a silent clip: a flat profile (correlations become nan)
        profile = np.full(grid[1], 1.0 / grid[1])
    return mask, profile


def item_ground_truth(inst_class: str, stem_audio: np.ndarray, stem_sr: int, generated: np.ndarray,
                      generated_sr: int, spec: MelSpec, grid: tuple[int, int], duration: float,
                      threshold_db: float = -30.0, min_share: float = 0.1) -> GroundTruth:
    """All ground truths of one item (:data:`GT_KINDS`, see module docstring)."""
    masks = {r: band_tf_mask(inst_class, spec, grid, r) for r in TEMPLATE_RANGES}
    profiles = {r: m[0].astype(np.float64) for r, m in masks.items()}
    masks["stem"], profiles["stem"] = stem_ground_truth(stem_audio, stem_sr, spec, grid, duration,
                                                        threshold_db, min_share)
    masks["output"], profiles["output"] = output_ground_truth(generated, generated_sr, spec, grid,
                                                              threshold_db)
    return GroundTruth(masks=masks, profiles=profiles)
