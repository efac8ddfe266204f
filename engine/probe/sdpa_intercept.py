"""Kernel-level fallback: record attention from ``torch.nn.functional.scaled_dot_product_attention``.

For models whose attention does not go through diffusers processors, :class:`SDPAInterceptor`
replaces ``torch.nn.functional.scaled_dot_product_attention`` while it is active, computes
``softmax(q kᵀ · scale + mask)`` in fp32 from each call's ``q``, ``k`` and mask (honouring
``is_causal``, ``scale`` and ``enable_gqa``), lets the original kernel compute the output
unchanged, and restores the original function on exit (also on error).

Cross/self tagging (a kernel sees only tensors, not where they came from). The AIBA paper
(Appendix A.4.1) tags a layer *cross* when ``encoder_hidden_states`` differs from
``hidden_states``. At the kernel the closest observable is the key sequence: a call is tagged
``"cross"`` when the key length differs from the query length (keys cannot come from the query
stream), and ``"self"`` otherwise. A cross-attention whose context happens to be exactly as long
as its query is therefore mis-tagged as self; pass ``tagger`` to override the heuristic.

Only calls made through the module attribute (``F.scaled_dot_product_attention(...)``) are seen;
code that imported the function by name before the interceptor started keeps the original.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.probe.attention_core import softmax_probs


@dataclass(frozen=True)
class SDPACall:
    """One intercepted call: order, tag, shapes and the recorded ``(H, Lq, Lk)`` probabilities."""

    index: int
    kind: str
    query_shape: tuple[int, ...]
    key_shape: tuple[int, ...]
    probs: np.ndarray


def tag_by_length(query: torch.Tensor, key: torch.Tensor) -> str:
    """``"cross"`` when keys and queries differ in length, else ``"self"`` (see module doc)."""
    return "cross" if query.shape[-2] != key.shape[-2] else "self"


@torch.no_grad()
def sdpa_probs(query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor | None = None,
               is_causal: bool = False, scale: float | None = None,
               enable_gqa: bool = False) -> torch.Tensor:
    """The probabilities SDPA would use, fp32, shape ``(..., H, Lq, Lk)`` (the attention core's
    :func:`~engine.probe.attention_core.softmax_probs` after GQA expansion and the causal mask)."""
    k = key
    if k.ndim >= 3 and k.shape[-3] != query.shape[-3]:
        k = k.repeat_interleave(query.shape[-3] // k.shape[-3], dim=-3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    mask = attn_mask
    if is_causal:
        causal = torch.ones(query.shape[-2], k.shape[-2], dtype=torch.bool, device=query.device).tril()
        if mask is None or mask.dtype == torch.bool:
            mask = causal if mask is None else mask & causal
        else:
            mask = mask.float().masked_fill(~causal, float("-inf"))
    return softmax_probs(query, k, mask, scale)


class SDPAInterceptor:
    """Context manager that records every SDPA call made while it is active.

    ``sample``: which batch item to keep (``None`` keeps item 0 of a 4-D call); ``head_mean``:
    average over heads on the device; ``kinds``: which tags to record; ``on_call``: called with
    each :class:`SDPACall` as it happens.
    """

    def __init__(self, sample: int | Callable[[int], int] | None = None, head_mean: bool = True,
                 kinds: tuple[str, ...] = ("cross", "self"),
                 tagger: Callable[[torch.Tensor, torch.Tensor], str] = tag_by_length,
                 on_call: Callable[[SDPACall], None] | None = None) -> None:
        self.sample = sample
        self.head_mean = head_mean
        self.kinds = kinds
        self.tagger = tagger
        self.on_call = on_call
        self.calls: list[SDPACall] = []
        self._original = None
        self._count = 0

    def _pick(self, batch: int) -> int:
        if self.sample is None:
            return 0
        return self.sample(batch) if callable(self.sample) else int(self.sample)

    def _wrapped(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                 scale=None, enable_gqa=False, **kwargs):
        kind = self.tagger(query, key)
        index = self._count
        self._count += 1
        if kind in self.kinds:
            q, k, m = query, key, attn_mask
            if query.ndim == 4:
                i = self._pick(query.shape[0])
                q, k = query[i], key[i]
                if attn_mask is not None and attn_mask.ndim == 4:
                    m = attn_mask[i] if attn_mask.shape[0] > 1 else attn_mask[0]
            probs = sdpa_probs(q, k, m, is_causal, scale, enable_gqa)
            if self.head_mean and probs.ndim == 3:
                probs = probs.mean(0, keepdim=True)
            call = SDPACall(index, kind, tuple(query.shape), tuple(key.shape),
                            probs.to(torch.float16).cpu().numpy())
            call.probs.setflags(write=False)
            self.calls.append(call)
            if self.on_call is not None:
                self.on_call(call)
        extra = dict(kwargs)
        if scale is not None:
            extra["scale"] = scale
        if enable_gqa:
            extra["enable_gqa"] = enable_gqa
        return self._original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                              is_causal=is_causal, **extra)

    def __enter__(self) -> SDPAInterceptor:
        self._original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = self._wrapped
        return self

    def __exit__(self, *exc) -> None:
        F.scaled_dot_product_attention = self._original
