"""Planted attention on Stable Audio 3 and LongCat-Audio-DiT (generic path): cross-attention weights and
inputs are set so that queries in a known region attend only to the key of "bass" and all others away
from it; the engine's map of "bass" must be ≈1 on the region and ≈0 elsewhere. The other CFG half (and,
for Stable Audio 3, the other differential branch) is planted the opposite way, so recording it fails."""

from __future__ import annotations

import numpy as np
import torch

from engine.analysis.aggregate import aggregate_run
from engine.analysis.pooling import keyword_indices
from engine.backends.generic import GenericBackend
from engine.backends.stable_audio_3 import StableAudio3Backend
from engine.backends.tiny import build_tiny
from engine.types import GenerationRequest

PROMPT = "funky bass and drums"
REGION = slice(20, 25)  # of 50 queries (0.5 s): away from both edges
GAIN = 3.0  # norm scale: planted logit = GAIN² · head_dim / sqrt(head_dim) ≈ 25 against 0 for other keys


def bass_map(result, queries: int) -> np.ndarray:
    """The engine's map of "bass" over the queries, averaged over steps and sites."""
    agg = aggregate_run(result, "text", target=(queries, 1))
    return agg.maps[keyword_indices(agg.tokens, ["bass"])].mean(0)[:, 0]


def assert_planted(heat: np.ndarray) -> None:
    assert heat.shape == (50,) and int(np.argmax(heat)) in range(REGION.start, REGION.stop)
    np.testing.assert_allclose(heat[REGION], 1.0, atol=1e-2)
    assert heat[:REGION.start].max() < 1e-2 and heat[REGION.stop:].max() < 1e-2


def planted_queries(like: torch.Tensor, offset: int, sign: float) -> torch.Tensor:
    """Channel 0 = ``sign`` on the region (shifted by ``offset`` leading queries), ``-sign`` elsewhere."""
    hidden = torch.zeros_like(like)
    hidden[..., 0] = -sign
    hidden[:, offset + REGION.start:offset + REGION.stop, 0] = sign
    return hidden


def test_stable_audio_3_planted_p1_of_the_conditional_item():
    """q1 and k1 (and k2) read input channel 0, q2 reads −channel 0, so p2 is p1 inverted. The
    prepended memory tokens are queries outside the region; the region is shifted past them. The
    conditional item (last of ``[uncond, cond]``) is planted as above, the unconditional one inverted:
    recording p2, the unconditional item, or uncropped memory queries moves the peak off the region."""
    backend = StableAudio3Backend(build_tiny("stable_audio_3"), "tiny:stable_audio_3")
    mem, dim = backend.memory_tokens, backend.denoiser.config.embed_dim
    tokens = backend.tokens(PROMPT)["text"]
    key = next(i for i, t in enumerate(tokens) if t.lstrip("Ġ▁") == "bass")
    seen: list[int] = []
    handles = []
    with torch.no_grad():
        for block in backend.denoiser.transformer_blocks:
            attn = block.cross_attn
            assert attn.use_differential and attn.to_q.out_features == 2 * dim
            attn.to_q.weight.zero_()
            attn.to_q.weight[:dim, 0] = 1.0  # q1
            attn.to_q.weight[dim:, 0] = -1.0  # q2: the opposite map
            attn.to_kv.weight[:2 * dim].zero_()
            attn.to_kv.weight[:2 * dim, 0] = 1.0  # k1 and k2; v untouched
            attn.q_norm.gamma.fill_(GAIN)
            attn.k_norm.gamma.fill_(GAIN)

            def plant(module, args, kwargs):
                hidden, context = args[0], kwargs["context"]
                seen.append(hidden.shape[0])
                planted = planted_queries(hidden, mem, 1.0)
                planted[:-1] = planted_queries(hidden[:-1], mem, -1.0)  # unconditional item(s): inverted
                ctx = torch.zeros_like(context)
                ctx[:, key, 0] = 1.0
                return (planted, *args[1:]), {**kwargs, "context": ctx}
            handles.append(attn.register_forward_pre_hook(plant, with_kwargs=True))
    try:
        result = backend.generate(GenerationRequest(prompt=PROMPT, steps=2, guidance=3.0, duration=0.5, seed=3))
    finally:
        for h in handles:
            h.remove()
    assert seen and set(seen) == {2}  # CFG ran as one batch of two items
    assert tokens[key] in result.tokens["text"] and "<pad>" not in result.tokens["text"]
    assert_planted(bass_map(result, backend.queries(0.5)))


def test_longcat_planted_conditional_call_through_rope():
    """q and k read input channel 0 into the slowest RoPE pair of every head only (channels
    ``head_dim/2 − 1`` and ``head_dim − 1``; LongCat rotates pair i by ``position · base^(−2i/head_dim)``),
    so after RoPE q·k = |q||k|·cos(Δangle) with Δangle < 0.02 rad over all positions (asserted): RoPE
    cannot move the peak, while the kernel still sees real, rotated queries and keys. Biases are zeroed.
    The conditional call (first of each step) is planted as above, the null call inverted: recording
    the null call, or misaligned queries/keys, moves the peak off the region."""
    backend = GenericBackend(build_tiny("longcat"), "tiny:longcat")
    den = backend.denoiser
    tokens = backend.tokens(PROMPT)["text"]
    key = tokens.index("▁bass")
    heads = den.blocks[0].cross_attn.heads
    head_dim = den.blocks[0].cross_attn.inner_dim // heads
    slow = head_dim // 2 - 1
    rope = den.rotary_embed
    assert rope.dim == head_dim and max(50, len(tokens)) * rope.base ** (-2 * slow / head_dim) < 0.02
    calls: dict[int, int] = {}
    handles = []
    with torch.no_grad():
        for block in den.blocks:
            attn = block.cross_attn
            assert attn.qk_norm
            for proj, norm in ((attn.to_q, attn.q_norm), (attn.to_k, attn.k_norm)):
                proj.weight.zero_()
                proj.bias.zero_()
                proj.weight[slow::head_dim, 0] = 1.0  # one channel per head: the slow pair's first
                norm.weight.fill_(GAIN)

            def plant(module, args, kwargs):
                n = calls[id(module)] = calls.get(id(module), 0) + 1
                hidden, context = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
                ctx = torch.zeros_like(context)
                ctx[:, key, 0] = 1.0
                sign = 1.0 if n % 2 == 1 else -1.0  # cond call first, then the null call
                return args, {**kwargs, "hidden_states": planted_queries(hidden, 0, sign), "encoder_hidden_states": ctx}
            handles.append(attn.register_forward_pre_hook(plant, with_kwargs=True))
    try:
        result = backend.generate(GenerationRequest(prompt=PROMPT, steps=2, guidance=4.0, duration=0.5, seed=2))
    finally:
        for h in handles:
            h.remove()
    assert sorted(calls.values()) == [4, 4]  # 2 steps × (cond, null) per cross-attention
    assert result.tokens["text"] == tokens
    assert_planted(bass_map(result, backend.planned_lattice("", 0.5)[0]))
