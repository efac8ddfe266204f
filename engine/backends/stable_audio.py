"""Stable Audio Open (``StableAudioPipeline``): sites, tokens, one observed run.

**Stable Audio has true cross-attention in every DiT block.** Each ``StableAudioDiTBlock`` has
``attn1`` (self-attention with partial RoPE) and ``attn2``, an ``Attention`` built with
``cross_attention_dim`` and called with ``encoder_hidden_states`` = the projected conditioning
tokens (T5 tokens + ``seconds_start`` + ``seconds_end``): 24 cross-attention sites
``transformer_blocks.{i}.attn2`` in the real 24-layer model (the test
``test_stable_audio_sites_are_all_cross`` checks ``is_cross_attention`` and that the keys have
the conditioning length on every block). This runs counter to the AIBA paper's Appendix A.4
claim that SAO conditions only by token concatenation: it does both — a single global
(timing + timestep) token is also prepended to the latent sequence.

Layout handled here:

* the latent is time-only, so the lattice is ``(T_frames, 1)``;
* query 0 (the prepended global token) is dropped and queries are cropped to the latent frames
  that carry audio for the requested duration (``ceil(duration * sr / hop)``);
* GQA: query head ``h`` uses K/V head ``h // (heads // kv_heads)``;
* keys are ``tokenizer.model_max_length`` T5 positions (padded with ``"<pad>"``; padding is
  zeroed, not masked, so pads absorb softmax mass) + ``seconds_start`` + ``seconds_end``.

**Padded keys are dropped before storage** (``drop_pad_keys``: a 10-word prompt keeps ~11 of
130 keys): frames hold the raw probabilities over the real T5 tokens and the two seconds tokens
(rows sum to 1 minus the sink mass), and ``RunResult.tokens["text"]`` lists those keys only. The
mass on the padded keys is reported per frame and query as ``RunResult.aux["sink_mass"]``, the
model's pad positions as ``aux["dropped_keys"]``; rows renormalised over the stored keys
(:func:`engine.probe.sinks.renormalise_over_real_keys` with ``aux["pad_keys"]``, all False) give
the distribution over the real tokens. CFG order is ``[uncond, cond]``; the
stereo output is averaged to mono.

**Decoding is cropped to the clip** (``crop_decode``): the pipeline denoises all 1024 latent frames
(the DiT attends over the whole sequence, so they stay) but then decodes all of them and cuts the
waveform to ``audio_end_in_s``. The Oobleck decoder is convolutional, so only the frames up to the
clip's end plus the decoder's receptive field (:meth:`StableAudioBackend.decode_margin`) reach the
kept samples: those are decoded, the rest never is (the audio equals the uncropped decode up to
float rounding; measured in ``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from engine.backends.diffusers_backend import DiffusersBackend, to_mono
from engine.types import EngineError, GenerationRequest, MelSpec

SECONDS_TOKENS = ["seconds_start", "seconds_end"]
ANALYSIS_N_MELS = 128


def oobleck_margin(downsampling_ratios) -> int:
    """Latent frames past a cut that can still reach the samples before it through an Oobleck
    decoder: conv1 (kernel 7: 3 frames), per upsampling block the transposed conv (1 input frame)
    and three residual units (kernel 7, dilations 1, 3, 9: 39 samples at the block's output rate),
    conv2 (3 samples); rounded up, plus one frame."""
    reach, rate = 3.0, 1
    for stride in list(downsampling_ratios)[::-1]:
        rate *= int(stride)
        reach += 1 + 39 / rate
    return int(math.ceil(reach + 3 / rate)) + 1


class StableAudioBackend(DiffusersBackend):
    """A loaded ``StableAudioPipeline`` (hub id, folder, or tiny)."""

    family = "stable_audio"
    drop_pad_keys = True  # T5 pads are zeroed, not masked: their keys are left out of frames
    crop_decode = True  # decode only the latent frames the clip needs (see the module docstring)

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vae.config.sampling_rate)

    @property
    def hop(self) -> int:
        return int(self.pipe.vae.hop_length)

    @property
    def max_duration(self) -> float:
        return self.pipe.transformer.config.sample_size * self.hop / self.sample_rate

    def audio_frames(self, duration: float, latent_frames: int | None = None) -> int:
        """Latent frames that carry audio for ``duration`` s (the pipeline crops the rest)."""
        total = latent_frames or int(self.pipe.transformer.config.sample_size)
        samples = int(duration * self.sample_rate)
        return max(1, min(total, math.ceil(samples / self.hop)))

    def _classify(self, name: str, module) -> tuple[str, str]:
        if name.endswith("attn2") and module.is_cross_attention:
            return "cross", "text"
        return "self", "self"

    def _lattice_parent(self, name: str) -> str:
        return name.rsplit(".", 1)[0]  # the DiT block

    def _lattice_from_input(self, name, hidden, request):
        latent_frames = int(hidden.shape[1]) - 1  # drop the prepended global token
        n = self.audio_frames(request.duration, latent_frames)
        return (n, 1), slice(1, 1 + n)  # self sites: cropped queries, all 1 + L keys

    def planned_lattice(self, name: str, duration: float) -> tuple[int, int]:
        """The query lattice of a site for ``duration`` seconds: audio-carrying frames x 1."""
        return (self.audio_frames(duration), 1)

    def key_count(self) -> int:
        return int(self.pipe.tokenizer.model_max_length) + len(SECONDS_TOKENS)

    def frame_shapes(self, request: GenerationRequest) -> dict[str, tuple[int, int, int]]:
        n = self.audio_frames(request.duration)
        total = int(self.pipe.transformer.config.sample_size) + 1
        shapes = {}
        for site in self.sites():
            if site.kind == "cross":
                shapes[site.name] = (site.heads, n, self.key_count())
            else:
                shapes[site.name] = (site.heads, n, total)
        return shapes

    def _token_ids(self, prompt: str):
        tok = self.pipe.tokenizer
        return tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True)

    def tokens(self, prompt: str) -> dict[str, list[str]]:
        enc = self._token_ids(prompt)
        words = self.pipe.tokenizer.convert_ids_to_tokens(enc.input_ids)
        words = [w if m else "<pad>" for w, m in zip(words, enc.attention_mask, strict=True)]
        return {"text": words + SECONDS_TOKENS}

    def pad_keys(self, request: GenerationRequest) -> dict[str, torch.Tensor]:
        mask = torch.tensor(self._token_ids(request.prompt).attention_mask, dtype=torch.bool)
        pads = torch.cat([~mask, torch.zeros(len(SECONDS_TOKENS), dtype=torch.bool)])
        return {"text": pads.to(self.pipe.transformer.device)}

    def mel_spec(self) -> MelSpec:
        """An analysis mel (the model has none): hop = one latent frame, so lattice rows align."""
        sr = self.sample_rate
        return MelSpec(sample_rate=sr, n_fft=max(2048, self.hop), hop_length=self.hop,
                       n_mels=ANALYSIS_N_MELS, fmin=0.0, fmax=sr / 2, mel_scale="slaney")

    def _validate(self, request: GenerationRequest) -> None:
        super()._validate(request)
        if request.duration > self.max_duration:
            raise EngineError(
                f"duration {request.duration} s is over this model's maximum of {self.max_duration:.2f} s"
            )

    def decode_margin(self) -> int:
        """Latent frames past the clip's end that still reach its samples (:func:`oobleck_margin`)."""
        return oobleck_margin(self.pipe.vae.config.downsampling_ratios)

    @contextmanager
    def _cropped_decode(self, duration: float) -> Iterator[None]:
        """While active, ``vae.decode`` decodes only the latent frames the clip needs."""
        vae = self.pipe.vae
        keep = self.audio_frames(duration) + self.decode_margin()
        stock = vae.decode

        def decode(z, *args, **kwargs):
            return stock(z[..., :keep], *args, **kwargs)

        vae.decode = decode
        try:
            yield
        finally:
            del vae.decode  # the class method again

    def _run_pipeline(self, request, generator, callback):
        if self.crop_decode:
            with self._cropped_decode(float(request.duration)):
                audio = self._call_pipeline(request, generator, callback, audio_end_in_s=float(request.duration))
        else:
            audio = self._call_pipeline(request, generator, callback, audio_end_in_s=float(request.duration))
        notes = ["frames hold probabilities over the real keys; T5 pads dropped (their mass: aux['sink_mass'])"]
        return to_mono(audio, notes), notes
