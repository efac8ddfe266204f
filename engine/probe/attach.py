"""Attach probes to a denoiser for one run and take them off afterwards, whatever happens.

:func:`attached` installs processors on chosen sites with ``set_attn_processor(full dict)``
(diffusers requires every key), registers forward pre-hooks, and in ``finally`` restores the
original processor objects and removes every hook, also when the run raised or was cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from engine.types import EngineError

PROCESSOR_SUFFIX = ".processor"


def attention_modules(denoiser: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Every attention module of ``denoiser`` by module path (``attn_processors`` keys less
    ``.processor``), in registration order."""
    if not hasattr(denoiser, "attn_processors"):
        raise EngineError(
            f"{type(denoiser).__name__} has no diffusers attention processors; "
            "use engine.probe.sdpa_intercept for this model"
        )
    return {
        key[: -len(PROCESSOR_SUFFIX)]: denoiser.get_submodule(key[: -len(PROCESSOR_SUFFIX)])
        for key in denoiser.attn_processors
    }


def hook_count(module: torch.nn.Module) -> int:
    """Forward and forward-pre hooks on ``module`` and its submodules (weight-norm included)."""
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())


@contextmanager
def attached(
    denoiser: torch.nn.Module,
    processors: dict[str, object],
    pre_hooks: list[tuple[torch.nn.Module, Callable]] | None = None,
) -> Iterator[dict[str, object]]:
    """Install ``processors`` (site -> processor) and ``pre_hooks`` (module, hook(with_kwargs));
    yields the original processors; restores everything on exit."""
    original = dict(denoiser.attn_processors)
    unknown = [s for s in processors if s + PROCESSOR_SUFFIX not in original]
    if unknown:
        raise EngineError(f"unknown attention site(s) {unknown[:3]}; pick names from backend.sites()")
    handles = []
    try:
        if processors:
            full = dict(original)
            for site, proc in processors.items():
                full[site + PROCESSOR_SUFFIX] = proc
            denoiser.set_attn_processor(full)
        for module, hook in pre_hooks or []:
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        yield original
    finally:
        for handle in handles:
            handle.remove()
        if processors:
            denoiser.set_attn_processor(dict(original))  # diffusers pops from the dict
