"""Tiny, random-weight AudioLDM2 and Stable Audio pipelines built from configs, fully offline.

They have the real architecture of their family (AudioLDM2 with the real two-context routing:
each cross-attention layer position holds a self-only, a GPT-2/LOA and a T5 sibling; Stable Audio
with GQA cross-attention in every DiT block) at toy width, so every engine path can be exercised
without hub weights. Tokenizers are built in memory: a byte-level ``RobertaTokenizer`` and a
Unigram ``T5Tokenizer`` over a few hundred music words with a lowercase normaliser.

``save_tiny(family, folder)`` writes a pipeline with ``save_pretrained`` so that tests and users
load it back through :func:`engine.backends.registry.load_backend` like any local model folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.types import EngineError

TINY_FAMILIES = ("audioldm2", "stable_audio", "ace_step", "stable_audio_3", "longcat")

_MUSIC_TEXT = """
a an the and or with of in on at by to from for into over under while as is are
music song track tune melody harmony rhythm beat groove loop riff solo chord chords note notes
bass bassline sub kick snare hihat hat cymbal crash ride tom toms clap claps drum drums drummer
percussion shaker tambourine cowbell conga congas bongo bongos timpani triangle gong woodblock
piano pianos keys keyboard organ synth synthesizer pad pads lead arpeggio arp pluck bell bells
guitar guitars acoustic electric distorted clean strummed fingerpicked banjo mandolin ukulele
harp violin violins viola cello cellos contrabass double string strings orchestra orchestral
flute flutes piccolo clarinet oboe bassoon saxophone sax trumpet trumpets trombone horn horns
tuba brass woodwind woodwinds choir voice voices vocal vocals singer singing sings hum humming
whistle whistling xylophone marimba vibraphone glockenspiel celesta accordion harmonica sitar
jazz rock pop metal punk blues funk soul disco house techno trance ambient classical folk
country reggae hiphop rap electronic dance edm dubstep lofi cinematic epic film score
soft loud quiet gentle calm slow fast upbeat energetic happy sad dark bright warm cold deep
high low heavy light smooth rough sharp dry wet reverb echo delay distortion noise noisy
short long sustained staccato legato playing plays played rhythmic melodic ambient atmospheric
steady driving bouncy groovy chill relaxing intense dramatic mellow lush sparse dense minimal
hammer hitting wooden surface metal glass water rain wind thunder bird birds dog dogs barking
engine car train footsteps door knock knocking clock ticking applause crowd speech talking man
woman child people laughing crying phone ringing siren alarm fire crackling ocean waves
one two three four five solo duet trio quartet band ensemble group section background
intro verse chorus bridge outro fade tempo bpm major minor key scale loud quietly slowly
"""


def _t5_vocab() -> list[tuple[str, float]]:
    """Unigram pieces: specials, whole music words, then letters and digits as a spelling fallback."""
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen: set[str] = set()
    for word in _MUSIC_TEXT.split():
        for form in (word, word.capitalize()):
            if form not in seen:
                seen.add(form)
                vocab.append((f"▁{form}", -5.0))
    for ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-":
        vocab.append((ch, -10.0))
        vocab.append((f"▁{ch}", -10.5))
    return vocab


def build_t5_tokenizer(model_max_length: int = 77):
    """A Unigram ``T5Tokenizer`` over music words (lower and capitalised forms, letter fallback).

    The capitalised forms stand in for a lowercase normaliser, which ``T5Tokenizer`` does not
    keep through ``save_pretrained``/``from_pretrained``.
    """
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=_t5_vocab(), extra_ids=0, model_max_length=model_max_length)


def build_roberta_tokenizer(model_max_length: int = 77):
    """A byte-level ``RobertaTokenizer`` with no merges (one token per byte)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def _eval_all(components: dict) -> dict:
    for value in components.values():
        if isinstance(value, torch.nn.Module):
            value.eval()
    return components


