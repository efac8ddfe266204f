"""Attention probabilities of one batch item of a diffusers ``Attention`` call, in fp32.

The stock SDPA processors never materialise the probabilities, so they are recomputed here from
the same inputs, following the steps of ``AttnProcessor2_0`` / ``StableAudioAttnProcessor2_0``
(spatial/group norm, cross norm, q/k norms, partial RoPE, GQA) and using SDPA's own scale
``1/sqrt(head_dim)`` (SDPA ignores ``attn.scale``; the two agree unless ``scale_qk=False``).
"""

from __future__ import annotations

import math

import torch


def head_dim_of(attn) -> int:
    """Per-head width of an ``Attention`` module (``to_q.out_features // heads``)."""
    return attn.to_q.out_features // attn.heads


def kv_heads_of(attn) -> int:
    """Number of K/V heads (``heads`` unless the module uses GQA/MQA)."""
    return attn.to_k.out_features // head_dim_of(attn)


def rotate_partial(x: torch.Tensor, rotary_emb) -> torch.Tensor:
    """Stable Audio's partial RoPE: rotate the first ``rot_dim`` channels of ``x``."""
    from diffusers.models.embeddings import apply_rotary_emb

    rot_dim = rotary_emb[0].shape[-1]
    rotated = apply_rotary_emb(x[..., :rot_dim], rotary_emb, use_real=True, use_real_unbind_dim=-2)
    return torch.cat((rotated, x[..., rot_dim:]), dim=-1)


def project_output(attn, out: torch.Tensor, residual: torch.Tensor,
                   spatial_shape: tuple[int, int, int, int] | None) -> torch.Tensor:
    """The stock processors' epilogue: ``to_out`` (linear, dropout), back to ``(B, C, H, W)`` when
    the call's input was 4-D (``spatial_shape``), residual connection, output rescale."""
    out = attn.to_out[0](out)
    out = attn.to_out[1](out)
    if spatial_shape is not None:
        out = out.transpose(-1, -2).reshape(spatial_shape)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def attention_probs(
    attn,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    sample: int | None,
    temb: torch.Tensor | None = None,
    rotary_emb=None,
    transposed: bool = False,
) -> torch.Tensor:
    """``softmax(q kᵀ / sqrt(d) + mask)`` of batch item ``sample`` as fp32 ``(heads, Q, K)``;
    with ``sample=None``, of every item at once as ``(B, heads, Q, K)``, or, with
    ``transposed=True``, as a contiguous ``(B, heads, K, Q)`` computed in place (``k qᵀ``, softmax
    over K): one large allocation instead of three, which matters on CPU where each fresh
    multi-MB tensor costs its page faults.

    Call under ``torch.no_grad()`` (the capture processors run inside the pipelines' no-grad).
    """
    batch = hidden_states.shape[0]
    if attn.spatial_norm is not None and temb is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    if hidden_states.ndim == 4:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    key_len = context.shape[1]

    items = slice(None) if sample is None else slice(sample, sample + 1)
    mask = None
    if attention_mask is not None:
        mask = attn.prepare_attention_mask(attention_mask, key_len, batch)
        mask = mask.view(batch, attn.heads, -1, mask.shape[-1])[items]  # (n, heads, 1 or Q, K)

    x = hidden_states[items]
    if getattr(attn, "group_norm", None) is not None:
        x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(x)
    if encoder_hidden_states is None:
        ctx = x
    else:
        ctx = encoder_hidden_states[items]
        if attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
    key = attn.to_k(ctx)

    head_dim = query.shape[-1] // attn.heads
    kv_heads = key.shape[-1] // head_dim
    n = x.shape[0]
    query = query.view(n, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(n, -1, kv_heads, head_dim).transpose(1, 2)
    if kv_heads != attn.heads:
        key = torch.repeat_interleave(key, attn.heads // kv_heads, dim=1)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    query = query.float()
    key = key.float()
    if rotary_emb is not None:
        query = rotate_partial(query, rotary_emb)
        if not attn.is_cross_attention:
            key = rotate_partial(key, rotary_emb)

    scale = 1.0 / math.sqrt(head_dim)
    if sample is None and transposed:
        scores_t = torch.matmul(key, query.transpose(-1, -2)).mul_(scale)  # (B, heads, K, Q)
        if mask is not None:
            mask_t = mask.transpose(-1, -2)
            if mask.dtype != torch.bool:
                scores_t.add_(mask_t.float())
            else:
                scores_t.masked_fill_(~mask_t, float("-inf"))
        scores_t.sub_(scores_t.amax(dim=-2, keepdim=True)).exp_()
        return scores_t.div_(scores_t.sum(dim=-2, keepdim=True))
    if sample is None:  # the whole batch in one product
        scores = torch.matmul(query, key.transpose(-1, -2)).mul_(scale)
        if mask is not None:
            scores = scores.add_(mask.float()) if mask.dtype != torch.bool else scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1)
    if mask is not None and mask.dtype != torch.bool:
        bias = mask[0].float().expand(attn.heads, query.shape[2], key.shape[2])
        scores = torch.baddbmm(bias, query[0], key[0].transpose(-1, -2), alpha=scale)
    else:
        scores = torch.matmul(query[0], key[0].transpose(-1, -2)).mul_(scale)
        if mask is not None:
            scores = scores.masked_fill(~mask[0], float("-inf"))
    return torch.softmax(scores, dim=-1)
