"""CAA steering vectors and the Steer intervention on real tiny pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.interventions.caa import (
    ALPHA_MAX,
    OutputCollector,
    Steer,
    SteeringVectors,
    check_alpha,
    compute_caa,
    renorm,
)
from engine.interventions.layers import cross_sites
from engine.types import EngineError, GenerationRequest


@pytest.fixture(scope="module", params=["embedded-untrained", "tiny:stable_audio"])
def backend(request):
    if request.param == "embedded-untrained":
        from engine.backends.embedded import EmbeddedBackend
        from engine.models.embedded.pipeline import EmbeddedPipeline

        return EmbeddedBackend(EmbeddedPipeline.build(seed=2))
    from engine.backends.registry import load_backend

    return load_backend(request.param)


def _dur(backend) -> float:
    return 0.2 if backend.family == "stable_audio" else 1.0


def _run(backend, prompt, interventions=(), seed=5, steps=2):
    return backend.generate(GenerationRequest(prompt=prompt, steps=steps, guidance=3.0, duration=_dur(backend),
                                              seed=seed, capture=False, interventions=tuple(interventions)))


def _width(backend, site) -> int:
    return backend.denoiser.get_submodule(site).to_out[0].out_features


def _random_vectors(backend, seed=0) -> SteeringVectors:
    rng = np.random.default_rng(seed)
    vecs = {}
    for s in cross_sites(backend):
        v = rng.standard_normal(_width(backend, s)).astype(np.float32)
        vecs[s] = v / np.linalg.norm(v)
    return SteeringVectors(vecs, backend.model_id, concept="test")


def test_alpha_zero_is_bit_identical_and_nonzero_alpha_steers(backend):
    vectors = _random_vectors(backend)
    plain = _run(backend, "piano and bass")
    zero = _run(backend, "piano and bass", [Steer(vectors, 0.0, use_renorm=True)])
    assert np.array_equal(zero.audio, plain.audio)
    steered = _run(backend, "piano and bass", [Steer(vectors, 5.0)])
    assert np.max(np.abs(steered.audio - plain.audio)) > 1e-6


def test_steering_adds_alpha_v_and_renorm_keeps_token_norms(backend):
    site = cross_sites(backend)[0]  # first cross layer: its step-0 input is the unsteered one
    vectors = _random_vectors(backend, seed=1)
    v = torch.as_tensor(vectors.vectors[site])
    ref = OutputCollector([site], keep_tokens=True)
    _run(backend, "drums", [ref])
    plain_tokens = torch.as_tensor(ref.tokens[site][0])
    col = OutputCollector([site], keep_tokens=True)
    _run(backend, "drums", [Steer(vectors, 3.0, sites=[site]), col])
    np.testing.assert_allclose(col.tokens[site][0], (plain_tokens + 3.0 * v).numpy(), rtol=1e-5, atol=1e-5)
    col_rn = OutputCollector([site], keep_tokens=True)
    _run(backend, "drums", [Steer(vectors, 3.0, sites=[site], use_renorm=True), col_rn])
    steered = torch.as_tensor(col_rn.tokens[site][0])
    np.testing.assert_allclose(steered.norm(dim=-1).numpy(), plain_tokens.norm(dim=-1).numpy(), rtol=1e-5)
    # and the direction is that of h + αv (ReNorm only rescales each token)
    want = plain_tokens + 3.0 * v
    cos = (steered * want).sum(-1) / (steered.norm(dim=-1) * want.norm(dim=-1))
    assert float(cos.min()) > 1 - 1e-5


def test_caa_vector_is_the_normalised_difference_of_means(backend):
    """Reference: torch forward hooks on the attention modules (independent of the processors)."""
    sites = cross_sites(backend)[:2]
    pos, neg = ["drums and bass", "drums"], ["piano"]

    def hooked_means(prompt):
        means = {s: [] for s in sites}
        handles = []
        for s in sites:
            def hook(mod, args, out, s=s):
                means[s].append(out[out.shape[0] // 2:].mean(dim=(0, 1)).detach().numpy())
            handles.append(backend.denoiser.get_submodule(s).register_forward_hook(hook))
        try:
            _run(backend, prompt, seed=0, steps=2)
        finally:
            for h in handles:
                h.remove()
        return {s: np.mean(means[s], axis=0) for s in sites}

    ref_pos = [hooked_means(p) for p in pos]
    ref_neg = [hooked_means(p) for p in neg]
    vectors = compute_caa(backend, pos, neg, layers=[0, 1], steps=2, guidance=3.0, duration=_dur(backend),
                          seeds=[0], concept="drums")
    for s in sites:
        d = np.mean([m[s] for m in ref_pos], axis=0) - np.mean([m[s] for m in ref_neg], axis=0)
        np.testing.assert_allclose(vectors.vectors[s], d / np.linalg.norm(d), rtol=1e-4, atol=1e-6)
        assert np.linalg.norm(vectors.vectors[s]) == pytest.approx(1.0, abs=1e-6)


def test_per_step_vectors_and_file_round_trip(backend, tmp_path):
    vectors = compute_caa(backend, ["drums"], ["piano"], layers=[0], steps=2, duration=_dur(backend),
                          seeds=[1], per_step=True, concept="drums")
    v = next(iter(vectors.vectors.values()))
    assert v.shape[0] == 2
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    for suffix in (".npz", ".safetensors"):
        back = SteeringVectors.load(vectors.save(tmp_path / f"v{suffix}"))
        assert back.sites == vectors.sites and back.per_step and back.positive == ["drums"]
        assert back.model_id == backend.model_id
        np.testing.assert_array_equal(back.vectors[vectors.sites[0]], v)
    with pytest.raises(EngineError, match="computed for"):
        _run(backend, "drums", [Steer(vectors, 1.0)], steps=3)


def test_bad_inputs_get_clear_errors(backend, tmp_path):
    vectors = _random_vectors(backend)
    with pytest.raises(EngineError, match="empty"):
        compute_caa(backend, [], ["piano"], steps=1, duration=_dur(backend))
    with pytest.raises(EngineError, match="empty prompt"):
        compute_caa(backend, ["drums", " "], ["piano"], steps=1, duration=_dur(backend))
    for bad in (ALPHA_MAX + 1, -ALPHA_MAX - 1, float("nan"), "x"):
        with pytest.raises(EngineError, match="α|number"):
            check_alpha(bad)
    assert check_alpha(-ALPHA_MAX) == -ALPHA_MAX
    with pytest.raises(EngineError, match="no layer"):
        Steer(vectors, 1.0, sites=["nope.attn2"])
    with pytest.raises(EngineError, match="unknown layer"):
        compute_caa(backend, ["drums"], ["piano"], layers=[99], steps=1, duration=_dur(backend))
    wrong = SteeringVectors({s: np.ones(3, np.float32) for s in cross_sites(backend)}, "other")
    with pytest.raises(EngineError, match="channels"):
        _run(backend, "drums", [Steer(wrong, 1.0)])
    with pytest.raises(EngineError, match="npz or .safetensors"):
        vectors.save(tmp_path / "v.pt")
    with pytest.raises(EngineError, match="no steering-vector file"):
        SteeringVectors.load(tmp_path / "missing.npz")


def test_renorm_matches_numpy():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 5, 4)).astype(np.float32)
    s = h + 7.0 * rng.standard_normal(4).astype(np.float32)
    out = renorm(torch.as_tensor(s), torch.as_tensor(h)).numpy()
    want = s / np.linalg.norm(s, axis=-1, keepdims=True) * np.linalg.norm(h, axis=-1, keepdims=True)
    np.testing.assert_allclose(out, want, rtol=1e-5)
