"""bench/denoiser_shells.py: a published-width DiT in its family's tiny pipeline sees the real
token count (ACE-Step: 25 latents/s, patch 2; Stable Audio 3: 44100 / 4096 latents/s plus 64
memory tokens) and the capture records frames of the planned shape. Two blocks at full width
stand in for the 24 (the shells take any transformer), so the test stays small."""

from __future__ import annotations

import math

import pytest
import torch

from bench.denoiser_shells import load_shell
from engine.types import EngineError, GenerationRequest


def _frames_seen(backend, request, axis: int) -> tuple[list[int], object]:
    """Latent frames of every denoiser call (``axis`` of its ``hidden_states``) and the run."""
    seen: list[int] = []
    hook = backend.denoiser.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(int((args[0] if args else kwargs["hidden_states"]).shape[axis])),
        with_kwargs=True)
    try:
        result = backend.generate(request)
    finally:
        hook.remove()
    return seen, result


@pytest.mark.slow
def test_ace_step_shell_gives_the_published_dit_real_tokens():
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    torch.manual_seed(0)
    dit = AceStepTransformer1DModel(num_hidden_layers=2).eval()  # published width, 2 of 24 blocks
    backend = load_shell("published-denoiser:ace_step", transformer=dit)
    request = GenerationRequest(prompt="warm bass", seed=0, steps=2, guidance=3.5, duration=2.0)
    seen, result = _frames_seen(backend, request, axis=1)
    # the DiT takes (B, T, C) latents: 2 s × 25 latents/s, both CFG halves in one call
    assert seen == [50, 50] and backend.pipe.latents_per_second == 25.0
    site = next(s.name for s in backend.sites() if s.kind == "cross")
    heads, queries, _ = backend.frame_shapes(request)[site]
    assert (heads, queries) == (16, 25)  # patch 2
    assert result.frames[(0, site)].shape[1] == 25


@pytest.mark.slow
def test_stable_audio_3_shell_gives_the_published_dit_real_tokens():
    from diffusers.models.transformers.transformer_stable_audio3 import StableAudio3DiTModel

    torch.manual_seed(0)
    dit = StableAudio3DiTModel(depth=2).eval()  # published width, 2 of 24 blocks
    backend = load_shell("published-denoiser:stable_audio_3", transformer=dit)
    request = GenerationRequest(prompt="warm bass", seed=0, steps=2, guidance=1.0, duration=2.0)
    seen, result = _frames_seen(backend, request, axis=-1)
    expected = math.ceil(2.0 * 44100 / 4096)  # the default AutoencoderSAME's latent rate
    assert seen == [expected, expected]  # (B, C, T) latents, one item (no CFG)
    site = next(s.name for s in backend.sites() if s.kind == "self")
    assert backend.frame_shapes(request)[site] == (24, expected, expected + 64)  # 64 memory tokens
    cross = next(s.name for s in backend.sites() if s.kind == "cross")
    assert result.frames[(0, cross)].shape[1] == expected


def test_unknown_shell_family_is_one_line():
    with pytest.raises(EngineError, match="ace_step, stable_audio_3"):
        load_shell("published-denoiser:audioldm2")
