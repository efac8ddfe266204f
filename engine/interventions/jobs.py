"""The worker jobs of ``patch``, ``caa``, ``sae`` and ``steer`` on a cluster (``--ray``).

Each job is a frozen, picklable record of what its workers need: ``setup`` loads the backend (and
scorer) once per worker with the same loaders as a local run, ``run(state, item)`` computes one
work item with the very function the local run uses, and writes nothing
(:mod:`engine.work_items`, :func:`engine.cluster.map_items`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.interventions.caa import MeanRun, SteeringVectors, run_means
from engine.interventions.patching import SweepSettings
from engine.interventions.sae import CollectRun, run_collect
from engine.interventions.steer_eval import SteerSettings


def load_backend(model: str, device: str):
    from engine.backends.registry import load_backend as load

    return load(model, device=device)


@dataclass(frozen=True)
class PatchJob:
    """Patching items (:class:`~engine.interventions.patching.PairRun`, ``LayerRun``)."""

    model: str
    device: str
    scorer: str | None
    settings: SweepSettings

    def setup(self) -> tuple[Any, Any]:
        from engine.interventions.scorers import load_scorer

        return load_backend(self.model, self.device), load_scorer(self.scorer, None, self.device)

    def run(self, state: tuple[Any, Any], item: Any) -> Any:
        from engine.interventions.patching import run_item

        backend, scorer = state
        return run_item(backend, scorer, self.settings, item)


@dataclass(frozen=True)
class ActivationJob:
    """Runs that collect activations: CAA means (:class:`MeanRun`) and SAE tokens (:class:`CollectRun`)."""

    model: str
    device: str

    def setup(self) -> Any:
        return load_backend(self.model, self.device)

    def run(self, backend: Any, item: MeanRun | CollectRun) -> Any:
        return run_means(backend, item) if isinstance(item, MeanRun) else run_collect(backend, item)


@dataclass(frozen=True)
class SteerJob:
    """Steering-evaluation items (:class:`~engine.interventions.steer_eval.BaseRun`, ``SteeredRun``)."""

    model: str
    device: str
    scorer: str | None
    vectors: SteeringVectors
    settings: SteerSettings

    def setup(self) -> tuple[Any, Any, Any]:
        from engine.interventions.scorers import load_scorer
        from engine.interventions.steer_eval import preservation_features

        scorer = load_scorer(self.scorer, None, self.device)
        return load_backend(self.model, self.device), scorer, preservation_features(scorer)

    def run(self, state: tuple[Any, Any, Any], item: Any) -> Any:
        from engine.interventions.steer_eval import run_item

        backend, scorer, feats = state
        return run_item(backend, scorer, feats, self.vectors, self.settings, item)
