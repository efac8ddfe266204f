"""Head reduction and token pooling (AIBA Eq. 2, 4-7) against hand computations."""

import numpy as np
import pytest

from engine.analysis.pooling import keyword_indices, pool_tokens, reduce_heads, token_weights
from engine.types import EngineError

A = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])  # 2 queries x 3 tokens


def test_pooling_variants_by_hand():
    np.testing.assert_allclose(pool_tokens(A, "mean"), [1 / 3, 1 / 3])
    np.testing.assert_allclose(pool_tokens(A, "max"), [0.5, 0.6])
    np.testing.assert_allclose(pool_tokens(A, "keyword", keywords=[0, 2]), [0.25, 0.45])
    np.testing.assert_array_equal(pool_tokens(A, "none"), A)
    u = [0.0, np.log(2.0), np.log(3.0)]  # beta = 1: weights 1/6, 2/6, 3/6
    np.testing.assert_allclose(
        pool_tokens(A, "weighted", relevance=u), [(0.2 + 1.0 + 0.9) / 6, (0.6 + 0.2 + 0.9) / 6]
    )
    # beta = 0 gives the mean; a large beta picks the most relevant token
    np.testing.assert_allclose(
        pool_tokens(A, "weighted", relevance=u, beta=0.0), pool_tokens(A, "mean")
    )
    np.testing.assert_allclose(
        pool_tokens(A, "weighted", relevance=u, beta=200.0), A[:, 2], atol=1e-12
    )
    np.testing.assert_allclose(token_weights([1000.0, 1000.0]), [0.5, 0.5])  # stable softmax


def test_pooling_errors():
    with pytest.raises(EngineError):
        pool_tokens(A, "median")
    with pytest.raises(EngineError):
        pool_tokens(A, "keyword", keywords=[3])
    with pytest.raises(EngineError):
        pool_tokens(A, "weighted", relevance=[1.0])


def test_reduce_heads_with_mask():
    probs = np.stack([A, 2 * A, 4 * A]).astype(np.float16)
    np.testing.assert_allclose(reduce_heads(probs), (7 / 3) * A, rtol=1e-3)
    np.testing.assert_allclose(reduce_heads(probs, [False, True, True]), 3 * A, rtol=1e-3)
    assert reduce_heads(probs, [False, False, False]) is None
    with pytest.raises(EngineError, match="per_head"):
        reduce_heads(probs[:1], [True, False, True])


def test_keyword_indices_joins_word_pieces():
    toks = ["▁a", "▁gu", "itar", "▁and", "▁bass", "</s>"]
    assert keyword_indices(toks, ["guitar"]) == [1, 2]
    assert keyword_indices(toks, ["Bass", "guitar"]) == [1, 2, 4]
    assert keyword_indices(["Ġdrums", "Ġloop"], ["drums"]) == [0]
    with pytest.raises(EngineError):
        keyword_indices(toks, ["piano"])
