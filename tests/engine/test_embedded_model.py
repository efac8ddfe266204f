"""Embedded model parts: mel definition, Griffin-Lim, tokenizer, pipeline (untrained, tiny runs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import nnls
from scipy.signal import get_window

from engine.models.embedded.melspec import (
    MelConfig,
    MelTransform,
    hz_to_mel_slaney,
    mel_to_hz_slaney,
    power_to_unit,
    unit_to_power,
)
from engine.models.embedded.pipeline import EmbeddedPipeline, pack_mel, unpack_mel
from engine.models.embedded.textenc import WordTokenizer
from engine.models.embedded.vocoder import mel_to_linear_power, vocode
from engine.types import EngineError

CFG = MelConfig()


def test_slaney_scale_hand_values():
    # Slaney: 200/3 Hz per mel below 1 kHz, log step ln(6.4)/27 above
    assert hz_to_mel_slaney(1000.0) == pytest.approx(15.0)
    assert hz_to_mel_slaney(500.0) == pytest.approx(7.5)
    assert hz_to_mel_slaney(6400.0) == pytest.approx(15.0 + 27.0)
    hz = np.array([0.0, 123.0, 999.0, 1001.0, 7999.0])
    assert np.allclose(mel_to_hz_slaney(hz_to_mel_slaney(hz)), hz)


def test_filterbank_area_and_tone_peak():
    fb = CFG.filterbank()
    assert fb.shape == (64, 513)
    df = CFG.sample_rate / CFG.n_fft
    # Slaney normalisation: each triangle has unit area in Hz; discretised on 15.6 Hz bins
    area = fb.sum(axis=1) * df
    assert np.allclose(area[8:], 1.0, atol=0.08)
    # a tone lands in the filter whose centre is nearest to it
    edges = mel_to_hz_slaney(np.linspace(0, hz_to_mel_slaney(8000.0), 66))
    centres = edges[1:-1]
    t = np.arange(CFG.sample_rate) / CFG.sample_rate
    for f0 in (110.0, 440.0, 2500.0):
        mel = MelTransform(CFG)(torch.from_numpy(np.sin(2 * np.pi * f0 * t).astype(np.float32)))
        assert int(mel.mean(0).argmax()) == int(np.abs(centres - f0).argmin())


def test_power_stft_matches_numpy_frames():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4096).astype(np.float32)
    got = MelTransform(CFG).power_stft(torch.from_numpy(x)).numpy()
    padded = np.pad(x, CFG.n_fft // 2, mode="reflect")
    win = get_window("hann", CFG.n_fft, fftbins=True)
    for frame in (0, 3, 16):
        seg = padded[frame * CFG.hop_length: frame * CFG.hop_length + CFG.n_fft] * win
        ref = np.abs(np.fft.rfft(seg)) ** 2
        assert np.allclose(got[frame], ref, rtol=1e-3, atol=1e-3)


def test_unit_scale_round_trip():
    p = torch.rand(2, 16, 64) + 1e-3
    x = power_to_unit(p)
    assert float(x.max()) == pytest.approx(1.0) and float(x.min()) >= -1.0
    back = unit_to_power(x)
    peak = p.amax(dim=(-2, -1), keepdim=True)
    assert torch.allclose(back, p / peak, rtol=1e-4)


def test_mel_inversion_is_close_to_nnls():
    rng = np.random.default_rng(1)
    fb = CFG.filterbank()
    spec = rng.random((3, 513)).astype(np.float32) ** 4
    mel = spec @ fb.T
    got = mel_to_linear_power(torch.from_numpy(mel), torch.from_numpy(fb), n_iter=200).numpy()
    assert (got >= 0).all()
    for i in range(3):
        _, best = nnls(fb.astype(np.float64), mel[i].astype(np.float64))
        ours = np.linalg.norm(got[i] @ fb.T - mel[i])
        assert ours <= best + 0.02 * np.linalg.norm(mel[i])


def test_griffin_lim_keeps_pitch_and_mel():
    t = np.arange(int(1.024 * CFG.sample_rate)) / CFG.sample_rate
    audio = (np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 1320 * t)).astype(np.float32)
    mel = power_to_unit(MelTransform(CFG)(torch.from_numpy(audio))[:64]).numpy()
    out = vocode(mel, CFG, n_iter=32)
    assert out.dtype == np.float32 and out.shape == (64 * CFG.hop_length,)
    spectrum = np.abs(np.fft.rfft(out))
    peak_hz = np.fft.rfftfreq(out.size, 1 / CFG.sample_rate)[spectrum.argmax()]
    assert abs(peak_hz - 440) < 25
    remel = power_to_unit(MelTransform(CFG)(torch.from_numpy(out))[:64]).numpy()
    assert np.corrcoef(mel.ravel(), remel.ravel())[0, 1] > 0.9


def test_tokenizer_reports_unknown_words_and_aliases():
    tok = WordTokenizer.default()
    ids, strings, unknown = tok.tokenize("Bass with a Kazoo, and DRUM")
    assert strings == ["<bos>", "bass", "with", "a", "kazoo", "and", "drum"]
    assert unknown == ["kazoo"]
    assert ids[0] == tok.word_to_id["<bos>"] and ids[4] == tok.word_to_id["<unk>"]
    assert ids[6] == tok.word_to_id["drums"]  # alias shares the canonical id
    assert tok.tokenize("") == ([tok.word_to_id["<bos>"]], ["<bos>"], [])
    with pytest.raises(EngineError, match="shorten"):
        tok.tokenize(" ".join(["bass"] * 20))
    ids, mask = tok.batch(["", "piano and organ"])
    assert ids.shape == (2, 4) and mask.tolist() == [[1, 0, 0, 0], [1, 1, 1, 1]]


def test_pack_layout_is_time_major_space_to_depth():
    t, m = 32, 64
    mel = (torch.arange(t)[:, None] * 1000 + torch.arange(m)[None, :]).float()[None]
    packed = pack_mel(mel)
    assert packed.shape == (1, 8, t // 4, m // 2)
    for c, (i, j) in [(0, (0, 0)), (3, (2, 5)), (7, (7, 31))]:
        dt, df = divmod(c, 2)
        assert packed[0, c, i, j] == mel[0, 4 * i + dt, 2 * j + df]
    assert torch.equal(unpack_mel(packed), mel)


@pytest.fixture(scope="module")
def pipe():
    return EmbeddedPipeline.build(seed=3)


def test_cfg_batch_is_uncond_then_cond_and_callback_runs(pipe):
    seen = {}

    def hook(module, args, kwargs):
        seen.setdefault("ctx", kwargs["encoder_hidden_states"].clone())
        seen.setdefault("mask", kwargs["encoder_attention_mask"].clone())

    calls = []
    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        out = pipe("bass and drums", negative_prompt="piano", num_inference_steps=2,
                   generator=torch.Generator().manual_seed(0), audio_length_in_s=1.0,
                   callback=lambda i, t, lat: calls.append((i, tuple(lat.shape))))
    finally:
        handle.remove()
    emb, mask, _, _ = pipe.encode(["piano", "bass and drums"])
    assert torch.allclose(seen["ctx"], emb) and torch.equal(seen["mask"], mask)
    assert seen["mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert calls == [(0, (1, 8, 16, 32)), (1, (1, 8, 16, 32))]
    assert out.mel.shape == (64, 64) and out.audio.shape == (64 * 256,)
    assert out.tokens == ["<bos>", "bass", "and", "drums"] and out.negative_tokens == ["<bos>", "piano"]


def test_save_load_round_trip_is_exact(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "m")
    again = EmbeddedPipeline.from_pretrained(tmp_path / "m")
    kw = dict(num_inference_steps=2, audio_length_in_s=1.0, vocode_audio=False)
    a = pipe("organ", generator=torch.Generator().manual_seed(5), **kw)
    b = again("organ", generator=torch.Generator().manual_seed(5), **kw)
    c = again("organ", generator=torch.Generator().manual_seed(6), **kw)
    assert np.array_equal(a.mel, b.mel)
    assert not np.allclose(a.mel, c.mel)
    assert again.mel_config == pipe.mel_config
    assert again.tokenizer.id_to_word == pipe.tokenizer.id_to_word
    with pytest.raises(EngineError, match="train-default"):
        EmbeddedPipeline.from_pretrained(tmp_path / "nothing")


def test_non_contextual_encoder_gives_a_word_the_same_embedding_everywhere():
    tok = WordTokenizer.default()
    flat = EmbeddedPipeline.build(tok, seed=1, text_layers=0).text_encoder
    ctx = EmbeddedPipeline.build(tok, seed=1, text_layers=2).text_encoder
    assert not flat.contextual and flat.position is None and ctx.contextual
    ids, mask = tok.batch(["bass", "piano and bass"])
    with torch.no_grad():
        e_flat, e_ctx = flat(ids, mask), ctx(ids, mask)
    # "bass" is token 1 of the first prompt and token 3 of the second; <bos> is token 0 of both
    assert torch.allclose(e_flat[0, 1], e_flat[1, 3]) and torch.allclose(e_flat[0, 0], e_flat[1, 0])
    assert not torch.allclose(e_ctx[0, 0], e_ctx[1, 0], atol=1e-4)  # the transformer mixes words


def test_v_prediction_target_and_its_x0_by_hand():
    from engine.models.embedded.pipeline import default_train_scheduler, training_target

    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 8, 4, 4, generator=gen), torch.randn(3, 8, 4, 4, generator=gen)
    t = torch.tensor([0, 500, 999])
    v_sched = default_train_scheduler("v_prediction")
    a = v_sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = training_target(v_sched, x0, noise, t)
    assert torch.allclose(v, a.sqrt() * noise - (1 - a).sqrt() * x0, atol=1e-6)
    x_t = v_sched.add_noise(x0, noise, t)
    assert torch.allclose(a.sqrt() * x_t - (1 - a).sqrt() * v, x0, atol=1e-5)  # x0 from (x_t, v)
    eps_sched = default_train_scheduler("epsilon")
    assert torch.equal(training_target(eps_sched, x0, noise, t), noise)
    with pytest.raises(EngineError, match="prediction type"):
        default_train_scheduler("sample")
    sampler = EmbeddedPipeline.build(seed=0).scheduler
    assert sampler.config.prediction_type == "v_prediction" and sampler.config.clip_sample
