"""Kernel-level fallback: intercepting torch's scaled_dot_product_attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax

from engine.probe.sdpa_intercept import SDPAInterceptor, sdpa_probs


class TinyBlock(torch.nn.Module):
    """Self-attention over x, then cross-attention from x to a context; plain SDPA calls."""

    def __init__(self, dim: int = 8, heads: int = 2, ctx_dim: int = 6) -> None:
        super().__init__()
        self.heads = heads
        self.q1, self.k1, self.v1 = (torch.nn.Linear(dim, dim) for _ in range(3))
        self.q2 = torch.nn.Linear(dim, dim)
        self.k2, self.v2 = torch.nn.Linear(ctx_dim, dim), torch.nn.Linear(ctx_dim, dim)

    def split(self, x):
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x, ctx, mask=None):
        h = F.scaled_dot_product_attention(self.split(self.q1(x)), self.split(self.k1(x)),
                                           self.split(self.v1(x)))
        x = x + h.transpose(1, 2).reshape(x.shape)
        h = F.scaled_dot_product_attention(self.split(self.q2(x)), self.split(self.k2(ctx)),
                                           self.split(self.v2(ctx)), attn_mask=mask)
        return x + h.transpose(1, 2).reshape(x.shape)


def test_intercept_records_tags_and_restores():
    torch.manual_seed(0)
    block = TinyBlock().eval()
    x, ctx = torch.randn(2, 5, 8), torch.randn(2, 3, 6)
    mask = torch.tensor([True, True, False]).expand(2, 1, 5, 3)
    original = F.scaled_dot_product_attention
    with torch.no_grad():
        expected_out = block(x, ctx, mask)
        with SDPAInterceptor(sample=1, head_mean=False) as probe:
            out = block(x, ctx, mask)
    assert F.scaled_dot_product_attention is original
    assert torch.equal(out, expected_out)
    assert [c.kind for c in probe.calls] == ["self", "cross"]
    cross = probe.calls[1]
    assert cross.probs.shape == (2, 5, 3)
    with torch.no_grad():
        h = x + F.scaled_dot_product_attention(
            block.split(block.q1(x)), block.split(block.k1(x)), block.split(block.v1(x))
        ).transpose(1, 2).reshape(x.shape)
        q = block.split(block.q2(h))[1].numpy().astype(np.float64)
        k = block.split(block.k2(ctx))[1].numpy().astype(np.float64)
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(4)
    logits[..., 2] = -np.inf  # masked key
    np.testing.assert_allclose(cross.probs.astype(np.float64), softmax(logits, -1), atol=2e-3)
    assert np.all(cross.probs[..., 2] == 0)


def test_intercept_restores_on_error_and_head_mean_gqa():
    original = F.scaled_dot_product_attention
    q, k, v = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    seen = []
    with pytest.raises(RuntimeError, match="boom"), SDPAInterceptor(on_call=seen.append):
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=True)
        raise RuntimeError("boom")
    assert F.scaled_dot_product_attention is original
    (call,) = seen
    assert call.kind == "self" and call.probs.shape == (1, 6, 6)
    qn, kn = q[0].double().numpy(), k[0].double().numpy()
    kn = np.repeat(kn, 2, axis=0)  # query head h uses K/V head h // 2
    logits = qn @ kn.transpose(0, 2, 1) / np.sqrt(8)
    logits[:, np.triu_indices(6, 1)[0], np.triu_indices(6, 1)[1]] = -np.inf
    np.testing.assert_allclose(call.probs[0], softmax(logits, -1).mean(0), atol=2e-3)


@pytest.mark.parametrize("case", ["causal", "float mask", "bool mask"])
def test_sdpa_probs_times_values_is_the_kernels_output(case):
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)  # GQA: 2 K/V heads
    kw = {"is_causal": True} if case == "causal" else {}
    if case == "float mask":
        kw["attn_mask"] = torch.zeros(2, 1, 5, 5).masked_fill(torch.rand(2, 1, 5, 5) > 0.6, -1e4)
    elif case == "bool mask":
        kw["attn_mask"] = (torch.rand(2, 1, 5, 5) > 0.4) | torch.eye(5, dtype=torch.bool)
    probs = sdpa_probs(q, k, enable_gqa=True, **kw)
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw)
    torch.testing.assert_close(probs @ v.repeat_interleave(2, dim=1), out, atol=1e-5, rtol=1e-4)
    assert torch.allclose(probs.sum(-1), torch.ones(()))
