"""Attention processors that change what a site computes: K/V substitution, forced-uniform
attention and output edits (steering, zeroing).

:func:`attention_forward` reproduces, op for op, diffusers' ``AttnProcessor2_0`` (UNet blocks of
AudioLDM2 and the embedded model) and ``StableAudioAttnProcessor2_0`` (GQA, partial RoPE), with
two openings: ``kv_hook(key, value, mask) -> (key, value, mask)`` sees the projected keys and
values ``(B, K, inner_kv)`` and the prepared mask ``(B, heads, 1|Q, K)`` (or ``None``) before the
heads are split; ``uniform=True`` replaces the scores ``q·kᵀ/√d`` by zeros, so every query attends
uniformly to the keys its mask lets through (``softmax(mask)``).

Processors that need either opening compute the attention themselves and therefore *replace*
the processor they were given at that site; processors that only edit the output call the
processor they wrap, so they compose with other interventions. Each is an
:class:`InterventionHandler` on an :mod:`engine.probe.site_processors` wrapper, which declares
exactly the call arguments of the processor it wraps (``Attention.forward`` drops undeclared
keywords).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from engine.probe.attention_math import project_output, rotate_partial
from engine.probe.site_processors import UNetSiteProcessor, site_processor_for
from engine.types import EngineError

KVHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None],
                  tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
OutputHook = Callable[[torch.Tensor], torch.Tensor]


def attention_forward(
    attn,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    temb: torch.Tensor | None = None,
    rotary_emb=None,
    kv_hook: KVHook | None = None,
    uniform: bool = False,
) -> torch.Tensor:
    """One attention call as the stock SDPA processors compute it (see the module docstring)."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
    batch_size, sequence_length, _ = (
        hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
    )
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)
    value = attn.to_v(encoder_hidden_states)
    if kv_hook is not None:
        key, value, attention_mask = kv_hook(key, value, attention_mask)
        if key.shape[0] != batch_size or value.shape[0] != batch_size:
            raise EngineError(
                f"substituted keys/values have batch {key.shape[0]}, the run has {batch_size}: "
                "use the same guidance (CFG on/off) in the cached and the patched run"
            )

    head_dim = query.shape[-1] // attn.heads
    kv_heads = key.shape[-1] // head_dim
    query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch_size, -1, kv_heads, head_dim).transpose(1, 2)
    value = value.view(batch_size, -1, kv_heads, head_dim).transpose(1, 2)
    if kv_heads != attn.heads:
        per = attn.heads // kv_heads
        key = torch.repeat_interleave(key, per, dim=1, output_size=key.shape[1] * per)
        value = torch.repeat_interleave(value, per, dim=1, output_size=value.shape[1] * per)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    if rotary_emb is not None:
        q_dtype, k_dtype = query.dtype, key.dtype
        query = rotate_partial(query.to(torch.float32), rotary_emb).to(q_dtype)
        if not attn.is_cross_attention:
            key = rotate_partial(key.to(torch.float32), rotary_emb).to(k_dtype)
    if uniform:
        query = torch.zeros_like(query)  # every score 0: softmax(mask) = uniform over allowed keys
    hidden_states = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
    )
    hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
    hidden_states = hidden_states.to(query.dtype)
    spatial = (batch_size, channel, height, width) if input_ndim == 4 else None
    return project_output(attn, hidden_states, residual, spatial)


class InterventionHandler:
    """Site handler: runs the wrapped processor (or :func:`attention_forward` when K/V or weights
    change), then ``output_hook`` on the result."""

    def __init__(self, kv_hook: KVHook | None = None, uniform: bool = False,
                 output_hook: OutputHook | None = None) -> None:
        self.kv_hook = kv_hook
        self.uniform = uniform
        self.output_hook = output_hook

    def __call__(self, site, attn, hidden_states, encoder_hidden_states, attention_mask, extra: dict,
                 call_inner) -> torch.Tensor:
        if self.kv_hook is None and not self.uniform:
            out = call_inner()
        else:
            out = attention_forward(attn, hidden_states, encoder_hidden_states, attention_mask,
                                    kv_hook=self.kv_hook, uniform=self.uniform, **extra)
        return out if self.output_hook is None else self.output_hook(out)


def intervention_processor_for(site: str, inner, **kwargs) -> UNetSiteProcessor:
    """The intervention processor declaring the same call arguments as ``inner``
    (``kwargs``: :class:`InterventionHandler`'s)."""
    return site_processor_for(
        site, inner, InterventionHandler(**kwargs),
        unsupported="cannot intervene at site {site}: its processor {processor} has an unknown "
                    "signature (supported: AttnProcessor2_0 and StableAudioAttnProcessor2_0 style)")


def cfg_items(order: str, guidance: float, batch: int, halves: str) -> slice:
    """Batch items an edit applies to: ``halves="both"`` all, ``"cond"`` the conditional half,
    ``"uncond"`` the unconditional half (CFG order per backend: ``uncond_cond``/``cond_uncond``)."""
    if halves not in ("both", "cond", "uncond"):
        raise EngineError(f"unknown CFG half {halves!r}: use both, cond or uncond")
    if halves == "both":
        return slice(0, batch)
    if guidance <= 1.0:
        return slice(0, batch) if halves == "cond" else slice(0, 0)
    half = batch // 2
    first_is_cond = order == "cond_uncond"
    if (halves == "cond") == first_is_cond:
        return slice(0, half)
    return slice(half, batch)
