"""Attention processors that hand each call of a site to a handler, declaring exactly the call
arguments of the processor they wrap.

``Attention.forward`` drops every keyword its processor's ``__call__`` does not declare, so a
wrapper of a UNet processor declares ``temb`` and a wrapper of Stable Audio's declares
``rotary_emb`` (:func:`site_processor_for` picks the right class). The handler receives one
:class:`SiteCall`: the call's tensors, :meth:`SiteCall.run_inner` (the wrapped processor with the
same arguments) and :meth:`SiteCall.core` (the call taken apart by
:class:`engine.probe.attention_core.AttentionCall`). Attention capture, the interventions
(patching, steering, ablation, head mask) and the convergence tools (entropy, LSAC, timing) are
all handlers on these wrappers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from engine.probe.attention_core import AttentionCall, DifferentialCall, HeadSplitCall
from engine.types import EngineError


@dataclass
class SiteCall:
    """One attention call at a wrapped site."""

    site: str
    attn: Any
    hidden_states: torch.Tensor
    encoder_hidden_states: torch.Tensor | None
    attention_mask: torch.Tensor | None
    extra: dict[str, Any]  # the wrapped processor's own keyword: temb or rotary_emb
    inner: Any

    @property
    def batch(self) -> int:
        return self.hidden_states.shape[0]

    def run_inner(self) -> torch.Tensor:
        """The wrapped processor's output for this call."""
        return self.inner(self.attn, self.hidden_states, encoder_hidden_states=self.encoder_hidden_states,
                          attention_mask=self.attention_mask, **self.extra)

    def core(self, items: slice | None = None) -> AttentionCall:
        """The call taken apart (:class:`AttentionCall`, or :class:`HeadSplitCall` for
        processors that take ``image_rotary_emb``), for batch ``items`` (default: all)."""
        if "image_rotary_emb" in self.extra:
            return HeadSplitCall(self.attn, self.hidden_states, self.encoder_hidden_states,  # type: ignore[return-value]
                                 self.attention_mask, items=items, **self.extra)
        return AttentionCall(self.attn, self.hidden_states, self.encoder_hidden_states,
                             self.attention_mask, items=items, **self.extra)


SiteHandler = Callable[[SiteCall], torch.Tensor]


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
        return self.handler(SiteCall(self.site, attn, hidden_states, encoder_hidden_states,
                                     attention_mask, extra, self.inner))


class RotarySiteProcessor(UNetSiteProcessor):
    """Wraps ``StableAudioAttnProcessor2_0`` (declares ``rotary_emb``)."""

    def __call__(self, attn, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 rotary_emb: Any = None) -> torch.Tensor:
        return self.handler(SiteCall(self.site, attn, hidden_states, encoder_hidden_states,
                                     attention_mask, {"rotary_emb": rotary_emb}, self.inner))


class ImageRotarySiteProcessor(UNetSiteProcessor):
    """Wraps processors that declare ``image_rotary_emb`` (ACE-Step's ``AceStepAttnProcessor2_0``)."""

    def __call__(self, attn, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: Any = None) -> torch.Tensor:
        return self.handler(SiteCall(self.site, attn, hidden_states, encoder_hidden_states,
                                     attention_mask, {"image_rotary_emb": image_rotary_emb}, self.inner))


class ContextSiteCall(SiteCall):
    """A call of a processor taking ``context``/``context_mask`` (Stable Audio 3's cross-attention),
    held in ``encoder_hidden_states``/``attention_mask``."""

    def run_inner(self) -> torch.Tensor:
        return self.inner(self.attn, self.hidden_states, context=self.encoder_hidden_states,
                          context_mask=self.attention_mask)

    def core(self, items: slice | None = None) -> DifferentialCall:  # type: ignore[override]
        return DifferentialCall(self.attn, self.hidden_states, self.encoder_hidden_states,
                                self.attention_mask, items=items)


class ContextSiteProcessor(UNetSiteProcessor):
    """Wraps processors that declare ``context`` and ``context_mask`` (``StableAudio3CrossAttnProcessor``)."""

    def __call__(self, attn, hidden_states: torch.Tensor, context: torch.Tensor,
                 context_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.handler(ContextSiteCall(self.site, attn, hidden_states, context, context_mask, {}, self.inner))


class RopeSiteCall(SiteCall):
    """A call of a processor taking ``hidden_states`` and ``rope`` (Stable Audio 3's self-attention)."""

    def run_inner(self) -> torch.Tensor:
        return self.inner(self.attn, self.hidden_states, rope=self.extra["rope"])

    def core(self, items: slice | None = None) -> DifferentialCall:  # type: ignore[override]
        return DifferentialCall(self.attn, self.hidden_states, None, None, items=items, rope=self.extra["rope"])


class RopeSiteProcessor(UNetSiteProcessor):
    """Wraps processors that declare ``hidden_states`` and ``rope`` only (``StableAudio3SelfAttnProcessor``)."""

    def __call__(self, attn, hidden_states: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        return self.handler(RopeSiteCall(self.site, attn, hidden_states, None, None, {"rope": rope}, self.inner))


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
    if {"hidden_states", "context", "context_mask"} <= declared:
        return ContextSiteProcessor(site, inner, handler)
    if declared == {"attn", "hidden_states", "rope"}:
        return RopeSiteProcessor(site, inner, handler)
    if "image_rotary_emb" in declared and {"hidden_states", "encoder_hidden_states", "attention_mask"} <= declared:
        return ImageRotarySiteProcessor(site, inner, handler)
    if {"hidden_states", "encoder_hidden_states", "attention_mask"} <= declared:
        return UNetSiteProcessor(site, inner, handler)
    raise EngineError(unsupported.format(site=site, processor=type(inner).__name__))
