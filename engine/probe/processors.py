"""Capture processors: record attention probabilities, leave the module output unchanged.

Each processor wraps the site's original processor (a
:mod:`engine.probe.site_processors` wrapper, which declares exactly the call arguments of the
processor it wraps: ``temb`` for the UNet processors, ``rotary_emb`` for Stable Audio's). The
output is computed by that original processor on the full batch, untouched (so the model output
is bit-identical to a stock run); the probabilities of the conditional CFG item are recomputed
separately in fp32 (:func:`engine.probe.attention_math.attention_probs`) and handed to the recorder.
"""

from __future__ import annotations

import torch

from engine.probe.attention_math import attention_probs
from engine.probe.recorder import FrameRecorder
from engine.probe.site_processors import UNetSiteProcessor, site_processor_for


class CaptureHandler:
    """Site handler: record the conditional item's probabilities, then run the wrapped processor."""

    def __init__(self, recorder: FrameRecorder) -> None:
        self.recorder = recorder

    def __call__(self, site, attn, hidden_states, encoder_hidden_states, attention_mask, extra, call_inner):
        if self.recorder.wants(site):
            sample = self.recorder.cond_index(hidden_states.shape[0])
            with torch.no_grad():
                probs = attention_probs(attn, hidden_states, encoder_hidden_states, attention_mask, sample,
                                        **extra)
                self.recorder.add(site, probs)
        return call_inner()


def capture_processor_for(site: str, original, recorder: FrameRecorder) -> UNetSiteProcessor:
    """The capture processor that declares the same call arguments as ``original``."""
    return site_processor_for(
        site, original, CaptureHandler(recorder),
        unsupported="cannot capture site {site}: its processor {processor} has an unknown signature; "
                    "capture it with engine.probe.sdpa_intercept instead")
