"""The hook point through which interventions (steering, patching, ablation, LSAC) join a run.

A run's ``GenerationRequest.extras["interventions"]`` is a list of objects following
:class:`Intervention`. For every attention site, the backend passes the site's current processor
through each intervention's :meth:`~Intervention.wrap` in list order (the first wraps the stock
processor); attention capture then wraps the result, so what is recorded is the attention of the
intervened model. ``pre_hooks`` adds forward pre-hooks (e.g. a per-step counter); ``begin`` and
``end`` bracket the run (``end`` is called also when the run fails or is cancelled).
Everything is taken off after the run by :func:`engine.probe.attach.attached`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Intervention(Protocol):
    """Something that changes how attention sites compute, for one run."""

    def wrap(self, site: str, module: torch.nn.Module, inner: Any) -> Any | None:
        """A processor replacing ``inner`` at ``site``, or ``None`` to leave the site alone."""
        ...


def interventions_of(extras: dict[str, Any]) -> list[Any]:
    """The request's interventions, checked."""
    items = list(extras.get("interventions") or [])
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


def intervention_hooks(interventions: list[Any], backend: Any, state: dict[str, Any]) -> list[tuple[torch.nn.Module, Callable]]:
    """Forward pre-hooks that interventions ask for (``pre_hooks(backend, state)``, optional)."""
    hooks: list[tuple[torch.nn.Module, Callable]] = []
    for iv in interventions:
        make = getattr(iv, "pre_hooks", None)
        if make is not None:
            hooks += list(make(backend, state))
    return hooks
