"""How far a run's output and attention maps moved from a reference run of the same request.

* **mel distance**: mean absolute difference of the two mels over their common frames, in the
  model's mel scale (``RunResult.mel``: dB or normalised); a model without a mel (Stable Audio)
  gets the log-mel (dB) of its audio with the backend's :class:`MelSpec`, both runs referred to
  the reference run's peak power.
* **waveform distance**: ``‖a − b‖ / ‖b‖`` over the common samples (``b`` the reference; the RMS
  of ``a − b`` when the reference is silent).
* **map alignment**: the token-pooled cross-attention map (:func:`engine.analysis.aggregate.aggregate_run`)
  scored against the reference run's map binarised to its top 20 % cells with
  :func:`engine.analysis.metrics.alignment_report` (IoU@0.5, AP, Pearson of the frequency
  profiles), plus the mean absolute difference of the two min–max normalised maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.analysis.metrics import alignment_report, binarise, normalise_map
from engine.types import EngineError

MAP_GRID = (64, 32)
TOP_Q = 0.2


def _mel_db(result, spec, ref_power: float | None) -> tuple[np.ndarray, float]:
    from engine.analysis.melscale import mel_spectrogram, power_to_db

    if spec is None:
        raise EngineError("the run has neither a mel nor a mel definition: cannot compare mels")
    power = mel_spectrogram(np.asarray(result.audio, dtype=np.float64), spec, result.sample_rate)
    ref = float(power.max()) if ref_power is None else ref_power
    return power_to_db(power, ref=ref, top_db=None), ref


def mel_distance(result, reference) -> float:
    """Mean |Δ| of the mels (see the module docstring)."""
    if result.mel is not None and reference.mel is not None:
        a, b = np.asarray(result.mel, np.float64), np.asarray(reference.mel, np.float64)
    else:
        b, ref = _mel_db(reference, reference.mel_spec, None)
        a, _ = _mel_db(result, reference.mel_spec, ref)
    n = min(a.shape[0], b.shape[0])
    if n == 0 or a.shape[1:] != b.shape[1:]:
        raise EngineError(f"mels {a.shape} and {b.shape} cannot be compared: use the same model")
    return float(np.abs(a[:n] - b[:n]).mean())


def waveform_distance(result, reference) -> float:
    """Relative L2 distance of the waveforms over their common samples."""
    a, b = np.asarray(result.audio, np.float64), np.asarray(reference.audio, np.float64)
    n = min(a.size, b.size)
    if n == 0:
        raise EngineError("a run produced no audio: cannot compare waveforms")
    diff = np.linalg.norm(a[:n] - b[:n])
    norm = np.linalg.norm(b[:n])
    return float(diff / norm) if norm > 0 else float(diff / np.sqrt(n))


def pooled_map(result, context: str | None = None) -> np.ndarray | None:
    """The token-pooled cross-attention map ``(T, F)`` of a run (``None`` without frames)."""
    from engine.analysis.aggregate import aggregate_run

    cross = sorted({s.context for s in result.sites if s.kind == "cross" and s.name in result.lattices})
    if not result.frames or not cross:
        return None
    if context is None:
        context = next((c for c in ("text", "t5") if c in cross), cross[0])
    agg = aggregate_run(result, context, target=MAP_GRID, pooling="mean")
    return np.asarray(agg.maps, dtype=np.float64).reshape(MAP_GRID)


@dataclass(frozen=True)
class RunDigest:
    """What :func:`deviation` reads of a run, small enough to travel between processes: the
    audio, its mel (and mel definition) and the pooled cross-attention map (``None`` without frames)."""

    audio: np.ndarray
    sample_rate: int
    mel: np.ndarray | None
    mel_spec: Any
    pooled: np.ndarray | None


def digest(result) -> RunDigest:
    """The :class:`RunDigest` of a run result."""
    return RunDigest(result.audio, result.sample_rate, result.mel, result.mel_spec, pooled_map(result))


def _pooled(run) -> np.ndarray | None:
    return run.pooled if isinstance(run, RunDigest) else pooled_map(run)


def map_alignment(result, reference) -> dict[str, float]:
    """Alignment scores of the run's pooled map against the reference's (nan without frames)."""
    keys = ("iou", "ap", "pearson", "map_l1")
    g, r = _pooled(result), _pooled(reference)
    if g is None or r is None:
        return dict.fromkeys(keys, float("nan"))
    rep = alignment_report(g, binarise(r, top_q=TOP_Q))
    return {"iou": rep["iou"], "ap": rep["ap"], "pearson": rep["pearson"],
            "map_l1": float(np.abs(normalise_map(g) - normalise_map(r)).mean())}


def deviation(result, reference) -> dict[str, float]:
    """Every quality deviation of ``result`` from ``reference`` (run results or :class:`RunDigest`)."""
    return {"mel_distance": mel_distance(result, reference),
            "wave_distance": waveform_distance(result, reference),
            **map_alignment(result, reference)}
