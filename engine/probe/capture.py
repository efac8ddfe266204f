"""Attention capture: record attention probabilities, leave the module output unchanged.

The capture handler sits on an :mod:`engine.probe.site_processors` wrapper of the site's
processor (the stock one, or what the interventions made of it). The output is computed by that
processor on the full batch, untouched (so the model output is bit-identical to a stock run); the
probabilities of the conditional CFG item (:class:`~engine.probe.cfg_layout.CfgLayout`) are
computed separately in fp32 by the attention core (:func:`engine.probe.attention_core.item_probs`)
and handed to the recorder. Behind a stock diffusers processor the query and key projections are
the processor's own (:class:`~engine.probe.projection_taps.ProjectionTaps`), not computed again.
"""

from __future__ import annotations

import contextlib

import torch

from engine.probe.attention_core import item_probs
from engine.probe.projection_taps import ProjectionTaps, stock_processor
from engine.probe.recorder import FrameRecorder
from engine.probe.site_processors import SiteCall, UNetSiteProcessor, site_processor_for


class CaptureHandler:
    """Site handler: record the conditional item's probabilities, then run the wrapped processor."""

    def __init__(self, recorder: FrameRecorder) -> None:
        self.recorder = recorder

    def __call__(self, call: SiteCall) -> torch.Tensor:
        if not self.recorder.wants(call.site):
            return call.run_inner()
        items = self.recorder.cfg.cond_item(call.batch)
        taps = ProjectionTaps(call.attn) if stock_processor(call.inner) else None  # its own projections
        with taps or contextlib.nullcontext():
            out = call.run_inner()
        projections = taps.projections(items, call.batch) if taps is not None else (None, None)
        with torch.no_grad():
            self.recorder.add(call.site, item_probs(call.core(items), *projections))
        return out


def capture_processor_for(site: str, original, recorder: FrameRecorder) -> UNetSiteProcessor:
    """The capture processor that declares the same call arguments as ``original``."""
    return site_processor_for(
        site, original, CaptureHandler(recorder),
        unsupported="cannot capture site {site}: its processor {processor} has an unknown signature; "
                    "capture it with engine.probe.sdpa_intercept instead")
