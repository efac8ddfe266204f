"""TopK SAE: training, statistics, TF-IDF scoring, steering vectors, feature browser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.interventions.caa import Steer
from engine.interventions.sae import (
    FeatureBrowser,
    TopKSAE,
    collect_activations,
    feature_activations,
    sae_stats,
    sae_steering_vectors,
    tfidf_scores,
    train_sae,
)
from engine.types import EngineError, GenerationRequest


@pytest.fixture(scope="module")
def backend():
    from engine.backends.embedded import EmbeddedBackend
    from engine.models.embedded.pipeline import EmbeddedPipeline

    return EmbeddedBackend(EmbeddedPipeline.build(seed=4))


@pytest.fixture(scope="module")
def acts(backend):
    return collect_activations(backend, ["drums", "piano", "bass and drums", "guitar"], layer=2, steps=2,
                               duration=1.0, seeds=[0])


def test_training_lowers_reconstruction_error_on_sparse_data():
    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((32, 16))
    codes = (rng.random((3000, 32)) < 0.08) * rng.random((3000, 32)) * 3
    data = (codes @ atoms).astype(np.float32)
    untrained = TopKSAE(16, 4, 4)
    with torch.no_grad():
        untrained.b_pre.copy_(torch.as_tensor(data.mean(0)))
    before = sae_stats(untrained, data)["nmse"]
    losses: list[float] = []
    sae = train_sae(data, expansion=4, k=4, epochs=15, batch_size=256, lr=3e-3, log=losses)
    after = sae_stats(sae, data)
    assert after["nmse"] < 0.5 * before and after["nmse"] < 0.3
    assert losses[-1] < losses[0]
    f = feature_activations(sae, data)
    assert ((f > 0).sum(1) <= 4).all() and (f >= 0).all()
    # dead / high-frequency fractions agree with a direct count
    rate = (f > 0).mean(0)
    assert after["dead_fraction"] == pytest.approx(float((rate == 0).mean()))
    assert after["high_freq_fraction"] == pytest.approx(float((rate > 0.1).mean()))
    np.testing.assert_allclose(np.linalg.norm(sae.W_dec.detach().numpy(), axis=0), 1.0, atol=1e-5)


def test_training_on_real_layer_outputs(acts):
    assert acts.data.shape[1] == 64 and acts.data.shape[0] == 4 * 2 * (acts.runs[0]["rows"][1])
    untrained = TopKSAE(64, 2, 8)
    with torch.no_grad():
        untrained.b_pre.copy_(torch.as_tensor(acts.data.mean(0)))
    sae = train_sae(acts.data, expansion=2, k=8, epochs=8, lr=3e-3)
    assert sae_stats(sae, acts.data)["nmse"] < sae_stats(untrained, acts.data)["nmse"]


def test_tfidf_matches_a_hand_computation():
    fc = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])  # μ_c = [2, 0, 1]
    fo = np.array([[0.0, 1.0, 1.0], [0.0, 3.0, 1.0]])  # μ_o = [0, 2, 1]
    eps = 0.5
    want = [2 * np.log(1 + 1 / 0.5), 0.0, 1 * np.log(1 + 1 / 1.5)]
    np.testing.assert_allclose(tfidf_scores(fc, fo, eps=eps), want)
    with pytest.raises(EngineError, match="both"):
        tfidf_scores(np.zeros((0, 3)), fo)


def test_steering_vector_sums_top_tau_decoder_columns_and_steers(backend, acts, tmp_path):
    sae = train_sae(acts.data, expansion=2, k=8, epochs=2)
    scores = np.arange(sae.n_features, dtype=float)[::-1].copy()  # feature 0 best, then 1, ...
    vec = sae_steering_vectors(sae, scores, 3, acts.site, backend.model_id, "drums")
    np.testing.assert_allclose(vec.vectors[acts.site], sae.W_dec.detach().numpy()[:, :3].sum(1), rtol=1e-6)
    assert vec.meta["features"] == [0, 1, 2] and vec.method == "sae"
    req = dict(prompt="piano", steps=2, duration=1.0, seed=0, capture=False)
    plain = backend.generate(GenerationRequest(**req)).mel
    steered = backend.generate(GenerationRequest(**req, interventions=(Steer(vec, 4.0),))).mel
    assert np.abs(steered - plain).max() > 1e-5
    back, info = TopKSAE.load(sae.save(tmp_path / "sae.safetensors", {"site": acts.site}))
    assert info["site"] == acts.site
    np.testing.assert_array_equal(back.W_dec.detach().numpy(), sae.W_dec.detach().numpy())
    with pytest.raises(EngineError, match="τ"):
        sae_steering_vectors(sae, scores, 0, acts.site, backend.model_id)


def test_feature_browser(acts):
    sae = train_sae(acts.data, expansion=2, k=8, epochs=2)
    browser = FeatureBrowser(sae, acts)
    j = int(np.argmax(browser.codes.mean(0)))
    top = browser.top_examples(j, n=3)
    assert [t["mean"] for t in top] == sorted([t["mean"] for t in top], reverse=True)
    a, b = acts.runs[top[0]["index"]]["rows"]
    assert top[0]["mean"] == pytest.approx(float(browser.codes[a:b, j].mean()))
    grid = browser.feature_map(j, top[0]["index"], target=(16, 8))
    assert grid.shape == (16, 8) and grid.max() > 0
    with pytest.raises(EngineError, match="unknown feature"):
        browser.top_examples(sae.n_features)


def test_bad_sae_inputs(backend):
    with pytest.raises(EngineError, match="k="):
        TopKSAE(8, 2, 17)
    with pytest.raises(EngineError, match="empty"):
        collect_activations(backend, [], layer=0, steps=1, duration=1.0)
    with pytest.raises(EngineError, match="unknown layer"):
        collect_activations(backend, ["drums"], layer=42, steps=1, duration=1.0)
    with pytest.raises(EngineError, match="SAE data"):
        train_sae(np.zeros((1, 4)))
