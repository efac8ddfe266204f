"""Attention processors that hand each call of a site to a handler, declaring exactly the call
arguments of the processor they wrap.

``Attention.forward`` drops every keyword its processor's ``__call__`` does not declare, so a
wrapper of a UNet processor declares ``temb`` and a wrapper of Stable Audio's declares
``rotary_emb`` (:func:`site_processor_for` picks the right class). The handler receives the
call's tensors and a ``call_inner()`` that runs the wrapped processor with the same arguments.
Attention capture, the interventions (patching, steering, ablation) and the convergence tools
(entropy, LSAC, timing) are all handlers on these wrappers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import torch

from engine.types import EngineError


class SiteHandler(Protocol):
    """What a wrapped site calls on every attention call."""

    def __call__(self, site: str, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None, attention_mask: torch.Tensor | None,
                 extra: dict[str, Any], call_inner: Callable[[], torch.Tensor]) -> torch.Tensor: ...


class UNetSiteProcessor:
    """Wraps an ``AttnProcessor2_0``-style processor (declares ``temb``)."""

    def __init__(self, site: str, inner: Any, handler: SiteHandler) -> None:
        self.site = site
        self.inner = inner
        self.handler = handler

    def __call__(self, attn, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 temb: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if temb is None else {"temb": temb}

        def call_inner() -> torch.Tensor:
            return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, **extra)

        return self.handler(self.site, attn, hidden_states, encoder_hidden_states, attention_mask,
                            extra, call_inner)


class RotarySiteProcessor(UNetSiteProcessor):
    """Wraps ``StableAudioAttnProcessor2_0`` (declares ``rotary_emb``)."""

    def __call__(self, attn, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 rotary_emb: Any = None) -> torch.Tensor:
        extra = {"rotary_emb": rotary_emb}

        def call_inner() -> torch.Tensor:
            return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, rotary_emb=rotary_emb)

        return self.handler(self.site, attn, hidden_states, encoder_hidden_states, attention_mask,
                            extra, call_inner)


def declared_arguments(proc: Any) -> set[str]:
    """Named parameters of ``proc.__call__`` (what ``Attention.forward`` passes on)."""
    params = inspect.signature(proc.__call__).parameters
    return {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


UNSUPPORTED = ("site {site}: its processor {processor} has an unknown signature; "
               "convergence tools work on diffusers AttnProcessor2_0-style processors")


def site_processor_for(site: str, inner: Any, handler: SiteHandler,
                       unsupported: str = UNSUPPORTED) -> UNetSiteProcessor:
    """The wrapper class whose ``__call__`` declares the same arguments as ``inner``; an
    :class:`EngineError` with ``unsupported`` (``{site}``, ``{processor}`` filled in) otherwise."""
    declared = declared_arguments(inner)
    if "rotary_emb" in declared:
        return RotarySiteProcessor(site, inner, handler)
    if {"hidden_states", "encoder_hidden_states", "attention_mask"} <= declared:
        return UNetSiteProcessor(site, inner, handler)
    raise EngineError(unsupported.format(site=site, processor=type(inner).__name__))


class StepCounter:
    """Counts denoiser calls (one per denoising step in the supported pipelines)."""

    def __init__(self) -> None:
        self.step = -1

    def reset(self) -> None:
        self.step = -1

    def hook(self, module, args, kwargs) -> None:
        self.step += 1

    def pre_hooks(self, backend) -> list[tuple[torch.nn.Module, Callable]]:
        return [(backend.denoiser, self.hook)]
