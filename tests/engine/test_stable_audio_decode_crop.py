"""Stable Audio decodes only the latent frames the clip needs, and the audio is unchanged."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderOobleck

from engine.backends.stable_audio import oobleck_margin
from engine.types import GenerationRequest


def test_cropped_decode_gives_the_same_audio_from_fewer_frames(sao):
    req = GenerationRequest(prompt="soft drums", steps=2, duration=0.05, guidance=3.0, capture=False)
    decoded: list[int] = []
    hook = sao.pipe.vae.decoder.register_forward_pre_hook(lambda m, a: decoded.append(int(a[0].shape[-1])))
    try:
        cropped = sao.generate(req).audio
        sao.crop_decode = False
        full = sao.generate(req).audio
    finally:
        sao.crop_decode = True
        hook.remove()
    total = int(sao.pipe.transformer.config.sample_size)
    assert decoded == [sao.audio_frames(0.05) + sao.decode_margin(), total]
    assert decoded[0] < total
    assert cropped.shape == full.shape == (int(0.05 * sao.sample_rate),)
    np.testing.assert_allclose(cropped, full, rtol=0, atol=1e-6 * np.abs(full).max())
    assert "decode" not in vars(sao.pipe.vae)  # the stock method is back


def test_margin_covers_the_published_decoder_receptive_field():
    """The published Oobleck layout (strides 2, 4, 4, 8, 8; narrow channels, random weights):
    decoding up to the cut plus the margin gives the same samples before the cut; less does not."""
    torch.manual_seed(0)
    vae = AutoencoderOobleck(encoder_hidden_size=4, decoder_channels=4, decoder_input_channels=3,
                             channel_multiples=[1, 2, 2, 2, 2]).eval()
    margin = oobleck_margin(vae.config.downsampling_ratios)
    assert margin == 15
    z, cut, hop = torch.randn(1, 3, 48), 20, vae.hop_length
    with torch.no_grad():
        full = vae.decode(z).sample[..., : cut * hop]
        enough = vae.decode(z[..., : cut + margin]).sample[..., : cut * hop]
        short = vae.decode(z[..., : cut + 2]).sample[..., : cut * hop]
    torch.testing.assert_close(enough, full, rtol=0, atol=1e-6)
    assert (short - full).abs().max() > 1e-4
