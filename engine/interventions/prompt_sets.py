"""The TADA prompt sets shipped in ``resources/prompts`` (counterfactual pairs, steering templates)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.paths import resources_dir
from engine.types import EngineError


def prompts_dir() -> Path:
    return resources_dir() / "prompts"


def _read(name: str) -> dict:
    path = prompts_dir() / name
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EngineError(f"cannot read the prompt set {path}: {exc}") from exc


@dataclass(frozen=True)
class ConceptPairs:
    """Counterfactual pairs ``(target with concept, source without)`` for one concept."""

    concept: str
    query: str
    template: str | None
    pairs: list[tuple[str, str]]


def counterfactual_sets() -> dict[str, list[ConceptPairs]]:
    """Set name → its concepts (``tada_counterfactual.yaml``)."""
    data = _read("tada_counterfactual.yaml")["sets"]
    return {name: [ConceptPairs(c["concept"], c.get("query", c["concept"]), c.get("template"),
                                [(p[0], p[1]) for p in c["pairs"]]) for c in items]
            for name, items in data.items()}


def find_concept(concept: str, set_name: str | None = None) -> ConceptPairs:
    """The pairs of ``concept`` (in ``set_name``, or the first set that has it)."""
    sets = counterfactual_sets()
    if set_name is not None and set_name not in sets:
        raise EngineError(f"unknown prompt set {set_name!r}: use one of {', '.join(sets)}")
    for name, items in sets.items():
        if set_name is not None and name != set_name:
            continue
        for c in items:
            if c.concept == concept:
                return c
    known = sorted({c.concept for n, items in sets.items() if set_name in (None, n) for c in items})
    raise EngineError(f"no counterfactual pairs for concept {concept!r}: use one of {', '.join(known)}")


@dataclass(frozen=True)
class SteeringSet:
    """Positive/negative prompts built from a concept's templates and the base descriptions."""

    concept: str
    query: str
    template: str | None
    positive: list[str]
    negative: list[str]
    evaluation: list[str]


def steering_set(concept: str, embedded: bool = False, n_bases: int | None = None) -> SteeringSet:
    """Table-4-style contrastive prompts for ``concept`` (``embedded``: the embedded vocabulary)."""
    data = _read("tada_steering.yaml")
    block = data["embedded"] if embedded else data
    concepts = block["concepts"]
    if concept not in concepts:
        raise EngineError(f"no steering templates for {concept!r}: use one of {', '.join(concepts)}")
    c = concepts[concept]
    bases = list(block["bases"])[: n_bases or None]
    return SteeringSet(concept, c.get("query", concept), c.get("template"),
                       [c["positive"].format(base=b) for b in bases],
                       [c["negative"].format(base=b) for b in bases], list(block["evaluation"]))
