"""Head reduction and text-token pooling (AIBA Eq. 2 and 4–7).

All functions take one site's attention ``(H, Q, K)`` or a head-reduced ``(Q, K)`` and return
float64. Pooling turns ``(Q, K)`` into a per-query vector ``(Q,)``; ``"none"`` keeps ``(Q, K)``
(one map per token).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.types import EngineError

POOLINGS = ("mean", "max", "weighted", "keyword", "none")


def reduce_heads(probs: np.ndarray, head_mask: Sequence[bool] | None = None) -> np.ndarray | None:
    """Mean over heads (Eq. 2), over the kept heads only when ``head_mask`` is given.

    Returns ``(Q, K)`` float64, or ``None`` when the mask keeps no head of this site (the caller
    then leaves the site out). A mask on head-mean frames (``H == 1``) must have length 1.
    """
    a = np.asarray(probs)
    if a.ndim != 3:
        raise EngineError(f"attention must be (heads, queries, keys), got shape {a.shape}")
    if head_mask is None:
        return a.mean(axis=0, dtype=np.float64)
    mask = np.asarray(head_mask, dtype=bool)
    if mask.shape != (a.shape[0],):
        hint = " (frames are head-mean: record with per_head=True)" if a.shape[0] == 1 else ""
        raise EngineError(
            f"head mask has {mask.size} entries but the site has {a.shape[0]} heads{hint}"
        )
    if not mask.any():
        return None
    return a[mask].mean(axis=0, dtype=np.float64)


def token_weights(relevance: Sequence[float], beta: float = 1.0) -> np.ndarray:
    """``ω = softmax(β·u)`` over tokens (Eq. 6), computed stably."""
    u = np.asarray(relevance, dtype=np.float64)
    if u.ndim != 1 or u.size == 0 or not np.all(np.isfinite(u)):
        raise EngineError("token relevance must be a non-empty 1-D list of finite numbers")
    z = beta * u
    z = np.exp(z - z.max())
    return z / z.sum()


def pool_tokens(
    attn: np.ndarray,
    method: str = "mean",
    *,
    relevance: Sequence[float] | None = None,
    beta: float = 1.0,
    keywords: Sequence[int] | None = None,
) -> np.ndarray:
    """Pool ``(Q, K)`` attention over text tokens.

    ``mean`` (Eq. 4): ``(1/K) Σ_k A``; ``max`` (Eq. 5): ``max_k A``; ``weighted`` (Eq. 6):
    ``Σ_k ω_k A`` with ``ω = softmax(β·relevance)``; ``keyword`` (Eq. 7): mean over the token
    indices in ``keywords``; ``none``: ``(Q, K)`` unchanged (per-token maps).
    """
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim != 2:
        raise EngineError(f"pooling needs (queries, keys) attention, got shape {a.shape}")
    n_k = a.shape[1]
    if method == "mean":
        return a.mean(axis=1)
    if method == "max":
        return a.max(axis=1)
    if method == "weighted":
        if relevance is None or len(relevance) != n_k:
            raise EngineError(f"weighted pooling needs one relevance score per token ({n_k})")
        return a @ token_weights(relevance, beta)
    if method == "keyword":
        idx = _check_indices(keywords, n_k)
        return a[:, idx].mean(axis=1)
    if method == "none":
        return a
    raise EngineError(f"unknown pooling {method!r}: use one of {', '.join(POOLINGS)}")


def _check_indices(keywords: Sequence[int] | None, n_k: int) -> np.ndarray:
    if keywords is None or len(keywords) == 0:
        raise EngineError(
            "keyword pooling needs at least one token index (e.g. from keyword_indices)"
        )
    idx = np.asarray(keywords, dtype=np.int64)
    if idx.min() < 0 or idx.max() >= n_k:
        raise EngineError(f"keyword token indices {list(idx)} are outside 0..{n_k - 1}")
    return idx


_PIECE_MARKS = ("▁", "Ġ", "##", "</w>")


def normalise_token(token: str) -> str:
    """A token string without tokenizer word marks (``▁``, ``Ġ``, ``##``, ``</w>``), lower case."""
    t = token
    for mark in _PIECE_MARKS:
        t = t.replace(mark, "")
    return t.strip().lower()


def keyword_indices(tokens: Sequence[str], words: Sequence[str]) -> list[int]:
    """Indices of the tokens that spell any of ``words`` (whole tokens or word pieces).

    A token matches when its normalised text equals a word, or a run of consecutive tokens
    concatenates to a word (``["▁gu", "itar"]`` → ``guitar``). Raises when nothing matches.
    """
    norm = [normalise_token(t) for t in tokens]
    found: set[int] = set()
    for word in words:
        w = word.strip().lower()
        for start in range(len(norm)):
            if not norm[start]:
                continue
            acc = ""
            for end in range(start, len(norm)):
                acc += norm[end]
                if acc == w:
                    found.update(range(start, end + 1))
                    break
                if not w.startswith(acc):
                    break
    if not found:
        raise EngineError(f"none of {list(words)} is among the prompt tokens {list(tokens)}")
    return sorted(found)
