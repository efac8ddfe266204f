"""K/V activation patching on real tiny pipelines (AudioLDM2, Stable Audio, embedded UNet)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.interventions.layers import cross_sites, resolve_layers
from engine.interventions.patching import KVPatch, KVRecorder, impact_score
from engine.types import EngineError, GenerationRequest

TARGET = "a fast drums loop with bass"
SOURCE = "calm piano"


def _signal(result) -> np.ndarray:
    """The generated mel where the family exposes it (tiny AudioLDM2's waveform is ~1e-7 in
    scale, so its mel is the meaningful output), else the waveform."""
    return result.mel if result.mel is not None else result.audio


def _req(backend, prompt, interventions=(), seed=3):
    dur = 0.2 if backend.family == "stable_audio" else 1.0
    return GenerationRequest(prompt=prompt, steps=3, guidance=3.0, duration=dur, seed=seed,
                             capture=False, interventions=tuple(interventions))


@pytest.fixture(scope="module", params=["tiny:audioldm2", "tiny:stable_audio", "embedded-untrained"])
def backend(request):
    if request.param == "embedded-untrained":
        from engine.backends.embedded import EmbeddedBackend
        from engine.models.embedded.pipeline import EmbeddedPipeline

        return EmbeddedBackend(EmbeddedPipeline.build(seed=1))
    from engine.backends.registry import load_backend

    return load_backend(request.param)


def test_recording_leaves_the_run_unchanged(backend):
    plain = _signal(backend.generate(_req(backend, TARGET)))
    rec = KVRecorder(cross_sites(backend))
    recorded = _signal(backend.generate(_req(backend, TARGET, [rec])))
    assert np.max(np.abs(recorded - plain)) <= 1e-6
    assert set(rec.cache.sites) == set(cross_sites(backend))
    # the text context is constant over steps: one stored entry per site, not one per step
    assert rec.cache.stored_entries() == len(cross_sites(backend))


def test_full_batch_patch_of_every_layer_reproduces_the_target(backend):
    rec = KVRecorder(cross_sites(backend))
    target = _signal(backend.generate(_req(backend, TARGET, [rec])))
    source = _signal(backend.generate(_req(backend, SOURCE)))
    assert np.max(np.abs(source - target)) > 1e-4  # the prompts really differ
    patched = _signal(backend.generate(_req(backend, SOURCE, [KVPatch(rec.cache, cross_sites(backend))])))
    assert np.max(np.abs(patched - target)) <= 1e-6
    # one layer alone moves the source run but does not reach the target
    one = _signal(backend.generate(_req(backend, SOURCE, [KVPatch(rec.cache, cross_sites(backend)[:1])])))
    assert np.max(np.abs(one - source)) > 0


def test_k_only_patch_with_different_key_counts_is_refused(backend):
    rec = KVRecorder(cross_sites(backend))
    backend.generate(_req(backend, TARGET, [rec]))
    patch = KVPatch(rec.cache, cross_sites(backend), mode="k")
    if backend.family == "stable_audio":  # T5 padded to max_length: equal counts, K-only works
        backend.generate(_req(backend, SOURCE, [patch]))
        return
    with pytest.raises(EngineError, match="equal key counts"):
        backend.generate(_req(backend, SOURCE, [patch]))


def test_bad_layers_and_modes_get_clear_errors(backend):
    n = len(cross_sites(backend))
    with pytest.raises(EngineError, match="unknown layer"):
        resolve_layers(backend, [n])
    with pytest.raises(EngineError, match="unknown layer"):
        resolve_layers(backend, ["down_blocks.9.attn2"])
    assert resolve_layers(backend, f"0,{n - 1}") == [cross_sites(backend)[0], cross_sites(backend)[-1]]
    rec = KVRecorder(cross_sites(backend))
    with pytest.raises(EngineError, match="patch mode"):
        KVPatch(rec.cache, [], mode="q")


def test_impact_score_matches_eq9_by_hand():
    # sim(target)=0.8, sim(source)=0.2; patched 0.5 -> (0.5-0.2)/(0.8-0.2) = 0.5
    assert impact_score(np.array([0.5, 0.8, 0.2]), 0.2, 0.8) == pytest.approx([0.5, 1.0, 0.0])
    assert np.isnan(impact_score(0.4, 0.3, 0.3))


def test_a_concept_the_scorer_cannot_see_is_flagged_not_measurable():
    """Eq. 9 needs sim(target) > sim(source); a reversed pair marks the sweep as not measurable."""
    import numpy as np

    from engine.interventions.patching import PatchReport

    def report(target, source):
        return PatchReport(concept="bass", query="bass", scorer="band-template", mode="kv",
                           pairs=[("bass", "guitar")], seeds=[0], sites=["a", "b"], layer_numbers=[0, 1],
                           sim_target=np.array([[target]]), sim_source=np.array([[source]]),
                           sim_patched=np.array([[[0.25]], [[0.26]]]))

    assert report(0.3, 0.2).measurable
    assert not report(0.21, 0.28).measurable
    assert report(0.21, 0.28).to_dict()["measurable"] is False
