"""The intervention handler: a site's attention with K/V substituted, weights forced uniform,
heads edited, or its output edited.

:class:`InterventionHandler` runs on an :mod:`engine.probe.site_processors` wrapper. When the
edit needs the inside of the attention (``kv_hook``, ``uniform``, ``head_hook``) the call is
computed by the attention core (:func:`engine.probe.attention_core.attend`, the stock processor's
arithmetic with those openings), which *replaces* the processor it was given at that site;
``output_hook`` alone calls the processor it wraps, so output edits compose with other
interventions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.probe.attention_core import HeadHook, KVHook, attend
from engine.probe.site_processors import SiteCall, UNetSiteProcessor, site_processor_for

OutputHook = Callable[[torch.Tensor], torch.Tensor]


class InterventionHandler:
    """Site handler: the wrapped processor (or :func:`attend` with the given openings), then
    ``output_hook`` on the result."""

    def __init__(self, kv_hook: KVHook | None = None, uniform: bool = False,
                 head_hook: HeadHook | None = None, output_hook: OutputHook | None = None) -> None:
        self.kv_hook = kv_hook
        self.uniform = uniform
        self.head_hook = head_hook
        self.output_hook = output_hook

    def __call__(self, call: SiteCall) -> torch.Tensor:
        if self.kv_hook is None and not self.uniform and self.head_hook is None:
            out = call.run_inner()
        else:
            out = attend(call.core(), kv_hook=self.kv_hook, uniform=self.uniform, head_hook=self.head_hook)
        return out if self.output_hook is None else self.output_hook(out)


def intervention_processor_for(site: str, inner, **kwargs) -> UNetSiteProcessor:
    """The intervention processor declaring the same call arguments as ``inner``
    (``kwargs``: :class:`InterventionHandler`'s)."""
    return site_processor_for(
        site, inner, InterventionHandler(**kwargs),
        unsupported="cannot intervene at site {site}: its processor {processor} has an unknown "
                    "signature (supported: AttnProcessor2_0 and StableAudioAttnProcessor2_0 style)")
