"""The intervention handler: a site's attention with K/V substituted, weights forced uniform,
heads edited, or its output edited.

:class:`InterventionHandler` runs on an :mod:`engine.probe.site_processors` wrapper. When the
edit needs the inside of the attention (``kv_hook``, ``uniform``, ``head_hook``) the call is
computed by the attention core (:func:`engine.probe.attention_core.attend`, the stock processor's
arithmetic with those openings) instead of the processor it was given; when that processor is
itself an intervention handler (e.g. a head mask), the two merge into one handler (its openings
first, then the new ones), so neither is lost. ``output_hook`` alone calls the processor it wraps,
so output edits compose with other interventions.
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

    @property
    def needs_core(self) -> bool:
        """Whether the handler computes the attention itself (an opening inside it is used)."""
        return self.kv_hook is not None or self.uniform or self.head_hook is not None

    def __call__(self, call: SiteCall) -> torch.Tensor:
        if self.needs_core:
            out = attend(call.core(), kv_hook=self.kv_hook, uniform=self.uniform, head_hook=self.head_hook)
        else:
            out = call.run_inner()
        return out if self.output_hook is None else self.output_hook(out)

    def then(self, outer: InterventionHandler) -> InterventionHandler:
        """One handler doing this one's edits, then ``outer``'s."""
        kv_hook = _chain(self.kv_hook, outer.kv_hook, lambda a, b: lambda k, v, m: b(*a(k, v, m)))
        head_hook = _chain(self.head_hook, outer.head_hook, lambda a, b: lambda o: b(a(o)))
        output_hook = _chain(self.output_hook, outer.output_hook, lambda a, b: lambda o: b(a(o)))
        return InterventionHandler(kv_hook, self.uniform or outer.uniform, head_hook, output_hook)


def _chain(first: Callable | None, second: Callable | None,
           join: Callable[[Callable, Callable], Callable]) -> Callable | None:
    """``join(first, second)``, or whichever of the two is given."""
    if first is None or second is None:
        return second if first is None else first
    return join(first, second)


def intervention_processor_for(site: str, inner, **kwargs) -> UNetSiteProcessor:
    """The intervention processor declaring the same call arguments as ``inner``
    (``kwargs``: :class:`InterventionHandler`'s); merged with ``inner`` when both are intervention
    handlers and the new one computes the attention itself."""
    handler = InterventionHandler(**kwargs)
    if handler.needs_core and isinstance(inner, UNetSiteProcessor) and isinstance(inner.handler, InterventionHandler):
        handler, inner = inner.handler.then(handler), inner.inner
    return site_processor_for(
        site, inner, handler,
        unsupported="cannot intervene at site {site}: its processor {processor} has an unknown "
                    "signature (supported: AttnProcessor2_0 and StableAudioAttnProcessor2_0 style)")
