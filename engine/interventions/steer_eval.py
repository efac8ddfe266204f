"""Steering evaluation in the shape of TADA Table 1: ΔAlignment, smoothness, preservation.

For each layer set (e.g. the functional layers, all layers, all but the functional ones) and each
evaluation prompt × seed, the run is repeated over the steering strengths ``alphas``:

* **alignment** ``a(α)``: audio–text similarity with the concept query (scorer named);
* **ΔAlignment** = mean ``a(α_max)`` − mean ``a(α_min)``;
* **smoothness** = std of consecutive differences ``a(α_{i+1}) − a(α_i)`` of each prompt's curve,
  averaged over prompts (lower is smoother);
* **preservation**, against the unsteered (α = 0) audio and averaged over α ≠ 0 (lower preserves
  more), in three forms: TADA's two measured in the shipped instrument scorer's feature space
  (:mod:`engine.scoring.distances`; FAD's VGGish and LPAPS's network cannot be had offline, so the
  names say what they are) and the plain log-mel difference:

  - ``scorer_frechet_distance``: per α, the Fréchet distance between the scorer's frame
    embeddings of all steered clips (prompts × seeds) and those of the unsteered clips;
  - ``scorer_perceptual_distance``: per clip, the LPAPS-style distance of the scorer's layer
    activations to its unsteered clip;
  - ``preservation_mel_db``: mean |Δ| in dB of the log-mel spectrograms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.analysis.melscale import mel_spectrogram, power_to_db
from engine.interventions.caa import Steer, SteeringVectors, check_alpha, check_prompts
from engine.scoring.distances import frechet_distance, perceptual_distance
from engine.types import EngineError, GenerationRequest, MelSpec
from engine.work_items import Runner, counter, in_process


def mel_distance_db(a: np.ndarray, b: np.ndarray, sample_rate: int, spec: MelSpec) -> float:
    """Mean |Δ| in dB between the log-mel spectrograms of two clips (cropped to the shorter)."""
    n = min(a.size, b.size)
    ma = mel_spectrogram(np.asarray(a[:n], np.float64), spec, sample_rate)
    mb = mel_spectrogram(np.asarray(b[:n], np.float64), spec, sample_rate)
    ref = max(float(ma.max()), float(mb.max()), 1e-10)
    return float(np.mean(np.abs(power_to_db(ma, ref=ref) - power_to_db(mb, ref=ref))))


def smoothness(curves: np.ndarray) -> float:
    """Mean over rows of the std of consecutive differences (``curves``: prompts × alphas)."""
    c = np.asarray(curves, dtype=np.float64)
    if c.shape[-1] < 3:
        return float("nan")
    return float(np.mean(np.std(np.diff(c, axis=-1), axis=-1)))


@dataclass
class SteerEvalRow:
    layer_set: str
    sites: list[str]
    alphas: list[float]
    alignment: np.ndarray  # (prompts*seeds, alphas)
    preservation_db: float
    frechet: float | None = None  # scorer_frechet_distance, mean over α ≠ 0
    perceptual: float | None = None  # scorer_perceptual_distance, mean over clips and α ≠ 0

    @property
    def delta_alignment(self) -> float:
        return float(self.alignment[:, -1].mean() - self.alignment[:, 0].mean())

    def to_dict(self) -> dict[str, Any]:
        return {"layer_set": self.layer_set, "sites": self.sites, "alphas": self.alphas,
                "alignment_mean": self.alignment.mean(axis=0).tolist(),
                "alignment_per_run": self.alignment.tolist(),  # rows: the result's "runs" (prompt, seed)
                "delta_alignment": self.delta_alignment, "smoothness": smoothness(self.alignment),
                "preservation_mel_db": self.preservation_db, "scorer_frechet_distance": self.frechet,
                "scorer_perceptual_distance": self.perceptual}


def preservation_features(scorer):
    """The scorer that gives the preservation features: ``scorer`` itself when it has embeddings,
    else the shipped instrument scorer, else ``None`` (then only the mel distance is reported)."""
    if hasattr(scorer, "embeddings") and hasattr(scorer, "activations"):
        return scorer
    from engine.interventions.scorers import InstrumentScorer

    try:
        return InstrumentScorer()
    except EngineError:
        return None


@dataclass(frozen=True)
class SteerSettings:
    """What every run of a steering evaluation shares."""

    query: str
    steps: int = 10
    guidance: float = 3.0
    duration: float = 4.0
    use_renorm: bool = False
    halves: str = "both"

    def request(self, prompt: str, seed: int, interventions=()) -> GenerationRequest:
        return GenerationRequest(prompt=prompt, seed=int(seed), steps=self.steps, guidance=self.guidance,
                                 duration=self.duration, capture=False, interventions=tuple(interventions))


@dataclass(frozen=True)
class BaseRun:
    """Work item: the unsteered (α = 0) run of one evaluation prompt × seed."""

    prompt: str
    seed: int


@dataclass(frozen=True)
class BaseResult:
    audio: np.ndarray
    sample_rate: int
    alignment: float
    embeddings: np.ndarray | None  # the preservation features' frame embeddings (None without them)
    activations: list[np.ndarray] | None


@dataclass(frozen=True)
class SteeredRun:
    """Work item: one prompt × seed steered with ``alpha`` ≠ 0 at ``sites``, compared with its base."""

    layer_set: str
    sites: tuple[str, ...]
    alpha: float
    prompt: str
    seed: int
    base_audio: np.ndarray
    base_activations: list[np.ndarray] | None


@dataclass(frozen=True)
class SteeredResult:
    alignment: float
    mel_db: float
    embeddings: np.ndarray | None
    perceptual: float | None


def run_item(backend, scorer, feats, vectors: SteeringVectors, settings: SteerSettings,
             item: BaseRun | SteeredRun) -> BaseResult | SteeredResult:
    """One work item of :func:`evaluate_steering` (pure: no files; ``feats``: see
    :func:`preservation_features`)."""
    if isinstance(item, BaseRun):
        r = backend.generate(settings.request(item.prompt, item.seed))
        return BaseResult(r.audio, r.sample_rate, scorer.similarity(r.audio, r.sample_rate, settings.query),
                          feats.embeddings(r.audio, r.sample_rate) if feats else None,
                          feats.activations(r.audio, r.sample_rate) if feats else None)
    steer = Steer(vectors, item.alpha, list(item.sites), settings.use_renorm, settings.halves)
    r = backend.generate(settings.request(item.prompt, item.seed, [steer]))
    return SteeredResult(scorer.similarity(r.audio, r.sample_rate, settings.query),
                         mel_distance_db(r.audio, item.base_audio, r.sample_rate, backend.mel_spec()),
                         feats.embeddings(r.audio, r.sample_rate) if feats else None,
                         perceptual_distance(feats.activations(r.audio, r.sample_rate), item.base_activations)
                         if feats else None)


def evaluate_steering(backend, vectors: SteeringVectors, layer_sets: dict[str, Sequence[str]],
                      prompts: Sequence[str], alphas: Sequence[float], query: str, scorer,
                      seeds: Sequence[int] = (0,), steps: int = 10, guidance: float = 3.0, duration: float = 4.0,
                      use_renorm: bool = False, halves: str = "both",
                      progress: Callable[[int, int], None] | None = None,
                      runner: Runner | None = None) -> dict[str, Any]:
    """ΔAlignment, smoothness and preservation per layer set (see the module docstring). The runs
    are work items (:class:`BaseRun` per prompt × seed, then :class:`SteeredRun` per layer set ×
    α ≠ 0 × prompt × seed) computed here, or through ``runner`` (:mod:`engine.work_items`:
    ``steer --ray``), whose workers call :func:`run_item`."""
    prompts = check_prompts(prompts, "evaluation")
    alphas = sorted(check_alpha(a) for a in alphas)
    if len(alphas) < 2:
        raise EngineError("give at least two steering strengths (e.g. -10,0,10)")
    if not layer_sets or any(len(v) == 0 for v in layer_sets.values()):
        raise EngineError("every layer set needs at least one layer")
    runs = [(p, int(s)) for p in prompts for s in seeds]
    settings = SteerSettings(query, steps, guidance, duration, use_renorm, halves)
    feats = preservation_features(scorer)
    runner = runner or in_process(lambda item: run_item(backend, scorer, feats, vectors, settings, item))
    unique = list(dict.fromkeys(runs))
    done = counter(len(unique) + len(layer_sets) * sum(a != 0 for a in alphas) * len(runs), progress)
    base = dict(zip(unique, runner([BaseRun(p, s) for p, s in unique], done), strict=True))
    steered = [SteeredRun(name, tuple(sites), alpha, p, s, base[(p, s)].audio, base[(p, s)].activations)
               for name, sites in layer_sets.items() for alpha in alphas if alpha != 0 for p, s in runs]
    results = iter(runner(steered, done))
    base_emb = np.concatenate([b.embeddings for b in base.values()]) if feats else None
    rows = []
    for name, sites in layer_sets.items():
        align = np.zeros((len(runs), len(alphas)))
        dists, percept, fds = [], [], []
        for j, alpha in enumerate(alphas):
            steered_emb = []
            for i, run in enumerate(runs):
                if alpha == 0:
                    align[i, j] = base[run].alignment
                    continue
                r = next(results)
                align[i, j] = r.alignment
                dists.append(r.mel_db)
                if feats is not None:
                    steered_emb.append(r.embeddings)
                    percept.append(r.perceptual)
            if steered_emb:
                fds.append(frechet_distance(np.concatenate(steered_emb), base_emb))
        rows.append(SteerEvalRow(name, list(sites), alphas, align, float(np.mean(dists)) if dists else 0.0,
                                 float(np.mean(fds)) if fds else None, float(np.mean(percept)) if percept else None))
    return {"scorer": scorer.name, "query": query, "renorm": use_renorm, "halves": halves,
            "prompts": list(prompts), "seeds": [int(s) for s in seeds],
            "runs": [[p, int(s)] for p, s in runs],
            "preservation_features": feats.name if feats is not None else None,
            "preservation_metric": ("scorer_frechet_distance: Fréchet distance of the instrument scorer's frame "
                                    "embeddings, steered vs unsteered, per α; scorer_perceptual_distance: LPAPS-style "
                                    "distance of its layer activations per clip; preservation_mel_db: mean |Δ log-mel| "
                                    "in dB; all averaged over α ≠ 0 (not FAD/LPAPS: their networks are not available)"),
            "rows": [row.to_dict() for row in rows]}
