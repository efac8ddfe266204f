"""Published-size AudioLDM2 and Stable Audio Open pipelines with random weights (no download).

``random:audioldm2`` and ``random:stable_audio`` in :func:`engine.backends.registry.load_backend`
build these: the real architecture at the real width, so memory, speed, sites, lattices and the
capture budget can be measured at full size; the weights are random (the audio is noise). The
tokenizers are the in-memory ones of :mod:`engine.backends.tiny` (their ids are within the real
vocabularies). ``save_published(family, folder)`` writes one with ``save_pretrained``.

Where every number comes from (diffusers 0.42.1 source unless said otherwise):

**AudioLDM2** (``cvssp/audioldm2``, ~1.1 B parameters):

* UNet: ``scripts/convert_original_audioldm2_to_diffusers.py`` (diffusers repository)
  ``DEFAULT_CONFIG`` ("adapted from haoheliu/AudioLDM2 utils.py"): ``model_channels=128``,
  ``channel_mult=[1, 2, 3, 5]`` → ``block_out_channels=(128, 256, 384, 640)``;
  ``num_res_blocks=2`` → ``layers_per_block=2``; ``attention_resolutions=[8, 4, 2]`` → down
  blocks ``DownBlock2D`` + 3 × ``CrossAttnDownBlock2D`` (up blocks mirrored, by
  ``create_unet_diffusers_config``); ``context_dim=[768, 1024]`` with ``extra_self_attn_layer``
  → ``cross_attention_dim=[None, 768, 1024]`` per block (the ``AudioLDM2UNet2DConditionModel``
  layout: a self-only, a GPT-2 and a T5 sibling); ``in/out_channels=8``. The script does not
  set ``attention_head_dim``, so the diffusers default (8 heads per module) is kept; the original
  ``num_head_channels=32`` (8/12/20 heads) only changes how the same weights split into heads.
  ``sample_size``: ``image_size // vae_scale_factor`` with the script's ``--image_size`` of 1048
  → 262 (it only sets the default length, 262 × 4 × 10 ms = 10.48 s).
* VAE: ``DEFAULT_CONFIG['first_stage_config']``: ``ch=128``, ``ch_mult=[1, 2, 4]`` →
  ``block_out_channels=(128, 256, 512)``, ``z_channels=8``, ``num_res_blocks=2``, 1 in/out
  channel; ``scaling_factor`` is learnt (``scale_by_std``); 0.18215 is used here.
* Vocoder (HiFi-GAN, ``SpeechT5HifiGan``): ``DEFAULT_CONFIG['vocoder_config']``:
  ``upsample_rates=[5, 4, 2, 2, 2]``, ``upsample_kernel_sizes=[16, 16, 8, 4, 4]``,
  ``upsample_initial_channel=1024``, ``resblock_kernel_sizes=[3, 7, 11]``, dilations
  ``[[1, 3, 5]] * 3``, 64 mels, 16 kHz.
* Scheduler: the script's ``DDIMScheduler(beta_start=0.0015, beta_end=0.0195,
  beta_schedule="scaled_linear", steps_offset=1, clip_sample=False, set_alpha_to_one=False)``.
* T5: the script loads ``google/flan-t5-large``'s config; its values (the published T5 v1.1/Flan
  large shape, from the transformers model card): ``d_model=1024``, ``d_ff=2816``, ``d_kv=64``,
  16 heads, 24 layers, gated-GELU, vocabulary 32128; ``tokenizer_2.model_max_length=128`` (the
  script: "hard-coded in the original implementation").
* GPT-2: the script loads ``gpt2``'s config = ``GPT2Config()`` defaults (768 × 12 layers × 12
  heads, vocabulary 50257, 1024 positions); the pipeline's type is ``GPT2LMHeadModel`` and
  ``max_new_tokens=8`` (pipeline default).
* CLAP: the script uses ``laion/clap-htsat-unfused``; ``ClapConfig()`` defaults are the HTSAT +
  RoBERTa-base CLAP (text 768 × 12, projection 512) of the laion CLAP models; the pipeline's type
  is ``ClapModel``.
* Projection: ``AudioLDM2ProjectionModel(512, 1024, 768)`` (the script: CLAP projection dim, T5
  ``d_model``, GPT-2 ``n_embd``).

**Stable Audio Open** (``stabilityai/stable-audio-open-1.0``, ~1.2 B parameters):

* DiT: ``scripts/convert_stable_audio.py`` derives ``StableAudioDiTModel``'s arguments from the
  SAO ``model_config.json``; diffusers' own defaults of ``StableAudioDiTModel`` are those values
  (``models/transformers/stable_audio_transformer.py``: 24 layers, 24 heads × 64, 12 K/V heads
  = ``cond_token_dim // head_dim`` = 768 // 64, cross-attention 768, 64 latent channels,
  ``sample_size=1024`` latent frames, global states 1536, ``time_proj_dim=256``, the script's
  ``timestep_features_dim=256``).
* VAE: ``AutoencoderOobleck`` defaults (``models/autoencoders/autoencoder_oobleck.py``): 128
  channels, ``downsampling_ratios=[2, 4, 4, 8, 8]`` (hop 2048), ``channel_multiples=[1, 2, 4, 8,
  16]``, 64 latent channels, stereo, 44.1 kHz → 1024 × 2048 / 44100 = 47.55 s (the pipeline's
  ``audio_end_in_s`` default).
* Text encoder: SAO conditions on ``t5-base`` (its ``model_config.json``'s ``t5_model_name``,
  read by the script): ``T5Config`` of t5-base = 768 × 12 layers × 12 heads, ``d_ff=3072``,
  vocabulary 32128; ``max_length=128`` → 130 keys with ``seconds_start``/``seconds_end``.
* Projection: ``StableAudioProjectionModel(768, 768, 0, 512)`` (``cond_dim`` 768; seconds
  0..512 from SAO's ``seconds_start`` conditioner).
* Scheduler: ``CosineDPMSolverMultistepScheduler(solver_order=2, prediction_type="v_prediction",
  sigma_data=1.0, sigma_schedule="exponential")`` with ``sigma_min=0.3``, ``sigma_max=500`` (the
  script's values; the pipeline's docstring example uses this class).

**ACE-Step 1.5 and Stable Audio 3: the denoisers only** (:func:`build_ace_step_transformer`,
:func:`build_stable_audio_3_dit`). Their diffusers defaults are the published widths:
``AceStepTransformer1DModel()`` = 2048 wide, 24 layers, 16 query / 8 K/V heads × 128 (the source's
comment: the condition encoder's width "equal to ``hidden_size`` on the non-XL turbo / base
models"); ``StableAudio3DiTModel()`` = 1536 wide, 24 blocks × 24 heads, 256 latent channels, 64
memory tokens, differential attention (its docstring's defaults; which SA3 checkpoint they match
— the docstring example loads ``stabilityai/stable-audio-3-medium`` — is not stated, so
unverified). Their text encoders (Qwen3-Embedding-0.6B, T5Gemma) and autoencoders are not
configured anywhere in diffusers' source, so no whole pipeline is built for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.backends.tiny import save_pipeline
from engine.types import EngineError

PUBLISHED_FAMILIES = ("audioldm2", "stable_audio")

AUDIOLDM2_UNET: dict[str, Any] = {
    "sample_size": 262,
    "in_channels": 8,
    "out_channels": 8,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "UpBlock2D"),
    "block_out_channels": (128, 256, 384, 640),
    "layers_per_block": 2,
    "cross_attention_dim": ([None, 768, 1024],) * 4,
}
AUDIOLDM2_VAE: dict[str, Any] = {
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (128, 256, 512),
    "latent_channels": 8,
    "layers_per_block": 2,
    "scaling_factor": 0.18215,
}
AUDIOLDM2_VOCODER: dict[str, Any] = {
    "model_in_dim": 64,
    "sampling_rate": 16000,
    "upsample_initial_channel": 1024,
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
}
FLAN_T5_LARGE: dict[str, Any] = {
    "vocab_size": 32128, "d_model": 1024, "d_ff": 2816, "d_kv": 64, "num_heads": 16,
    "num_layers": 24, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
}
T5_BASE: dict[str, Any] = {
    "vocab_size": 32128, "d_model": 768, "d_ff": 3072, "d_kv": 64, "num_heads": 12, "num_layers": 12,
}
GPT2_BASE: dict[str, Any] = {"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
                             "n_positions": 1024}
STABLE_AUDIO_DIT: dict[str, Any] = {
    "sample_size": 1024, "in_channels": 64, "num_layers": 24, "attention_head_dim": 64,
    "num_attention_heads": 24, "num_key_value_attention_heads": 12, "out_channels": 64,
    "cross_attention_dim": 768, "time_proj_dim": 256, "global_states_input_dim": 1536,
    "cross_attention_input_dim": 768,
}
T5_MAX_LENGTH = 128


def build_audioldm2_unet(device: str | torch.device = "cpu"):
    """The published-size AudioLDM2 UNet (346.9 M parameters); ``device="meta"`` allocates nothing."""
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

    with torch.device(device):
        return AudioLDM2UNet2DConditionModel(**AUDIOLDM2_UNET).eval()


def build_published_audioldm2(seed: int = 0):
    """An ``AudioLDM2Pipeline`` at the published size of ``cvssp/audioldm2``, random weights."""
    from diffusers import AudioLDM2Pipeline, AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2ProjectionModel
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        GPT2Config,
        GPT2LMHeadModel,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    from engine.backends.tiny import build_roberta_tokenizer, build_t5_tokenizer

    torch.manual_seed(seed)
    unet = build_audioldm2_unet()
    vae = AutoencoderKL(**AUDIOLDM2_VAE)
    clap = ClapModel(ClapConfig())
    t5 = T5EncoderModel(T5Config(**FLAN_T5_LARGE))
    gpt2 = GPT2LMHeadModel(GPT2Config(**GPT2_BASE))
    gpt2.config.max_new_tokens = 8
    projection = AudioLDM2ProjectionModel(text_encoder_dim=clap.config.projection_dim,
                                          text_encoder_1_dim=FLAN_T5_LARGE["d_model"],
                                          langauge_model_dim=GPT2_BASE["n_embd"])
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**AUDIOLDM2_VOCODER))
    scheduler = DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, steps_offset=1, clip_sample=False,
                              set_alpha_to_one=False)
    parts = {"unet": unet, "scheduler": scheduler, "vae": vae, "text_encoder": clap,
             "text_encoder_2": t5, "tokenizer": build_roberta_tokenizer(model_max_length=512),
             "tokenizer_2": build_t5_tokenizer(model_max_length=T5_MAX_LENGTH),
             "feature_extractor": ClapFeatureExtractor(), "language_model": gpt2,
             "projection_model": projection, "vocoder": vocoder}
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.eval()
    return AudioLDM2Pipeline(**parts)


def build_stable_audio_dit(device: str | torch.device = "cpu"):
    """The published-size Stable Audio Open DiT (1056.9 M parameters)."""
    from diffusers import StableAudioDiTModel

    with torch.device(device):
        return StableAudioDiTModel(**STABLE_AUDIO_DIT).eval()


def build_published_stable_audio(seed: int = 0):
    """A ``StableAudioPipeline`` at the published size of stable-audio-open-1.0, random weights."""
    from diffusers import AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioPipeline
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    from engine.backends.tiny import build_t5_tokenizer

    if CosineDPMSolverMultistepScheduler.__module__.endswith("_objects"):
        raise EngineError("Stable Audio needs torchsde: run `pip install torchsde`")
    torch.manual_seed(seed)
    parts = {
        "transformer": build_stable_audio_dit(),
        "scheduler": CosineDPMSolverMultistepScheduler(
            solver_order=2, prediction_type="v_prediction", sigma_data=1.0,
            sigma_schedule="exponential", sigma_min=0.3, sigma_max=500.0),
        "vae": AutoencoderOobleck(),
        "text_encoder": T5EncoderModel(T5Config(**T5_BASE)),
        "tokenizer": build_t5_tokenizer(model_max_length=T5_MAX_LENGTH),
        "projection_model": StableAudioProjectionModel(text_encoder_dim=T5_BASE["d_model"],
                                                       conditioning_dim=768, min_value=0, max_value=512),
    }
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.eval()
    return StableAudioPipeline(**parts)


def build_ace_step_transformer(device: str | torch.device = "cpu"):
    """ACE-Step 1.5's DiT at its published (non-XL) width: diffusers' defaults."""
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    with torch.device(device):
        return AceStepTransformer1DModel().eval()


def build_stable_audio_3_dit(device: str | torch.device = "cpu"):
    """Stable Audio 3's DiT at diffusers' default (documented) width."""
    from diffusers.models.transformers.transformer_stable_audio3 import StableAudio3DiTModel

    with torch.device(device):
        return StableAudio3DiTModel().eval()


def build_published(family: str, seed: int = 0):
    """The published-size random-weight pipeline of ``family``."""
    if family == "audioldm2":
        return build_published_audioldm2(seed)
    if family == "stable_audio":
        return build_published_stable_audio(seed)
    raise EngineError(f"no published-size builder for {family!r}; use one of {', '.join(PUBLISHED_FAMILIES)}")


def save_published(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Build the published-size pipeline of ``family`` and write it with ``save_pretrained``."""
    return save_pipeline(build_published(family, seed), folder)


def parameter_count(pipe) -> dict[str, int]:
    """Parameters per ``nn.Module`` component of a pipeline."""
    return {name: sum(p.numel() for p in part.parameters())
            for name, part in pipe.components.items() if isinstance(part, torch.nn.Module)}
