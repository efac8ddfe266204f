"""Attention capture: record attention probabilities, leave the module output unchanged.

The capture handler sits on an :mod:`engine.probe.site_processors` wrapper of the site's
processor (the stock one, or what the interventions made of it). The output is computed by that
processor on the full batch, untouched (so the model output is bit-identical to a stock run); the
probabilities of the conditional CFG item (:class:`~engine.probe.cfg_layout.CfgLayout`) are
recomputed separately in fp32 by the attention core
(:func:`engine.probe.attention_core.item_probs`) and handed to the recorder.
"""

from __future__ import annotations

import torch

from engine.probe.attention_core import item_probs
from engine.probe.recorder import FrameRecorder
from engine.probe.site_processors import SiteCall, UNetSiteProcessor, site_processor_for


class CaptureHandler:
    """Site handler: record the conditional item's probabilities, then run the wrapped processor."""

    def __init__(self, recorder: FrameRecorder) -> None:
        self.recorder = recorder

    def __call__(self, call: SiteCall) -> torch.Tensor:
        if self.recorder.wants(call.site):
            with torch.no_grad():
                probs = item_probs(call.core(self.recorder.cfg.cond_item(call.batch)))
                self.recorder.add(call.site, probs)
        return call.run_inner()


def capture_processor_for(site: str, original, recorder: FrameRecorder) -> UNetSiteProcessor:
    """The capture processor that declares the same call arguments as ``original``."""
    return site_processor_for(
        site, original, CaptureHandler(recorder),
        unsupported="cannot capture site {site}: its processor {processor} has an unknown signature; "
                    "capture it with engine.probe.sdpa_intercept instead")
