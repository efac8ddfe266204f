"""AudioLDM2 (``AudioLDM2Pipeline``): sites, contexts, tokens, mel, one observed run.

Each cross-attention layer position of the UNet holds sibling ``Transformer2DModel``s, one per
entry of the block's ``cross_attention_dim`` list (``[None, 768, 1024]`` in the real model). The
UNet routes entry ``idx`` as diffusers does: ``None`` → no context (its ``attn2`` is a second
self-attention, kind ``"self"``); ``idx <= 1`` → the 8 GPT-2 generated "LOA" embeddings
(context ``"loa"``, keys labelled ``loa0..loa7``: they are generated, not words); ``idx > 1`` →
the Flan-T5 token embeddings with their mask (context ``"t5"``, keys are the ``tokenizer_2``
token strings of the prompt). No block attends to both contexts.

Lattice: the parent ``Transformer2DModel`` receives ``(B, C, H=time, W=mel)``; queries are
time-major ``q = t*W + f``. The generated mel is read from the vocoder's input
``(B, T, n_mels)`` (low mel bin first), i.e. the VAE-decoded log-mel the pipeline vocodes.
CFG batch order is ``[uncond, cond]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from engine.backends.diffusers_backend import DiffusersBackend, parse_site
from engine.backends.unet_sites import UNetSitesMixin
from engine.probe.run_context import RunContext
from engine.types import EngineError, GenerationRequest, MelSpec

# AudioLDM2's STFT settings (training config: filter_length 1024, hop 160, fmin 0, fmax 8000);
# the diffusers configs carry only sampling rate, hop (vocoder upsampling) and mel count.
DEFAULT_N_FFT = 1024


class AudioLDM2Backend(UNetSitesMixin, DiffusersBackend):
    """A loaded ``AudioLDM2Pipeline`` (hub id, folder, or tiny)."""

    family = "audioldm2"

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vocoder.config.sampling_rate)

    @property
    def n_loa_tokens(self) -> int:
        return int(getattr(self.pipe.language_model.config, "max_new_tokens", None) or 8)

    def _classify(self, name: str, module) -> tuple[str, str]:
        match = parse_site(name)
        if match is None or match["attn"] == "attn1":
            return "self", "self"
        block = self.denoiser.get_submodule(match["block"])
        dims = list(block.cross_attention_dim)
        idx = int(match["att"]) % len(dims)
        if dims[idx] is None or not module.is_cross_attention:
            return "self", "self"
        return "cross", ("loa" if idx <= 1 else "t5")

    # -- geometry from the architecture ---------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    def mel_frames(self, duration: float) -> int:
        """Mel frames the pipeline generates for ``duration`` s (rounded up to the VAE factor)."""
        voc = self.pipe.vocoder.config
        factor = np.prod(voc.upsample_rates) / voc.sampling_rate
        height = int(duration / factor)
        vsf = self.vae_scale_factor
        return int(math.ceil(height / vsf)) * vsf

    def _level0_lattice(self, duration: float) -> tuple[int, int]:
        vsf = self.vae_scale_factor
        return self.mel_frames(duration) // vsf, int(self.pipe.vocoder.config.model_in_dim) // vsf

    def frame_shapes(self, request: GenerationRequest) -> dict[str, tuple[int, int, int]]:
        keys = {"loa": self.n_loa_tokens, "t5": len(self.tokens(request.prompt)["t5"])}
        shapes = {}
        for site in self.sites():
            t, f = self.planned_lattice(site.name, request.duration)
            k = keys.get(site.context, t * f)
            shapes[site.name] = (site.heads, t * f, k)
        return shapes

    # -- prompt, mel ---------------------------------------------------------------------------
    def tokens(self, prompt: str) -> dict[str, list[str]]:
        tok = self.pipe.tokenizer_2
        ids = tok(prompt, truncation=True, max_length=tok.model_max_length).input_ids
        return {
            "loa": [f"loa{i}" for i in range(self.n_loa_tokens)],
            "t5": tok.convert_ids_to_tokens(ids),
        }

    def mel_spec(self) -> MelSpec:
        voc = self.pipe.vocoder.config
        sr = int(voc.sampling_rate)
        return MelSpec(sample_rate=sr, n_fft=DEFAULT_N_FFT, hop_length=int(np.prod(voc.upsample_rates)),
                       n_mels=int(voc.model_in_dim), fmin=0.0, fmax=sr / 2, mel_scale="slaney")

    def _validate(self, request: GenerationRequest) -> None:
        super()._validate(request)
        voc = self.pipe.vocoder.config
        shortest = float(np.prod(voc.upsample_rates) / voc.sampling_rate * self.vae_scale_factor)
        if request.duration < shortest:
            raise EngineError(f"duration {request.duration} s is below this model's minimum of {shortest:g} s")

    def _extra_hooks(self, run: RunContext) -> list[tuple[torch.nn.Module, Callable]]:
        def vocoder_hook(module, args, kwargs):
            mel = args[0] if args else kwargs.get("input_values")
            if mel is not None:
                run.mel = mel[0].detach().float().cpu().numpy()
        return [(self.pipe.vocoder, vocoder_hook)]

    def _run_pipeline(self, request, generator, callback):
        audio = self._call_pipeline(request, generator, callback, audio_length_in_s=float(request.duration))
        return audio, ["mel is the VAE-decoded log-mel fed to the vocoder, (T, n_mels), low first"]
