"""RunRelevance (frames added as they arrive, each read once) gives label_free_relevance's numbers,
checked against a hand computation of the module docstring's formula on random frames."""

from __future__ import annotations

import numpy as np

from engine.analysis.heads import RunRelevance, label_free_relevance, relevance_over_runs


def _frames(rng, steps=3, sites=("a", "b"), heads=4, queries=6, keys=5):
    out = {}
    for step in range(steps):
        for site in sites:
            p = rng.random((heads, queries, keys))
            out[(step, site)] = p / p.sum(axis=2, keepdims=True)
    return out


def test_incremental_relevance_equals_the_formula_and_the_batch_function():
    rng = np.random.default_rng(7)
    frames = _frames(rng)
    concept = [1, 3]
    run = RunRelevance(concept)
    keys = list(frames)
    rng.shuffle(keys)
    for batch in (keys[:2], keys[2:5], keys[:5], keys[5:]):  # in pieces, some frames twice
        run.add({k: frames[k] for k in batch})
    got = relevance_over_runs([run.means()])
    for site in ("a", "b"):
        per_step = []
        for step in range(3):
            per_key = frames[(step, site)].mean(axis=1)  # (H, K)
            per_step.append(np.log(per_key[:, concept].mean(axis=1) + 1e-12)
                            - np.log(per_key[:, [0, 2, 4]].mean(axis=1) + 1e-12))
        hand = np.mean(per_step, axis=0)
        np.testing.assert_allclose(got[site].score, hand, rtol=1e-12)
        np.testing.assert_allclose(got[site].score, label_free_relevance([frames], [concept])[site].score, rtol=1e-12)
    assert RunRelevance(concept, sites=["b"]).means() == {}
