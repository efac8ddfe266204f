"""The hook point through which interventions (steering, patching, ablation, LSAC) join a run.

A run's ``GenerationRequest.interventions`` is a tuple of objects following
:class:`Intervention`. For every attention site, the backend passes the site's current processor
through each intervention's :meth:`~Intervention.wrap` in list order (the first wraps the stock
processor); attention capture then wraps the result, so what is recorded is the attention of the
intervened model. A request's ``head_mask`` joins as a :class:`~engine.interventions.head_mask.HeadMask`
placed first (it wraps the stock processors). ``begin(backend, request)`` and ``end()`` bracket the
run (``begin`` before any site is wrapped; ``end`` also when the run fails or is cancelled);
``pre_hooks(backend, run)`` receives the run's :class:`~engine.probe.run_context.RunContext` (step
clock, CFG layout) and may return forward pre-hooks.
Everything is taken off after the run by :func:`engine.probe.attach.attached`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from engine.interventions.head_mask import HeadMask
from engine.probe.run_context import RunContext


@runtime_checkable
class Intervention(Protocol):
    """Something that changes how attention sites compute, for one run."""

    def wrap(self, site: str, module: torch.nn.Module, inner: Any) -> Any | None:
        """A processor replacing ``inner`` at ``site``, or ``None`` to leave the site alone."""
        ...


def interventions_of(request: Any) -> list[Any]:
    """The request's interventions, checked; its head mask first when it has one."""
    items = list(request.interventions)
    if request.head_mask:
        items.insert(0, HeadMask(request.head_mask))
    for item in items:
        if not callable(getattr(item, "wrap", None)):
            raise TypeError(f"{type(item).__name__} is not an intervention (it has no wrap method)")
    return items


def wrap_sites(
    interventions: list[Any], modules: dict[str, torch.nn.Module], originals: dict[str, Any]
) -> dict[str, Any]:
    """Site -> processor after every intervention wrapped it (only the sites that changed)."""
    out: dict[str, Any] = {}
    for site, module in modules.items():
        proc = originals[site]
        changed = False
        for iv in interventions:
            new = iv.wrap(site, module, proc)
            if new is not None:
                proc, changed = new, True
        if changed:
            out[site] = proc
    return out


def intervention_hooks(interventions: list[Any], backend: Any, run: RunContext) -> list[tuple[torch.nn.Module, Callable]]:
    """Forward pre-hooks that interventions ask for (``pre_hooks(backend, run)``, optional)."""
    hooks: list[tuple[torch.nn.Module, Callable]] = []
    for iv in interventions:
        make = getattr(iv, "pre_hooks", None)
        if make is not None:
            hooks += list(make(backend, run))
    return hooks
