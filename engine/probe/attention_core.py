"""The one attention core: a diffusers ``Attention`` call taken apart into its steps.

:class:`AttentionCall` follows, op for op, diffusers' ``AttnProcessor2_0`` (the UNet blocks of
AudioLDM2 and the embedded model: spatial norm, 4-D input, group norm, cross norm, residual,
output rescale) and ``StableAudioAttnProcessor2_0`` (GQA K/V heads, q/k norms, partial RoPE):

* input stage (at construction): residual, spatial norm, ``(B, C, H, W) → (B, HW, C)``, the
  prepared mask ``(B, heads, 1|Q, K)``, group norm, the context (cross norm, or the hidden
  states for self-attention); ``items`` keeps only some batch items from there on;
* :meth:`~AttentionCall.queries`, :meth:`~AttentionCall.keys`, :meth:`~AttentionCall.values`:
  projection, head split, GQA expansion, q/k norms, RoPE;
* :func:`attention_probs`: ``softmax(q kᵀ / √d + mask)`` in fp32;
* :meth:`~AttentionCall.output`: head merge, ``to_out``, back to 4-D, residual, rescale.

:func:`attend` puts them together with SDPA and three openings (K/V substitution, forced
uniform weights, per-head output edit) and gives the stock output bit for bit when none is
used. Capture, the interventions and LSAC are handlers built on these pieces
(:mod:`engine.probe.site_processors`). The scale is SDPA's ``1/√d`` (SDPA ignores
``attn.scale``; the two agree unless ``scale_qk=False``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from engine.types import EngineError

KVHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None],
                  tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
HeadHook = Callable[[torch.Tensor], torch.Tensor]


def head_dim_of(attn: Any) -> int:
    """Per-head width of an ``Attention`` module (``to_q.out_features // heads``)."""
    return attn.to_q.out_features // attn.heads


def kv_heads_of(attn: Any) -> int:
    """Number of K/V heads (``heads`` unless the module uses GQA/MQA; ``heads`` for modules with a
    fused ``to_kv``, Stable Audio 3)."""
    if not hasattr(attn, "to_k"):
        return int(attn.heads)
    return attn.to_k.out_features // head_dim_of(attn)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, L, heads·d) → (B, heads, L, d)``."""
    return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, heads, L, d) → (B, L, heads·d)``."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, x.shape[1] * x.shape[3])


def rotate_partial(x: torch.Tensor, rotary_emb: Any) -> torch.Tensor:
    """Stable Audio's partial RoPE: rotate the first ``rot_dim`` channels of ``x``."""
    from diffusers.models.embeddings import apply_rotary_emb

    rot_dim = rotary_emb[0].shape[-1]
    rotated = apply_rotary_emb(x[..., :rot_dim], rotary_emb, use_real=True, use_real_unbind_dim=-2)
    return torch.cat((rotated, x[..., rot_dim:]), dim=-1)