def build_tiny_audioldm2(seed: int = 0):
    """A tiny ``AudioLDM2Pipeline`` (16 kHz, hop 160, 8 mels) with LOA and T5 cross-attention."""
    from diffusers import AudioLDM2Pipeline, AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import (
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
    )
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

    tokenizer = build_roberta_tokenizer()
    tokenizer_2 = build_t5_tokenizer()
    torch.manual_seed(seed)
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, 16, 32], [None, 16, 32]),
        attention_head_dim=4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=1,
        out_channels=1,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    text_cfg = {
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_size": 8,
        "intermediate_size": 37,
        "layer_norm_eps": 1e-05,
        "num_attention_heads": 1,
        "num_hidden_layers": 1,
        "pad_token_id": 1,
        "vocab_size": len(tokenizer),
        "projection_dim": 8,
    }
    audio_cfg = {
        "spec_size": 8,
        "window_size": 4,
        "num_mel_bins": 8,
        "intermediate_size": 37,
        "layer_norm_eps": 1e-05,
        "depths": [1, 1],
        "num_attention_heads": [1, 1],
        "num_hidden_layers": 1,
        "hidden_size": 192,
        "projection_dim": 8,
        "patch_size": 2,
        "patch_stride": 2,
        "patch_embed_input_channels": 4,
    }
    torch.manual_seed(seed)
    text_encoder = ClapModel(
        ClapConfig(text_config=text_cfg, audio_config=audio_cfg, projection_dim=16)
    )
    torch.manual_seed(seed)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2), d_model=32, d_ff=37, d_kv=8, num_heads=2, num_layers=1
        )
    )
    torch.manual_seed(seed)
    language_model = GPT2LMHeadModel(
        GPT2Config(
            n_embd=16,
            n_head=1,
            n_layer=1,
            vocab_size=1000,
            n_ctx=99,
            n_positions=99,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    language_model.config.max_new_tokens = 8
    torch.manual_seed(seed)
    projection_model = AudioLDM2ProjectionModel(
        text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16
    )
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[5, 4, 8],
            upsample_kernel_sizes=[10, 8, 16],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    )
    components = _eval_all(
        {
            "unet": unet,
            "scheduler": scheduler,
            "vae": vae,
            "text_encoder": text_encoder,
            "text_encoder_2": text_encoder_2,
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
            "feature_extractor": ClapFeatureExtractor(hop_length=7900),
            "language_model": language_model,
            "projection_model": projection_model,
            "vocoder": vocoder,
        }
    )
    return AudioLDM2Pipeline(**components)


def build_tiny_stable_audio(seed: int = 0):
    """A tiny ``StableAudioPipeline`` (1 kHz, hop 8, 32 latent frames, 4 query / 2 K/V heads)."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
    )
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    if CosineDPMSolverMultistepScheduler.__module__.endswith("dummy_torch_and_torchsde_objects"):
        raise EngineError("Stable Audio needs torchsde: run `pip install torchsde`")
    tokenizer = build_t5_tokenizer(model_max_length=16)
    torch.manual_seed(seed)
    transformer = StableAudioDiTModel(
        sample_size=32,
        in_channels=3,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=4,
        num_key_value_attention_heads=2,
        out_channels=3,
        cross_attention_dim=4,
        time_proj_dim=8,
        global_states_input_dim=8,
        cross_attention_input_dim=4,
    )
    scheduler = CosineDPMSolverMultistepScheduler(
        solver_order=2,
        prediction_type="v_prediction",
        sigma_data=1.0,
        sigma_schedule="exponential",
    )
    torch.manual_seed(seed)
    vae = AutoencoderOobleck(
        encoder_hidden_size=6,
        downsampling_ratios=[2, 4],
        decoder_channels=3,
        decoder_input_channels=3,
        audio_channels=2,
        channel_multiples=[2, 4],
        sampling_rate=1000,
    )
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2)
    )
    torch.manual_seed(seed)
    projection_model = StableAudioProjectionModel(
        text_encoder_dim=32, conditioning_dim=4, min_value=0, max_value=32
    )
    components = _eval_all(
        {
            "transformer": transformer,
            "scheduler": scheduler,
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "projection_model": projection_model,
        }
    )
    return StableAudioPipeline(**components)


def build_bpe_tokenizer(extra_text: str = "", vocab_size: int = 700):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained in memory on the music words (and
    ``extra_text``), with ``<|endoftext|>`` and ``<|pad|>`` as special tokens (Qwen-style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([*_MUSIC_TEXT.split("\n"), *extra_text.split("\n")], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|endoftext|>",
                                   model_max_length=2048)


_ACE_TEMPLATE = """# Instruction
Fill the audio semantic mask based on the given conditions:
# Caption
# Metas
- bpm: N/A
- timesignature: N/A
- keyscale: N/A
- duration: 1 seconds
# Languages
en
# Lyric
la la la oh yeah love night light"""


def build_tiny_ace_step(seed: int = 0):
    """A tiny ``AceStepPipeline`` (800 Hz stereo, 25 latents/s as the real model, patch 2,
    2 DiT blocks with 4 query / 2 K/V heads, a 1-layer Qwen3 text encoder, CFG-capable base model)."""
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = build_bpe_tokenizer(_ACE_TEMPLATE)
    text_dim, acoustic, timbre = 16, 4, 4
    torch.manual_seed(seed)
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=text_dim, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=4096))
    torch.manual_seed(seed)
    transformer = AceStepTransformer1DModel(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, in_channels=timbre + 2 * acoustic,
        audio_acoustic_hidden_dim=acoustic, patch_size=2, sliding_window=8)
    torch.manual_seed(seed)
    condition_encoder = AceStepConditionEncoder(
        hidden_size=32, intermediate_size=48, text_hidden_dim=text_dim, timbre_hidden_dim=timbre,
        num_lyric_encoder_hidden_layers=1, num_timbre_encoder_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=8)
    torch.manual_seed(seed)
    vae = AutoencoderOobleck(encoder_hidden_size=6, downsampling_ratios=[4, 8], decoder_channels=3,
                             decoder_input_channels=acoustic, audio_channels=2, channel_multiples=[2, 4],
                             sampling_rate=800)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    components = _eval_all({"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
                            "transformer": transformer, "condition_encoder": condition_encoder,
                            "scheduler": scheduler})
    return AceStepPipeline(**components)


def _randomise_zero_weights(module: torch.nn.Module, std: float = 0.3) -> None:
    """Give zero-initialised weight matrices random values, so that outputs depend on the inputs
    (SA3 and its autoencoder zero-initialise output projections)."""
    with torch.no_grad():
        for param in module.parameters():
            if param.dim() > 1 and not param.any():
                param.normal_(0.0, std)


def build_tiny_stable_audio_3(seed: int = 0):
    """A tiny ``StableAudio3Pipeline`` (800 Hz stereo, SAME autoencoder downsampling 8, 2 DiT blocks
    of 4 heads with differential attention, 2 memory tokens, 16 text positions + the duration token,
    a 1-layer T5Gemma encoder); zero-initialised projections are re-randomised."""
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3Pipeline
    from diffusers.models.transformers.transformer_stable_audio3 import StableAudio3DiTModel
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import (
        StableAudio3DurationEmbedder,
    )
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    tokenizer = build_bpe_tokenizer()
    tokenizer.model_max_length = 16
    text_dim = 16
    module = T5GemmaModuleConfig(
        vocab_size=len(tokenizer), hidden_size=text_dim, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8, sliding_window=16,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    text_encoder = T5GemmaEncoderModel(T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(),
                                                     is_encoder_decoder=False, vocab_size=len(tokenizer)))
    torch.manual_seed(seed)
    transformer = StableAudio3DiTModel(
        io_channels=4, patch_size=1, embed_dim=32, depth=2, num_heads=4, cond_token_dim=text_dim,
        global_cond_dim=text_dim, local_add_cond_dim=5, timestep_features_dim=16, ff_mult=2.0, num_memory_tokens=2)
    torch.manual_seed(seed)
    vae = AutoencoderSAME(audio_channels=2, patch_size=4, encoder_channels=8, encoder_c_mults=(2,),
                          encoder_strides=(2,), encoder_transformer_depths=(1,), latent_dim=4, dim_heads=8,
                          ff_mult=2, sampling_rate=800)
    torch.manual_seed(seed + 1)
    _randomise_zero_weights(transformer)
    _randomise_zero_weights(vae)
    components = _eval_all({
        "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
        "duration_embedder": StableAudio3DurationEmbedder(output_dim=text_dim, fourier_dim=16),
        "transformer": transformer, "scheduler": FlowMatchEulerDiscreteScheduler()})
    return StableAudio3Pipeline(**components)


def build_tiny_longcat(seed: int = 0):
    """A tiny ``LongCatAudioDiTPipeline`` (800 Hz mono, VAE downsampling 8, 2 DiT blocks of 4 heads,
    a 1-layer UMT5). Its scheduler is the pipeline's own default, because ``save_pretrained`` does not
    save it (a reloaded pipeline gets that default); zero-initialised output projections are
    re-randomised so that the audio depends on the prompt."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        LongCatAudioDiTPipeline,
        LongCatAudioDiTTransformer,
        LongCatAudioDiTVae,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_t5_tokenizer(model_max_length=32)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8,
                                               num_heads=2, num_layers=1))
    torch.manual_seed(seed)
    transformer = LongCatAudioDiTTransformer(dit_dim=32, dit_depth=2, dit_heads=4, dit_text_dim=16, latent_dim=4,
                                             ff_mult=2.0)
    torch.manual_seed(seed)
    vae = LongCatAudioDiTVae(in_channels=1, channels=4, c_mults=[1, 2], strides=[2, 4], latent_dim=4,
                             encoder_latent_dim=8, downsampling_ratio=8, sample_rate=800)
    torch.manual_seed(seed + 1)
    _randomise_zero_weights(transformer)
    components = _eval_all({"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
                            "transformer": transformer,
                            "scheduler": FlowMatchEulerDiscreteScheduler(shift=1.0, invert_sigmas=True)})
    return LongCatAudioDiTPipeline(**components)


def build_tiny(family: str, seed: int = 0):
    """The tiny pipeline of ``family`` (one of :data:`TINY_FAMILIES`)."""
    if family == "audioldm2":
        return build_tiny_audioldm2(seed)
    if family == "stable_audio":
        return build_tiny_stable_audio(seed)
    if family == "ace_step":
        return build_tiny_ace_step(seed)
    if family == "stable_audio_3":
        return build_tiny_stable_audio_3(seed)
    if family == "longcat":
        return build_tiny_longcat(seed)
    raise EngineError(f"no tiny builder for family {family!r}; use one of {', '.join(TINY_FAMILIES)}")


def save_tiny(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline of ``family`` and write it to ``folder`` with ``save_pretrained``."""
    return save_pipeline(build_tiny(family, seed), folder)


def save_pipeline(pipe, folder: str | Path) -> Path:
    """Write ``pipe`` to ``folder`` (created) with ``save_pretrained``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(folder))
    return folder
