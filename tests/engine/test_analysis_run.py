"""Analysis on a real run: a tiny random-weight AudioLDM2 generates with per-head capture."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.analysis.aggregate import aggregate_run
from engine.analysis.heads import head_maps, label_free_relevance, select_heads, selective_map
from engine.analysis.pooling import keyword_indices
from engine.types import EngineError, GenerationRequest

GRID = (32, 16)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from engine.backends.registry import load_backend
    from engine.backends.tiny import save_tiny

    folder = save_tiny("audioldm2", tmp_path_factory.mktemp("models") / "tiny-audioldm2")
    backend = load_backend(str(folder))
    return backend.generate(
        GenerationRequest(prompt="bass and drums", steps=3, duration=0.2, per_head=True)
    )


def _torch_map(probs: np.ndarray, lattice, token: int) -> np.ndarray:
    p = torch.from_numpy(probs.astype(np.float64).mean(axis=0)[:, token].reshape(1, 1, *lattice))
    return F.interpolate(p, size=GRID, mode="bilinear", align_corners=False)[0, 0].numpy()


def test_per_token_aggregate_of_a_real_run(run):
    with pytest.raises(EngineError, match="contexts"):
        aggregate_run(run, target=GRID)  # AudioLDM2 attends to t5 and loa
    agg = aggregate_run(run, "t5", target=GRID)
    assert agg.maps.shape == (len(run.tokens["t5"]), *GRID)
    assert agg.tokens == run.tokens["t5"] and len(agg.steps) == 3
    # softmax rows sum to 1 over keys; head/step/site means and bilinear resizing keep that
    np.testing.assert_allclose(agg.maps.sum(axis=0), 1.0, atol=2e-3)
    # the mean over calls, rebuilt call by call with torch's resize
    ref = np.mean(
        [_torch_map(run.frames[(t, s)], run.lattices[s], 0) for t in agg.steps for s in agg.sites],
        axis=0,
    )
    np.testing.assert_allclose(agg.maps[0], ref, atol=1e-9)


def test_head_selection_on_a_real_run(run):
    t5_sites = [s.name for s in run.sites if s.kind == "cross" and s.context == "t5"]
    t5_frames = {k: v for k, v in run.frames.items() if k[1] in t5_sites}
    bass = keyword_indices(run.tokens["t5"], ["bass"])
    rel = label_free_relevance([t5_frames], [bass], ignore=[[len(run.tokens["t5"]) - 1]])
    assert set(rel) == set(t5_sites)
    assert all(r.score.shape == (4,) and np.all(np.isfinite(r.score)) for r in rel.values())
    mask = select_heads({s: r.score for s, r in rel.items()}, 3, "top")
    assert sum(map(sum, mask.values())) == 3
    agg = aggregate_run(run, "t5", target=GRID, pooling="keyword", keywords=bass, head_mask=mask)
    per_head = head_maps(t5_frames, run.lattices, bass, target=GRID)
    np.testing.assert_allclose(agg.maps, selective_map(per_head, mask), atol=1e-9)
