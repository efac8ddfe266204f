"""``EmbeddedPipeline``: text -> mel diffusion with a diffusers UNet, then Griffin-Lim.

The UNet input is ``(B, C, H=time, W=mel)`` like AudioLDM2's, so cross-attention queries are
time-major (``q = t * W + f``). The "latent" is the model-scale mel ``(T, n_mels)`` packed
losslessly (space-to-depth, 4 frames x 2 mel bins) into ``(8, T/4, n_mels/2)``; one extra constant
input channel holds the mel coordinate in ``[-1, 1]`` (CoordConv). A level-0 lattice cell
therefore covers 4 frames x 2 mel bins (``LATTICE_FACTOR``); each UNet down level halves both
axes again, so the cross-attention lattices of a 4.096 s clip are 32 x 16 and 16 x 8.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel

from engine.models.embedded.melspec import MelConfig
from engine.models.embedded.textenc import TextEncoderConfig, TinyTextEncoder, WordTokenizer
from engine.models.embedded.vocoder import vocode
from engine.types import EngineError

PACK_T, PACK_F = 4, 2  # space-to-depth factors on (time, mel)
LATTICE_FACTOR = (PACK_T, PACK_F)  # (frames, mel bins) per level-0 lattice cell
LATENT_CHANNELS = PACK_T * PACK_F
MODEL_CONFIG_FILE = "aiba_model.json"
EMBEDDED_FILES = (MODEL_CONFIG_FILE, "mel_config.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                  "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.json",
                  "scheduler/scheduler_config.json")
"""The files of an embedded model folder (checked before loading)."""


def check_mel_config(data: Any, check: Any) -> MelConfig:
    """A :class:`MelConfig` from ``mel_config.json`` data, every entry type-checked by ``check``
    (an :class:`engine.loaders.Checker`)."""
    data = check.table(data, "mel config")
    sr = check.whole(data.get("sample_rate", 16000), "sample_rate", 1000, 384_000)
    n_fft = check.whole(data.get("n_fft", 1024), "n_fft", 16, 65_536)
    check.whole(data.get("hop_length", 256), "hop_length", 1, n_fft)
    check.whole(data.get("n_mels", 64), "n_mels", 1, 1024)
    check.whole(data.get("n_frames", 256), "n_frames", 1, 1_000_000)
    for name in ("fmin", "fmax", "top_db"):
        check.number(data.get(name, 0.0), name)
    if not 0 <= data.get("fmin", 0.0) < data.get("fmax", 8000.0) <= sr / 2:
        raise check.fail(f"has a mel range outside 0-{sr / 2:g} Hz")
    try:
        return MelConfig.from_dict(data)
    except (TypeError, ValueError, EngineError) as exc:
        raise check.fail(f"has a mel config that cannot be used ({exc})") from None


def default_unet_config(cross_attention_dim: int = 64) -> dict[str, Any]:
    """The UNet of ``aiba-slakh-tiny``: 3 levels, cross-attention at levels 1-2 and the mid block."""
    return {
        "sample_size": (64, 32),
        "in_channels": LATENT_CHANNELS + 1,
        "out_channels": LATENT_CHANNELS,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": (32, 48, 64),
        "layers_per_block": 1,
        "norm_num_groups": 16,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": 4,  # diffusers' legacy name: this is the number of heads
        "time_embedding_dim": 128,
    }


PREDICTION_TYPES = ("epsilon", "v_prediction")


def default_train_scheduler(prediction_type: str = "v_prediction") -> DDPMScheduler:
    """DDPM, 1000 steps, cosine schedule. v-prediction by default: its loss weights the clean-mel
    error by SNR + 1 instead of ε's SNR, so the high-noise steps, where the prompt decides the
    timbre, are not nearly free (the v1 model used ε and conditioned weakly on text)."""
    if prediction_type not in PREDICTION_TYPES:
        raise EngineError(f"prediction type {prediction_type!r} is not one of {PREDICTION_TYPES}")
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction_type, clip_sample=False)


def training_target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
                    t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output at ``t``: the noise (ε) or the velocity (v)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return noise


def sampling_scheduler(train_scheduler: DDPMScheduler) -> DDIMScheduler:
    """DDIM from t = 999 ("trailing"); x0 is clipped to the mel's [-1, 1] range, which keeps the
    first steps (where the cosine schedule's sqrt(alpha_bar) is ~5e-5) from blowing up errors."""
    return DDIMScheduler.from_config(train_scheduler.config, clip_sample=True, clip_sample_range=1.0,
                                     set_alpha_to_one=False, timestep_spacing="trailing")


def pack_mel(mel: torch.Tensor) -> torch.Tensor:
    """``(B, T, M)`` -> ``(B, 8, T/4, M/2)`` (channel ``c = dt * PACK_F + df``)."""
    b, t, m = mel.shape
    x = mel.reshape(b, t // PACK_T, PACK_T, m // PACK_F, PACK_F)
    return x.permute(0, 2, 4, 1, 3).reshape(b, LATENT_CHANNELS, t // PACK_T, m // PACK_F)


def unpack_mel(latents: torch.Tensor) -> torch.Tensor:
    """``(B, 8, T/4, M/2)`` -> ``(B, T, M)``."""
    b, _, h, w = latents.shape
    x = latents.reshape(b, PACK_T, PACK_F, h, w).permute(0, 3, 1, 4, 2)
    return x.reshape(b, h * PACK_T, w * PACK_F)


def with_coord(latents: torch.Tensor) -> torch.Tensor:
    """Append the mel-coordinate channel (``-1`` lowest band, ``+1`` highest)."""
    b, _, h, w = latents.shape
    coord = torch.linspace(-1.0, 1.0, w, dtype=latents.dtype, device=latents.device)
    return torch.cat([latents, coord.view(1, 1, 1, w).expand(b, 1, h, w)], dim=1)


@dataclass
class EmbeddedOutput:
    """One generation: audio, the generated model-scale mel ``(T, n_mels)`` low-first, tokens."""

    audio: np.ndarray
    sample_rate: int
    mel: np.ndarray
    tokens: list[str]
    unknown_words: list[str]
    negative_tokens: list[str] = field(default_factory=list)
    timesteps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sigmas: np.ndarray = field(default_factory=lambda: np.zeros(0))


class EmbeddedPipeline:
    """The embedded default model; ``.unet`` is a plain diffusers ``UNet2DConditionModel``."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: TinyTextEncoder,
                 tokenizer: WordTokenizer, scheduler: DDIMScheduler, mel_config: MelConfig,
                 info: dict[str, Any] | None = None) -> None:
        self.unet = unet.eval()
        self.text_encoder = text_encoder.eval()
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.mel_config = mel_config
        self.info = dict(info or {})
        self.griffin_lim_iters = 32

    @classmethod
    def build(cls, mel_config: MelConfig | None = None, tokenizer: WordTokenizer | None = None,
              seed: int = 0, prediction_type: str = "v_prediction",
              text_layers: int = 0) -> EmbeddedPipeline:
        """Fresh (untrained, seeded) model with the default architecture.

        ``text_layers = 0`` gives the non-contextual text encoder (no position embedding either);
        ``> 0`` a transformer of that depth over token + position embeddings.
        """
        tokenizer = tokenizer or WordTokenizer.default()
        torch.manual_seed(seed)
        enc = TinyTextEncoder(TextEncoderConfig(tokenizer.vocab_size, n_layers=text_layers,
                                                max_length=tokenizer.max_length,
                                                use_position=text_layers > 0))
        unet = UNet2DConditionModel(**default_unet_config(enc.config.d_model))
        return cls(unet, enc, tokenizer, sampling_scheduler(default_train_scheduler(prediction_type)),
                   mel_config or MelConfig())

    # ---------------------------------------------------------------- text
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[list[str]], list[str]]:
        """Embeddings ``(B, L, d)``, keep-mask ``(B, L)``, token strings and unknown words."""
        seqs, strings, unknown = [], [], []
        for p in prompts:
            ids, toks, unk = self.tokenizer.tokenize(p)
            seqs.append(ids)
            strings.append(toks)
            unknown.extend(w for w in unk if w not in unknown)
        ids, mask = self.tokenizer.pad(seqs)
        device = self.unet.device
        with torch.no_grad():
            emb = self.text_encoder(ids.to(device), mask.to(device))
        return emb, mask.to(device), strings, unknown

    def n_frames(self, seconds: float) -> int:
        """Mel frames for ``seconds``, rounded up to the UNet's multiple of 16 frames."""
        if not 0.5 <= seconds <= 30.0:
            raise EngineError(f"duration {seconds} s is outside 0.5-30 s for the embedded model")
        step = PACK_T * 2 ** (len(self.unet.config.block_out_channels) - 1)
        return max(step, int(math.ceil(self.mel_config.frames_for(seconds) / step)) * step)

    # ---------------------------------------------------------------- generation
    def __call__(self, prompt: str, negative_prompt: str = "", num_inference_steps: int = 25,
                 guidance_scale: float = 3.0, generator: torch.Generator | None = None,
                 audio_length_in_s: float = 4.0,
                 callback: Callable[[int, Any, torch.Tensor], None] | None = None,
                 callback_steps: int = 1, vocode_audio: bool = True,
                 griffin_lim_iters: int | None = None) -> EmbeddedOutput:
        """Generate; CFG batch order is ``[uncond, cond]`` (as AudioLDM2); callback after each step.
        ``griffin_lim_iters`` overrides the vocoder's iteration count for this call."""
        if num_inference_steps < 1:
            raise EngineError("num_inference_steps must be at least 1")
        cfg = guidance_scale > 1.0
        prompts = [negative_prompt, prompt] if cfg else [prompt]
        emb, mask, strings, unknown = self.encode(prompts)
        frames = self.n_frames(audio_length_in_s)
        m = self.mel_config.n_mels
        shape = (1, LATENT_CHANNELS, frames // PACK_T, m // PACK_F)
        device = self.unet.device
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = latents * self.scheduler.init_noise_sigma
        timesteps = self.scheduler.timesteps
        alphas = self.scheduler.alphas_cumprod
        sigmas = np.array([float(((1 - alphas[int(t)]) / alphas[int(t)]).sqrt()) for t in timesteps])
        with torch.no_grad():
            for i, t in enumerate(timesteps):
                inp = torch.cat([latents] * 2) if cfg else latents
                inp = with_coord(self.scheduler.scale_model_input(inp, t))
                pred = self.unet(inp, t, encoder_hidden_states=emb, encoder_attention_mask=mask).sample
                if cfg:
                    pred_u, pred_c = pred.chunk(2)
                    pred = pred_u + guidance_scale * (pred_c - pred_u)
                latents = self.scheduler.step(pred, t, latents).prev_sample
                if callback is not None and i % callback_steps == 0:
                    callback(i, t, latents)
        mel = unpack_mel(latents)[0].clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)
        iters = self.griffin_lim_iters if griffin_lim_iters is None else int(griffin_lim_iters)
        audio = vocode(mel, self.mel_config, iters) if vocode_audio else np.zeros(0, np.float32)
        return EmbeddedOutput(audio=audio, sample_rate=self.mel_config.sample_rate, mel=mel,
                              tokens=strings[-1], unknown_words=unknown,
                              negative_tokens=strings[0] if cfg else [],
                              timesteps=timesteps.cpu().numpy().astype(np.float64), sigmas=sigmas)

    # ---------------------------------------------------------------- persistence
    @property
    def components(self) -> dict[str, Any]:
        """The modules and objects of the pipeline, by name (as diffusers pipelines have)."""
        return {"unet": self.unet, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer,
                "scheduler": self.scheduler}

    def to(self, device: str) -> EmbeddedPipeline:
        self.unet.to(device)
        self.text_encoder.to(device)
        return self

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.text_encoder.save(folder / "text_encoder")
        (folder / "tokenizer").mkdir(exist_ok=True)
        self.tokenizer.save(folder / "tokenizer" / "vocab.json")
        self.scheduler.save_pretrained(folder / "scheduler")
        (folder / "mel_config.json").write_text(json.dumps(self.mel_config.to_dict(), indent=1))
        info = {**self.info, "family": "embedded", "lattice_factor": list(LATTICE_FACTOR),
                "latent": "space-to-depth (4 frames x 2 mels) of the model-scale mel + 1 mel-coordinate channel"}
        (folder / MODEL_CONFIG_FILE).write_text(json.dumps(info, indent=1))

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "cpu") -> EmbeddedPipeline:
        """Load a folder written by :meth:`save_pretrained`. Every file is checked first (present,
        JSON tables, safetensors headers within :func:`engine.loaders.max_array_bytes`); a damaged
        folder raises one :class:`EngineError` line."""
        from engine.loaders import Checker, read_json, safetensors_header

        folder = Path(folder)
        if not (folder / MODEL_CONFIG_FILE).is_file():
            raise EngineError(f"{folder} is not an embedded model folder (no {MODEL_CONFIG_FILE}); "
                              "run `python main.py train-default --out DIR` to make one")
        check = Checker(f"embedded model folder {folder}",
                        "re-create it with `python main.py train-default --out DIR`")
        for rel in EMBEDDED_FILES:
            if not (folder / rel).is_file():
                raise check.fail(f"lacks {rel}")
        for rel in EMBEDDED_FILES:
            if rel.endswith(".safetensors"):
                safetensors_header(folder / rel, check)
            elif rel.endswith(".json"):
                check.table(read_json(folder / rel, check), rel)
        info = read_json(folder / MODEL_CONFIG_FILE, check)
        mel = check_mel_config(read_json(folder / "mel_config.json", check), check)
        enc = TinyTextEncoder.load(folder / "text_encoder")
        tok = WordTokenizer.load(folder / "tokenizer" / "vocab.json")
        try:
            unet = UNet2DConditionModel.from_pretrained(folder / "unet")
            sched = DDIMScheduler.from_pretrained(folder / "scheduler")
        except Exception as exc:  # noqa: BLE001 - diffusers raises OSError, ValueError, RuntimeError, ...
            raise check.fail(f"has a UNet or scheduler that cannot be loaded ({type(exc).__name__}: {exc})") from None
        if int(unet.config.cross_attention_dim) != int(enc.config.d_model):
            raise check.fail(f"has a UNet for {unet.config.cross_attention_dim}-d text but a "
                             f"{enc.config.d_model}-d text encoder")
        if enc.config.vocab_size != tok.vocab_size:
            raise check.fail(f"has a text encoder for {enc.config.vocab_size} words but a "
                             f"{tok.vocab_size}-word vocabulary")
        return cls(unet, enc, tok, sched, mel, info).to(device)