class AttentionCall:
    """One call of an ``Attention`` module, after its input stage (see the module docstring).

    ``temb`` goes to the spatial norm (UNet processors), ``rotary_emb`` is Stable Audio's RoPE;
    ``items`` selects batch items (the mask is prepared for the whole batch first, as diffusers
    does, then sliced).
    """

    def __init__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 rotary_emb: Any = None, items: slice | None = None) -> None:
        self.attn = attn
        self.rotary_emb = rotary_emb
        self.residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        self.spatial: tuple[int, ...] | None = None
        if hidden_states.ndim == 4:
            self.spatial = tuple(hidden_states.shape)
            b, c, h, w = self.spatial
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        key_len = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape[1]
        self.mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key_len, batch)
            self.mask = mask.view(batch, attn.heads, -1, mask.shape[-1])
        if items is not None:
            hidden_states = hidden_states[items]
            self.mask = None if self.mask is None else self.mask[items]
            if encoder_hidden_states is not None:
                encoder_hidden_states = encoder_hidden_states[items]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        self.hidden = hidden_states
        if encoder_hidden_states is None:
            self.context = hidden_states
        elif attn.norm_cross:
            self.context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        else:
            self.context = encoder_hidden_states
        self.heads = int(attn.heads)
        self.head_dim = head_dim_of(attn)

    @property
    def batch(self) -> int:
        return self.hidden.shape[0]

    def _rope(self, x: torch.Tensor, fp32: bool) -> torch.Tensor:
        """RoPE in fp32 as the stock processor does; back to ``x``'s dtype unless ``fp32``."""
        rotated = rotate_partial(x.to(torch.float32), self.rotary_emb)
        return rotated if fp32 else rotated.to(x.dtype)

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        """GQA/MQA: repeat each K/V head to reach the query heads."""
        per = self.heads // x.shape[1]
        if per == 1:
            return x
        return torch.repeat_interleave(x, per, dim=1, output_size=x.shape[1] * per)

    def queries(self, fp32: bool = False, projected: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, heads, Q, d)``: ``to_q`` (or ``projected``, its ``(B, Q, heads·d)`` output), head
        split, ``norm_q``, RoPE (fp32 with ``fp32``)."""
        q = split_heads(self.attn.to_q(self.hidden) if projected is None else projected, self.heads)
        if self.attn.norm_q is not None:
            q = self.attn.norm_q(q)
        if self.rotary_emb is not None:
            return self._rope(q, fp32)
        return q.float() if fp32 else q

    def keys(self, projected: torch.Tensor | None = None, fp32: bool = False) -> torch.Tensor:
        """``(B, heads, K, d)`` from ``to_k(context)`` (or ``projected``, ``(B, K, kv·d)``):
        head split, GQA expansion, ``norm_k``, RoPE for self-attention."""
        k = self.attn.to_k(self.context) if projected is None else projected
        k = self._expand(split_heads(k, k.shape[-1] // self.head_dim))
        if self.attn.norm_k is not None:
            k = self.attn.norm_k(k)
        if self.rotary_emb is not None and not self.attn.is_cross_attention:
            return self._rope(k, fp32)
        return k.float() if fp32 else k

    def values(self, projected: torch.Tensor | None = None, expand: bool = True) -> torch.Tensor:
        """``(B, heads, K, d)`` from ``to_v(context)`` (or ``projected``); ``expand=False`` keeps
        the ``kv_heads`` of a GQA module."""
        v = self.attn.to_v(self.context) if projected is None else projected
        v = split_heads(v, v.shape[-1] // self.head_dim)
        return self._expand(v) if expand else v

    def output(self, merged: torch.Tensor) -> torch.Tensor:
        """The stock epilogue on ``(B, Q, heads·d)``: ``to_out`` (linear, dropout), back to
        ``(B, C, H, W)`` for a 4-D input, residual connection, output rescale."""
        out = self.attn.to_out[0](merged)
        out = self.attn.to_out[1](out)
        if self.spatial is not None:
            out = out.transpose(-1, -2).reshape(out.shape[0], *self.spatial[1:])
        if self.attn.residual_connection:
            out = out + self.residual
        return out / self.attn.rescale_output_factor


class HeadSplitCall:
    """One call of an ``AttentionModuleMixin`` module that projects to ``(B, L, heads, d)`` and
    normalises per head before the transpose (ACE-Step's ``AceStepAttention``: GQA ``kv_heads``,
    ``norm_q``/``norm_k`` RMSNorm, RoPE on self-attention only, no residual, additive mask).

    Offers what :class:`AttentionCall` offers to :func:`attend` and :func:`item_probs`
    (``queries``, ``keys``, ``values``, ``output``, ``mask``, ``context``, ``heads``, ``head_dim``).
    """

    def __init__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None,
                 items: slice | None = None) -> None:
        self.attn = attn
        self.cross = bool(attn.is_cross_attention) and encoder_hidden_states is not None
        self.rotary_emb = None if self.cross else image_rotary_emb
        context = encoder_hidden_states if self.cross else hidden_states
        mask = attention_mask
        if items is not None:
            hidden_states, context = hidden_states[items], context[items]
            if mask is not None and mask.shape[0] > 1:
                mask = mask[items]
        self.hidden, self.context, self.mask = hidden_states, context, mask
        self.heads = int(attn.heads)
        self.head_dim = int(attn.head_dim)

    @property
    def batch(self) -> int:
        return self.hidden.shape[0]

    def _heads(self, x: torch.Tensor, norm: Any, fp32: bool) -> torch.Tensor:
        """``(B, L, h·d) → (B, h, L, d)``: head split, norm, RoPE (in ``(B, L, h, d)``)."""
        from diffusers.models.embeddings import apply_rotary_emb

        x = norm(x.unflatten(-1, (x.shape[-1] // self.head_dim, self.head_dim)))
        if self.rotary_emb is not None:
            x = apply_rotary_emb(x, self.rotary_emb, use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
        x = x.transpose(1, 2)
        return x.float() if fp32 else x

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        per = self.heads // x.shape[1]
        return x if per == 1 else torch.repeat_interleave(x, per, dim=1, output_size=x.shape[1] * per)

    def queries(self, fp32: bool = False, projected: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, heads, Q, d)`` from ``to_q`` (or ``projected``, its output)."""
        q = self.attn.to_q(self.hidden) if projected is None else projected
        return self._heads(q, self.attn.norm_q, fp32)

    def keys(self, projected: torch.Tensor | None = None, fp32: bool = False) -> torch.Tensor:
        """``(B, heads, K, d)`` (GQA heads repeated) from ``to_k(context)`` or ``projected``."""
        k = self.attn.to_k(self.context) if projected is None else projected
        return self._expand(self._heads(k, self.attn.norm_k, fp32))

    def values(self, projected: torch.Tensor | None = None, expand: bool = True) -> torch.Tensor:
        """``(B, heads, K, d)`` from ``to_v(context)`` or ``projected`` (``kv_heads`` unless ``expand``)."""
        v = self.attn.to_v(self.context) if projected is None else projected
        v = split_heads(v, v.shape[-1] // self.head_dim)
        return self._expand(v) if expand else v

    def output(self, merged: torch.Tensor) -> torch.Tensor:
        """``to_out`` on ``(B, Q, heads·d)`` (the module adds no residual)."""
        return self.attn.to_out[1](self.attn.to_out[0](merged))


class DifferentialCall:
    """One call of Stable Audio 3's differential attention, whose output is
    ``(softmax(q1 k1ᵀ) − softmax(q2 k2ᵀ)) V``: cross-attention (``StableAudio3CrossAttention``:
    ``to_q → [q1 | q2]``, ``to_kv(context) → [k1 | k2 | v]``, bool context mask) or, with ``rope``,
    self-attention (``StableAudio3SelfAttention``: ``to_qkv → [q1 | q2 | k1 | k2 | v]``, partial
    RoPE on q and k after the norms, no mask); RMS q/k norms in both.

    ``queries``/``keys`` give branch ``branch`` (1: the positive map p1, 2: the subtracted p2), so
    :func:`item_probs` records that branch's probabilities. :meth:`attend` computes the call's
    output as the stock processor does, with the interventions' openings.
    """

    def __init__(self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None = None,
                 context_mask: torch.Tensor | None = None, items: slice | None = None, branch: int = 1,
                 rope: torch.Tensor | None = None) -> None:
        self.attn = attn
        self.branches = 2 if attn.use_differential else 1
        self.branch = branch if attn.use_differential else 1
        self.self_attention = context is None
        self.rope = rope
        if items is not None:
            hidden_states = hidden_states[items]
            context = None if context is None else context[items]
            context_mask = None if context_mask is None else context_mask[items]
        self.hidden = hidden_states
        self.context = hidden_states if context is None else context
        self.mask = None if context_mask is None else context_mask[:, None, None, :].bool()
        self.heads = int(attn.heads)
        self.head_dim = int(attn.dim_heads)
        self._projections: dict[str, torch.Tensor] = {}

    @property
    def batch(self) -> int:
        return self.hidden.shape[0]

    def with_branch(self, branch: int) -> DifferentialCall:
        """This call seen through branch ``branch`` (its projections shared: made once for both)."""
        other = copy.copy(self)
        other.branch = branch if self.attn.use_differential else 1
        return other

    def output(self, merged: torch.Tensor) -> torch.Tensor:
        """``to_out`` on ``(B, Q, heads·d)`` (the stock processors' epilogue)."""
        return self.attn.to_out(merged)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim))

    def _prepare(self, x: torch.Tensor, norm: Any) -> torch.Tensor:
        """``(B, L, heads·d) → (B, L, heads, d)``: head split, RMS norm, RoPE for self-attention."""
        x = norm(self._heads(x))
        if self.rope is not None:
            from diffusers.models.transformers.transformer_stable_audio3 import (
                _apply_rotary_partial,
            )

            x = _apply_rotary_partial(x, self.rope)
        return x

    def _projected(self, name: str) -> torch.Tensor:
        """``to_qkv(hidden)``, ``to_q(hidden)`` or ``to_kv(context)`` (``name``), made once per call
        (the dict is shared with :meth:`with_branch` copies)."""
        if name not in self._projections:
            source = self.context if name == "kv" else self.hidden
            self._projections[name] = getattr(self.attn, f"to_{name}")(source)
        return self._projections[name]

    def _q_parts(self, q: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-branch query projections ``(B, Q, heads·d)`` (``q``: a ``to_q`` output already made)."""
        if self.self_attention:
            return list(self._projected("qkv").chunk(2 * self.branches + 1, dim=-1)[:self.branches])
        return list((self._projected("q") if q is None else q).chunk(self.branches, dim=-1))

    def _kv_parts(self, kv: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-branch key projections and the values (``kv``: a ``to_kv`` output already made)."""
        if self.self_attention:
            parts = self._projected("qkv").chunk(2 * self.branches + 1, dim=-1)
            return list(parts[self.branches:-1]), parts[-1]
        parts = (self._projected("kv") if kv is None else kv).chunk(self.branches + 1, dim=-1)
        return list(parts[:-1]), parts[-1]

    def queries(self, fp32: bool = False, projected: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, heads, Q, d)`` of the branch, from ``to_q`` (or ``projected``, its output)."""
        q = self._prepare(self._q_parts(projected)[self.branch - 1], self.attn.q_norm).transpose(1, 2)
        return q.float() if fp32 else q

    def keys(self, projected: torch.Tensor | None = None, fp32: bool = False) -> torch.Tensor:
        """``(B, heads, K, d)`` of the branch, from ``to_kv`` (or ``projected``, its output)."""
        k = self._prepare(self._kv_parts(projected)[0][self.branch - 1], self.attn.k_norm).transpose(1, 2)
        return k.float() if fp32 else k

    def values(self, projected: torch.Tensor | None = None, expand: bool = True) -> torch.Tensor:
        """``(B, heads, K, d)``: the value part of the projections (or ``projected``, ``(B, K, heads·d)``).
        Self-attention whose fused projection has not been made yet projects the values alone (the
        last rows of ``to_qkv``): what a call needs when its weights come from a cache (LSAC)."""
        if projected is not None:
            v = projected
        elif self.self_attention and "qkv" not in self._projections and isinstance(self.attn.to_qkv, torch.nn.Linear):
            width = self.heads * self.head_dim
            lin = self.attn.to_qkv
            v = F.linear(self.hidden, lin.weight[-width:], None if lin.bias is None else lin.bias[-width:])
        else:
            v = self._kv_parts()[1]
        return self._heads(v).transpose(1, 2)

    def attend(self, kv_hook: KVHook | None = None, uniform: bool = False,
               head_hook: HeadHook | None = None) -> torch.Tensor:
        """The output, op for op as ``StableAudio3CrossAttnProcessor`` / ``StableAudio3SelfAttnProcessor``:
        ``Attn(q1, k1, V) − Attn(q2, k2, V)`` (or one branch without differential attention), then
        ``to_out``. ``kv_hook`` sees the projected keys of every branch side by side
        ``(B, K, branches·heads·d)`` and the values ``(B, K, heads·d)`` (patching moves both
        branches' keys together); ``uniform`` zeroes every branch's scores (the branches then
        cancel: no attention at all passes); ``head_hook`` edits the per-head output
        ``(B, heads, Q, d)`` (the branches' difference) before ``to_out``."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        attn = self.attn
        q_parts, (k_parts, value) = self._q_parts(), self._kv_parts()
        key, mask = torch.cat(k_parts, dim=-1), self.mask
        if kv_hook is not None:
            key, value, mask = _substituted(kv_hook, key, value, mask, self.batch)
        queries = [self._prepare(q, attn.q_norm) for q in q_parts]
        keys = [self._prepare(k, attn.k_norm) for k in key.chunk(self.branches, dim=-1)]
        if uniform:
            queries = [torch.zeros_like(q) for q in queries]
        v = self._heads(value)
        outs = [dispatch_attention_fn(q, k, v, attn_mask=mask) for q, k in zip(queries, keys, strict=True)]
        out = outs[0] - outs[1] if self.branches == 2 else outs[0]  # (B, Q, heads, d)
        if head_hook is not None:
            out = head_hook(out.transpose(1, 2)).transpose(1, 2)
        return self.output(out.flatten(2, 3))


def _substituted(kv_hook: KVHook, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                 batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``kv_hook``'s keys, values and mask, checked to have the call's batch."""
    key, value, mask = kv_hook(key, value, mask)
    if key.shape[0] != batch or value.shape[0] != batch:
        raise EngineError(f"substituted keys/values have batch {key.shape[0]}, the run has {batch}: "
                          "use the same guidance (CFG on/off) in the cached and the patched run")
    return key, value, mask


def attend(call: AttentionCall, kv_hook: KVHook | None = None, uniform: bool = False,
           head_hook: HeadHook | None = None) -> torch.Tensor:
    """The call's output through SDPA, as the stock processor computes it, with openings:
    ``kv_hook(key, value, mask)`` sees the projected ``(B, K, kv·d)`` keys and values and the
    prepared mask before the head split; ``uniform`` zeroes the scores (``softmax(mask)``);
    ``head_hook`` edits the per-head output ``(B, heads, Q, d)`` before the heads are merged."""
    if isinstance(call, DifferentialCall):
        return call.attend(kv_hook, uniform, head_hook)
    query = call.queries()
    key = value = None
    mask = call.mask
    if kv_hook is not None:
        key, value, mask = _substituted(kv_hook, call.attn.to_k(call.context), call.attn.to_v(call.context), mask,
                                        call.batch)
    key, value = call.keys(key), call.values(value)
    if uniform:
        query = torch.zeros_like(query)  # every score 0: softmax(mask) = uniform over allowed keys
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
    if head_hook is not None:
        out = head_hook(out)
    return call.output(merge_heads(out).to(query.dtype))


def attention_probs(call: AttentionCall, transposed: bool = False, uniform: bool = False) -> torch.Tensor:
    """``softmax(q kᵀ / √d + mask)`` of the call's items, fp32 ``(n, heads, Q, K)``; with
    ``transposed``, a contiguous ``(n, heads, K, Q)`` made in place (``k qᵀ``, softmax over K:
    one large allocation instead of three, which matters on CPU); ``uniform``: zero scores.

    Call under ``torch.no_grad()`` (the processors run inside the pipelines' no-grad).
    """
    query, key, mask = call.queries(fp32=True), call.keys(fp32=True), call.mask
    scale = 1.0 / math.sqrt(call.head_dim)
    if uniform:
        scores = query.new_zeros(query.shape[0], call.heads, query.shape[2], key.shape[2])
        return torch.softmax(_masked(scores, mask), dim=-1)
    if transposed:
        scores_t = torch.matmul(key, query.transpose(-1, -2)).mul_(scale)  # (n, heads, K, Q)
        if mask is not None:
            mask_t = mask.transpose(-1, -2)
            if mask.dtype != torch.bool:
                scores_t.add_(mask_t.float())
            else:
                scores_t.masked_fill_(~mask_t, float("-inf"))
        scores_t.sub_(scores_t.amax(dim=-2, keepdim=True)).exp_()
        return scores_t.div_(scores_t.sum(dim=-2, keepdim=True))
    if query.shape[0] == 1:
        return _item_probs(query[0], key[0], None if mask is None else mask[0], scale).unsqueeze(0)
    return softmax_probs(query, key, mask, scale)  # the whole batch in one product


def item_probs(call: AttentionCall, query: torch.Tensor | None = None, key: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`attention_probs` of a one-item call as ``(heads, Q, K)`` (what capture records);
    ``query``/``key`` are the item's query and key projections when the caller has them
    (:class:`engine.probe.projection_taps.ProjectionTaps`), else they are computed."""
    return _item_probs(call.queries(fp32=True, projected=query)[0], call.keys(key, fp32=True)[0],
                       None if call.mask is None else call.mask[0], 1.0 / math.sqrt(call.head_dim))


def _item_probs(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """One item's ``(heads, Q, K)`` probabilities, an additive mask fused into the product."""
    if mask is not None and mask.dtype != torch.bool:
        bias = mask.float().expand(query.shape[0], query.shape[1], key.shape[1])
        scores = torch.baddbmm(bias, query, key.transpose(-1, -2), alpha=scale)
    else:
        scores = torch.matmul(query, key.transpose(-1, -2)).mul_(scale)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def softmax_probs(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                  scale: float) -> torch.Tensor:
    """``softmax(q kᵀ · scale + mask)`` in fp32 from head-split ``(…, Q, d)`` queries and
    ``(…, K, d)`` keys; ``mask``: additive bias or bool (``True`` = may attend)."""
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)).mul_(scale)
    return torch.softmax(_masked(scores, mask), dim=-1)


def _masked(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores.add_(mask.float())
