"""Published-size denoisers inside the tiny pipeline of their family (benchmark only).

``published-denoiser:ace_step`` and ``published-denoiser:stable_audio_3`` in
``bench/bench_realsize.py``. Only the DiTs of ACE-Step 1.5 and Stable Audio 3 exist at published
size (:mod:`engine.backends.published`: their text encoders and autoencoders are not configured in
diffusers' source). Here the published DiT replaces the tiny pipeline's transformer
(:mod:`engine.backends.tiny`), and the tiny parts the DiT reads from are widened to its widths:

* ACE-Step: a condition encoder at the DiT's width (2048, one lyric and one timbre layer, a
  64-wide MLP) fed by the tiny Qwen3 text encoder; an Oobleck VAE of 64 latent channels (the DiT's
  ``audio_acoustic_hidden_dim``) at 800 Hz with downsampling 32, i.e. 25 latents/s as the real
  model, so the DiT sees the real token count (patch 2: 12.5 tokens/s).
* Stable Audio 3: a one-layer T5Gemma encoder of width 768 (``cond_token_dim``) over the
  tokenizer padded to 256 positions (the pipeline's cap, from SA3's ``model_config.json``), the
  duration embedder at 768 (``global_cond_dim``), and a SAME autoencoder of 256 latent channels
  at 11,025 Hz with downsampling 1024 (patch 64 × stride 16), i.e. 44100 / 4096 = 10.77 latents/s
  as the default ``AutoencoderSAME`` (patch 256 × stride 16 at 44.1 kHz).

So the per-step denoiser time, the capture overhead and the attention maps' sizes are those of the
published DiT; text encoding and decoding are tiny stand-ins, and fixed costs per run are not real.
"""

from __future__ import annotations

import torch

PREFIX = "published-denoiser:"
FAMILIES = ("ace_step", "stable_audio_3")
SA3_TEXT_POSITIONS = 256


def ace_step_shell(seed: int = 0, transformer=None):
    """An ``AceStepPipeline``: the published ACE-Step 1.5 DiT (or ``transformer``) in the tiny shell."""
    from diffusers import AceStepPipeline, AutoencoderOobleck
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder

    from engine.backends.published import build_ace_step_transformer
    from engine.backends.tiny import build_tiny

    tiny = build_tiny("ace_step", seed)
    torch.manual_seed(seed)
    dit = transformer if transformer is not None else build_ace_step_transformer()
    cfg = dit.config
    acoustic = cfg.audio_acoustic_hidden_dim
    torch.manual_seed(seed)
    condition_encoder = AceStepConditionEncoder(
        hidden_size=cfg.hidden_size, intermediate_size=64, text_hidden_dim=tiny.text_encoder.config.hidden_size,
        timbre_hidden_dim=cfg.in_channels - 2 * acoustic, num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, sliding_window=cfg.sliding_window)
    vae = AutoencoderOobleck(encoder_hidden_size=6, downsampling_ratios=[4, 8], decoder_channels=3,
                             decoder_input_channels=acoustic, audio_channels=2, channel_multiples=[2, 4],
                             sampling_rate=800)
    parts = {"vae": vae, "text_encoder": tiny.text_encoder, "tokenizer": tiny.tokenizer, "transformer": dit,
             "condition_encoder": condition_encoder, "scheduler": tiny.scheduler}
    return AceStepPipeline(**_eval(parts))


def stable_audio_3_shell(seed: int = 0, transformer=None):
    """A ``StableAudio3Pipeline``: the published SA3 DiT (or ``transformer``) in the tiny shell."""
    from diffusers import AutoencoderSAME, StableAudio3Pipeline
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import (
        StableAudio3DurationEmbedder,
    )
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    from engine.backends.published import build_stable_audio_3_dit
    from engine.backends.tiny import build_tiny

    tiny = build_tiny("stable_audio_3", seed)
    tokenizer = tiny.tokenizer
    tokenizer.model_max_length = SA3_TEXT_POSITIONS
    torch.manual_seed(seed)
    dit = transformer if transformer is not None else build_stable_audio_3_dit()
    cfg = dit.config
    module = T5GemmaModuleConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.cond_token_dim, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8,
        sliding_window=SA3_TEXT_POSITIONS, max_position_embeddings=2 * SA3_TEXT_POSITIONS,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    text_encoder = T5GemmaEncoderModel(T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(),
                                                     is_encoder_decoder=False, vocab_size=len(tokenizer)))
    torch.manual_seed(seed)
    vae = AutoencoderSAME(audio_channels=2, patch_size=64, encoder_channels=8, encoder_c_mults=(2,),
                          encoder_strides=(16,), encoder_transformer_depths=(1,), latent_dim=cfg.io_channels,
                          dim_heads=8, ff_mult=2, sampling_rate=11025)
    parts = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
             "duration_embedder": StableAudio3DurationEmbedder(output_dim=cfg.global_cond_dim),
             "transformer": dit, "scheduler": tiny.scheduler}
    return StableAudio3Pipeline(**_eval(parts))


def _eval(parts: dict) -> dict:
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.eval()
    return parts


def load_shell(model: str, device: str = "cpu", dtype: str = "float32", seed: int = 0, transformer=None):
    """The backend of ``published-denoiser:<family>`` (one of :data:`FAMILIES`)."""
    from engine.backends.registry import _backend_class, _finish
    from engine.types import EngineError

    family = model.removeprefix(PREFIX)
    builders = {"ace_step": ace_step_shell, "stable_audio_3": stable_audio_3_shell}
    if family not in builders:
        raise EngineError(f"unknown {PREFIX} family {family!r}; use one of {', '.join(FAMILIES)}")
    pipe = builders[family](seed, transformer)
    return _backend_class(family)(_finish(pipe, device, dtype), model, device, dtype)
