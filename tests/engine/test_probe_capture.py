"""Attention capture on the tiny AudioLDM2 and Stable Audio pipelines (real diffusers models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from engine.backends.audioldm2 import AudioLDM2Backend
from engine.backends.tiny import build_tiny
from engine.probe.attach import hook_count
from engine.probe.sinks import renormalise_over_real_keys
from engine.types import CancelToken, EngineError, GenerationRequest, RunCancelled

PROMPT = "A hammer hitting a wooden surface"


def ldm_request(**kw) -> GenerationRequest:
    base = {"prompt": PROMPT, "steps": 3, "duration": 0.32, "guidance": 3.0, "seed": 7}
    return GenerationRequest(**{**base, **kw})


def sao_request(**kw) -> GenerationRequest:
    base = {"prompt": "A Hammer hitting", "steps": 3, "duration": 0.1, "guidance": 3.0, "seed": 7}
    return GenerationRequest(**{**base, **kw})


class Collector:
    def __init__(self, cancel_at: int | None = None, token: CancelToken | None = None):
        self.frames, self.steps = [], []
        self.cancel_at, self.token = cancel_at, token

    def on_frame(self, frame):
        self.frames.append(frame)

    def on_step(self, info):
        self.steps.append(info)
        if self.cancel_at is not None and info.step == self.cancel_at:
            self.token.cancel()


def stock_audio(backend, request):
    """The audio of a plain pipeline call with stock processors and no probes."""
    gen = torch.Generator().manual_seed(request.seed)
    if backend.family == "audioldm2":
        out = backend.pipe(request.prompt, audio_length_in_s=request.duration,
                           num_inference_steps=request.steps, guidance_scale=request.guidance,
                           generator=gen, output_type="np")
        return out.audios[0]
    out = backend.pipe(request.prompt, audio_end_in_s=request.duration,
                       num_inference_steps=request.steps, guidance_scale=request.guidance,
                       generator=gen, output_type="np")
    return out.audios[0].mean(axis=0)


@pytest.mark.parametrize("which", ["ldm", "sao"])
@pytest.mark.parametrize("per_head", [False, True])
def test_capture_leaves_output_unchanged(which, per_head, request):
    backend = request.getfixturevalue(which)
    req = ldm_request(per_head=per_head) if which == "ldm" else sao_request(per_head=per_head)
    reference = stock_audio(backend, req)
    result = backend.generate(req)
    assert result.frames, "capture recorded nothing"
    assert np.max(np.abs(result.audio - reference)) <= 1e-6
    assert np.abs(reference).max() > 0


def test_ldm_frames_match_independent_softmax(ldm):
    """Recorded cond-half probabilities equal scipy softmax of the q/k the stock run projects."""
    t5_site = next(s for s in ldm.sites() if s.context == "t5")
    attn = ldm.denoiser.get_submodule(t5_site.name)
    seen = {}
    hooks = [attn.to_q.register_forward_hook(lambda m, i, o: seen.setdefault("q", o.clone())),
             attn.to_k.register_forward_hook(lambda m, i, o: seen.setdefault("k", o.clone()))]
    try:
        stock_audio(ldm, ldm_request(steps=1))
    finally:
        for h in hooks:
            h.remove()
    result = ldm.generate(ldm_request(steps=1, per_head=True, sites=[t5_site.name]))
    frame = result.frames[(0, t5_site.name)].astype(np.float64)
    heads, d = attn.heads, attn.to_q.out_features // attn.heads
    q = seen["q"][1].double().numpy().reshape(-1, heads, d).transpose(1, 0, 2)  # cond item = 1
    k = seen["k"][1].double().numpy().reshape(-1, heads, d).transpose(1, 0, 2)
    expected = softmax(q @ k.transpose(0, 2, 1) / np.sqrt(d), axis=-1)
    assert frame.shape == expected.shape == (heads, q.shape[1], len(result.tokens["t5"]))
    np.testing.assert_allclose(frame, expected, atol=2e-3)
    np.testing.assert_allclose(frame.sum(-1), 1.0, atol=2e-3)


def test_sao_gqa_frames_match_independent_softmax(sao):
    """Query head h uses K/V head h // (heads // kv_heads); query 0 dropped, frames cropped."""
    site = next(s for s in sao.sites() if s.kind == "cross")
    attn = sao.denoiser.get_submodule(site.name)
    seen = {}
    hooks = [attn.to_q.register_forward_hook(lambda m, i, o: seen.setdefault("q", o.clone())),
             attn.to_k.register_forward_hook(lambda m, i, o: seen.setdefault("k", o.clone()))]
    req = sao_request(steps=1, per_head=True, sites=[site.name])
    try:
        stock_audio(sao, req)
    finally:
        for h in hooks:
            h.remove()
    result = sao.generate(req)
    frame = result.frames[(0, site.name)].astype(np.float64)
    heads, kv = site.heads, site.kv_heads
    d = attn.to_q.out_features // heads
    assert kv < heads
    q = seen["q"][1].double().numpy().reshape(-1, heads, d).transpose(1, 0, 2)
    k = seen["k"][1].double().numpy().reshape(-1, kv, d).transpose(1, 0, 2)
    k_for_head = np.stack([k[h // (heads // kv)] for h in range(heads)])
    full = softmax(q @ k_for_head.transpose(0, 2, 1) / np.sqrt(d), axis=-1)
    n_frames = int(np.ceil(0.1 * sao.sample_rate / sao.hop))
    # padded keys are dropped before storage: the frame holds the real keys of the full rows
    pads = result.aux["dropped_keys"]["text"]
    assert pads.any() and frame.shape[-1] == int((~pads).sum())
    assert [t == "<pad>" for t in sao.tokens(req.prompt)["text"]] == list(pads)
    assert "<pad>" not in result.tokens["text"] and len(result.tokens["text"]) == frame.shape[-1]
    np.testing.assert_allclose(frame, full[:, 1 : 1 + n_frames][..., ~pads], atol=2e-3)
    assert result.lattices[site.name] == (n_frames, 1)
    # sink mass = mass on the padded keys: stored rows sum to 1 minus it
    sink = result.aux["sink_mass"][(0, site.name)]
    np.testing.assert_allclose(sink, full[:, 1 : 1 + n_frames][..., pads].mean(0).sum(-1), atol=2e-3)
    np.testing.assert_allclose(frame.mean(0).sum(-1) + sink, 1.0, atol=2e-3)
    renorm = renormalise_over_real_keys(result.frames[(0, site.name)], result.aux["pad_keys"]["text"])
    np.testing.assert_allclose(renorm.sum(-1), 1.0, atol=1e-5)


def test_ldm_observer_lattices_sigmas_and_mel(ldm):
    obs = Collector()
    req = ldm_request(steps=4)
    result = ldm.generate(req, observer=obs, run_id=5)
    cross = [s for s in ldm.sites() if s.kind == "cross"]
    assert {f.site for f in obs.frames} == {s.name for s in cross}
    assert len(obs.frames) == len(cross) * 4 == len(result.frames)
    assert all(f.run_id == 5 and not f.probs.flags.writeable for f in obs.frames)
    assert [i.step for i in obs.steps] == [0, 1, 2, 3]
    for f in obs.frames:
        t, fr = f.lattice
        assert (t, fr) == ldm.planned_lattice(f.site, req.duration)
        assert f.probs.shape[1] == t * fr
    # DDIM σ from the scheduler config, computed independently
    cfg = ldm.pipe.scheduler.config
    betas = np.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, cfg.num_train_timesteps) ** 2
    ac = np.cumprod(1 - betas)
    t_int = result.timesteps.astype(int)
    np.testing.assert_allclose(result.sigmas, np.sqrt((1 - ac[t_int]) / ac[t_int]), rtol=1e-5)
    assert [i.sigma for i in obs.steps] == pytest.approx(list(result.sigmas))
    assert result.mel.shape == (ldm.mel_frames(req.duration), ldm.mel_spec().n_mels)
    assert result.recipe["seed"] == 7 and result.recipe["scheduler"]["class"] == "DDIMScheduler"
    assert set(result.recipe["versions"]) >= {"torch", "diffusers", "transformers", "numpy", "python"}


def test_sao_sigmas_are_the_scheduler_sigmas(sao):
    result = sao.generate(sao_request(steps=4))
    # CosineDPMSolver: timestep = atan(σ)·2/π
    np.testing.assert_allclose(result.timesteps, np.arctan(result.sigmas) * 2 / np.pi, rtol=1e-4)
    assert result.sigmas[0] == pytest.approx(sao.pipe.scheduler.config.sigma_max, rel=1e-5)


@pytest.mark.parametrize("which", ["ldm", "sao"])
def test_cancel_mid_run_restores_everything(which, request):
    backend = request.getfixturevalue(which)
    originals = dict(backend.denoiser.attn_processors)
    hooks_before = {n: hook_count(c) for n, c in backend.pipe.components.items()
                    if isinstance(c, torch.nn.Module)}
    token = CancelToken()
    obs = Collector(cancel_at=1, token=token)
    req = ldm_request(steps=5) if which == "ldm" else sao_request(steps=5)
    with pytest.raises(RunCancelled):
        backend.generate(req, observer=obs, cancel=token)
    assert [i.step for i in obs.steps] == [0, 1]
    after = backend.denoiser.attn_processors
    assert all(after[k] is originals[k] for k in originals)
    assert hooks_before == {n: hook_count(backend.pipe.components[n]) for n in hooks_before}
    assert hook_count(backend.denoiser) == 0
    # and the next run is unaffected
    assert backend.generate(req).frames


def test_nan_in_attention_is_flagged():
    backend = AudioLDM2Backend(build_tiny("audioldm2"), "tiny")
    site = next(s for s in backend.sites() if s.context == "loa")
    with torch.no_grad():
        backend.denoiser.get_submodule(site.name).to_k.weight.fill_(float("nan"))
    result = backend.generate(ldm_request(steps=2, sites=[site.name]))
    assert any(site.name in w and "NaN" in w and "[0, 1]" in w for w in result.warnings)
    with pytest.raises(EngineError, match=f"NaN/inf at site {site.name}, step 0"):
        backend.generate(ldm_request(steps=2, sites=[site.name], nan_policy="raise"))
    assert hook_count(backend.denoiser) == 0
