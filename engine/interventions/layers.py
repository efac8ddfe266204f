"""Naming the layers interventions act on, and the run state every intervention shares.

A *layer* is a cross-attention site. Users name it by its module path
(``down_blocks.1.attentions.0.transformer_blocks.0.attn2``) or by its **cross-attention layer
number**: the 0-based index among the model's cross-attention sites in call order (the
numbering of TADA's figures, 0-based). :func:`resolve_layers` turns either into site names.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.probe.cfg_layout import CfgLayout
from engine.probe.run_context import RunContext
from engine.types import EngineError


def cross_sites(backend) -> list[str]:
    """Cross-attention site names of ``backend`` in call order (layer number = list index)."""
    names = [s.name for s in backend.sites() if s.kind == "cross"]
    if not names:
        raise EngineError(f"model {backend.model_id} has no cross-attention sites to intervene on")
    return names


def resolve_layers(backend, layers: Sequence[int | str] | str | None) -> list[str]:
    """Site names for ``layers`` (``None`` or ``"all"``: every cross-attention site).

    Accepts layer numbers, site names, or a comma-separated string of either.
    """
    names = cross_sites(backend)
    if layers is None or (isinstance(layers, str) and layers.strip().lower() in ("", "all")):
        return list(names)
    if isinstance(layers, str):
        layers = [p.strip() for p in layers.split(",") if p.strip()]
    out: list[str] = []
    for item in layers:
        if isinstance(item, str) and item.lstrip("-").isdigit():
            item = int(item)
        if isinstance(item, int):
            if not 0 <= item < len(names):
                raise EngineError(f"unknown layer {item}: this model has cross-attention layers "
                                  f"0-{len(names) - 1} (see `python main.py sites`)")
            name = names[item]
        elif item in names:
            name = item
        else:
            raise EngineError(f"unknown layer {item!r}: name a cross-attention site or its number "
                              f"0-{len(names) - 1} (see `python main.py sites`)")
        if name not in out:
            out.append(name)
    if not out:
        raise EngineError("no layers given: name at least one cross-attention layer or 'all'")
    return out


def layer_numbers(backend, sites: Sequence[str]) -> list[int]:
    """Cross-attention layer numbers of ``sites``."""
    names = cross_sites(backend)
    return [names.index(s) for s in sites]


class RunState:
    """What an intervention learns about the run it joins: its CFG layout, step count and the
    run's step clock (:class:`~engine.probe.run_context.RunContext`, handed over by :meth:`pre_hooks`,
    which adds no hooks itself)."""

    def __init__(self) -> None:
        self.cfg = CfgLayout(guided=False)
        self.steps = 0
        self._run: RunContext | None = None

    def begin(self, backend, request) -> None:
        self.cfg = CfgLayout.of(backend, request)
        self.steps = int(request.steps)

    def pre_hooks(self, backend, run: RunContext) -> list:
        self._run = run
        self.cfg = run.cfg
        return []

    @property
    def step(self) -> int:
        return self._run.clock.started if self._run is not None else 0

    def cond_slice(self, batch: int) -> slice:
        return self.cfg.cond_slice(batch)
