"""Capture processors: record attention probabilities, leave the module output unchanged.

Each processor wraps the site's original processor. The output is computed by that original
processor on the full batch, untouched (so the model output is bit-identical to a stock run);
the probabilities of the conditional CFG item are recomputed separately in fp32
(:func:`engine.probe.attention_math.attention_probs`) and handed to the recorder.

``Attention.forward`` drops every keyword its processor's ``__call__`` does not declare, so each
class declares exactly the arguments its blocks pass: ``temb`` for the UNet processors,
``rotary_emb`` for Stable Audio's.
"""

from __future__ import annotations

import inspect

import torch

from engine.probe.attention_math import attention_probs
from engine.probe.recorder import FrameRecorder
from engine.types import EngineError


class CaptureAttnProcessor:
    """Wraps ``AttnProcessor2_0``-style processors (UNet blocks of AudioLDM2 and similar)."""

    def __init__(self, site: str, original, recorder: FrameRecorder) -> None:
        self.site = site
        self.original = original
        self.recorder = recorder

    def _record(self, attn, hidden_states, encoder_hidden_states, attention_mask, **extra) -> None:
        if self.recorder.wants(self.site):
            sample = self.recorder.cond_index(hidden_states.shape[0])
            with torch.no_grad():
                probs = attention_probs(
                    attn, hidden_states, encoder_hidden_states, attention_mask, sample, **extra
                )
                self.recorder.add(self.site, probs)

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._record(attn, hidden_states, encoder_hidden_states, attention_mask, temb=temb)
        extra = {} if temb is None else {"temb": temb}
        return self.original(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **extra,
        )


class StableAudioCaptureProcessor(CaptureAttnProcessor):
    """Wraps ``StableAudioAttnProcessor2_0`` (GQA, partial RoPE on self-attention)."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._record(
            attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb=rotary_emb
        )
        return self.original(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            rotary_emb=rotary_emb,
        )


def _declared(proc) -> set[str]:
    params = inspect.signature(proc.__call__).parameters
    return {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def capture_processor_for(site: str, original, recorder: FrameRecorder) -> CaptureAttnProcessor:
    """The capture processor that declares the same call arguments as ``original``."""
    declared = _declared(original)
    if "rotary_emb" in declared:
        return StableAudioCaptureProcessor(site, original, recorder)
    if {"hidden_states", "encoder_hidden_states", "attention_mask"} <= declared:
        return CaptureAttnProcessor(site, original, recorder)
    raise EngineError(
        f"cannot capture site {site}: its processor {type(original).__name__} has an unknown "
        "signature; capture it with engine.probe.sdpa_intercept instead"
    )
