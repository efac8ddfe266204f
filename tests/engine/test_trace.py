"""``engine.trace(pipe)`` on user-built tiny pipelines: output unchanged, the same frames as the
engine's own run, hooks gone after the block (also when the pipeline raises), maps and save."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import engine
from engine.backends.registry import _backend_class
from engine.backends.tiny import build_tiny
from engine.probe.attach import hook_count
from engine.types import EngineError, GenerationRequest

PROMPT = "A hammer hitting a wooden surface"
FAMILIES = {"audioldm2": ("audio_length_in_s", 0.32), "stable_audio": ("audio_end_in_s", 0.1)}


@pytest.fixture(scope="module", params=list(FAMILIES))
def pipe(request):
    pipe = build_tiny(request.param)
    pipe.set_progress_bar_config(disable=True)
    pipe.family = request.param
    return pipe


def denoiser(pipe):
    return pipe.unet if pipe.family == "audioldm2" else pipe.transformer


def call(pipe, guidance, **kw):
    key, seconds = FAMILIES[pipe.family]
    return pipe(PROMPT, num_inference_steps=3, guidance_scale=guidance, output_type="np",
                generator=torch.Generator().manual_seed(7), **{key: seconds}, **kw).audios


def state(pipe):
    """What a trace must leave as it found it."""
    den = denoiser(pipe)
    return (dict(den.attn_processors), hook_count(pipe.vae), hook_count(den),
            sorted(k for k in vars(pipe) if not k.startswith("_")), "decode" in vars(pipe.vae))


@pytest.mark.parametrize("guidance", [3.0, 1.0], ids=["cfg", "no_cfg"])
def test_trace_leaves_output_bit_identical_and_records_what_the_engine_records(pipe, guidance):
    before = state(pipe)
    stock = call(pipe, guidance)
    with engine.trace(pipe) as tr:
        traced = call(pipe, guidance)
    assert np.array_equal(stock, traced)
    assert state(pipe) == before
    assert tr.run.cfg.guided is (guidance > 1)
    # the engine's own run of the same settings records the same frames (cond item, crop, steps)
    key, seconds = FAMILIES[pipe.family]
    backend = _backend_class(pipe.family)(pipe, "tiny")
    own = backend.generate(GenerationRequest(prompt=PROMPT, steps=3, guidance=guidance, seed=7, duration=seconds))
    assert tr.result.frames.keys() == own.frames.keys() and len(own.frames) > 0
    for key in own.frames:
        np.testing.assert_array_equal(tr.result.frames[key], own.frames[key])
    assert tr.result.lattices == own.lattices
    assert tr.result.tokens == own.tokens


def test_trace_maps(pipe):
    with engine.trace(pipe) as tr:
        call(pipe, 3.0)
    tokens = tr.tokens
    assert tokens[:3] == ["▁A", "▁hammer", "▁hitting"]
    heat = tr.word_map("hammer")
    time_only = pipe.family == "stable_audio"
    assert heat.shape == ((128, 1) if time_only else (128, 64))
    np.testing.assert_array_equal(heat, tr.aggregate[tokens.index("▁hammer")])
    assert tr.aggregate.shape == (len(tokens), *heat.shape)
    site_maps = tr.site_maps
    main = tr.contexts[0]
    assert main == ("t5" if pipe.family == "audioldm2" else "text")
    assert set(site_maps) == {s.name for s in tr.result.sites if s.context == main and s.name in tr.result.lattices}
    # mean aggregation: the aggregate is the mean of the per-site maps (each a mean over steps)
    np.testing.assert_allclose(np.mean(list(site_maps.values()), axis=0), tr.aggregate, rtol=1e-5, atol=1e-7)
    with pytest.raises(EngineError, match="violin"):
        tr.word_map("violin")


def test_trace_restores_everything_when_the_pipeline_raises(pipe):
    before = state(pipe)

    def stop(step, t, latents):
        if step == 1:
            raise RuntimeError("stop here")

    tr = engine.trace(pipe)
    with pytest.raises(RuntimeError, match="stop here"), tr:
        call(pipe, 3.0, callback=stop, callback_steps=1)
    assert state(pipe) == before
    with pytest.raises(EngineError, match="nothing traced"):
        tr.word_map("hammer")


def test_trace_save_writes_the_analyze_files(pipe, tmp_path):
    with engine.trace(pipe, sites=None, steps=[1, 2]) as tr:
        call(pipe, 3.0)
    assert {t for t, _ in tr.result.frames} == {1, 2}
    out = tr.save(tmp_path / "run", figures=False)
    data = np.load(out / "attention.npz")
    for key in ("tokens", "aggregate", "pooled", "hz", "times", "site_maps", "step_maps", "sigmas"):
        assert key in data.files
    assert list(data["tokens"]) == tr.tokens
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"]["family"] == pipe.family and run["recipe"]["traced"] is True
    audio, sr = sf.read(out / "audio.wav")
    assert sr == tr.backend.sample_rate and audio.size > 0 and np.isfinite(audio).all()
    with pytest.raises(EngineError):
        tr.save(out)  # not a new folder


def test_trace_rejects_bad_options_in_one_line(pipe):
    with pytest.raises(EngineError, match="unknown site"):
        engine.trace(pipe, sites=["nope"])
    with pytest.raises(EngineError, match="grid"):
        engine.trace(pipe, grid=(0, 3))
    with pytest.raises(EngineError, match="does not know"):
        engine.trace(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("family, length", [("stable_audio", {"audio_end_in_s": 0.1}),
                                            ("ace_step", {"audio_duration": 1.0})])
def test_trace_on_a_bfloat16_pipeline(family, length):
    pipe = build_tiny(family).to(dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe("funky bass", num_inference_steps=2, guidance_scale=3.0, output_type="pt",
                    generator=torch.Generator().manual_seed(0), **length).audios

    stock = run()
    with engine.trace(pipe) as tr:
        traced = run()
    assert torch.equal(stock, traced)
    heat = tr.word_map("bass")
    assert heat.shape == (128, 1) and np.isfinite(heat).all() and heat.max() > 0
