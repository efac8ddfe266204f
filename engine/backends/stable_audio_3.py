"""Stable Audio 3 (``StableAudio3Pipeline``): sites, tokens, one observed run.

Every DiT block ``transformer_blocks.{i}`` has ``self_attn`` (differential, partial RoPE) and
``cross_attn`` (``StableAudio3CrossAttention``: differential, RMS q/k norms, no RoPE) over the
projected context: the prompt's tokens padded to ``min(model_max_length, 256)`` positions, then one
duration token. The DiT swaps padded positions for a learned padding embedding and drops the mask,
so **padding keys are attended**; as for Stable Audio Open their mass is reported
(``aux["sink_mass"]``) and, with the recorder's ``drop_pads``, their columns are left out.

**Which map we record.** A differential layer outputs ``(p1 − p2) V`` with ``p1 = softmax(q1 k1ᵀ)``
and ``p2 = softmax(q2 k2ᵀ)``. Frames hold **p1**, the positive branch: a probability distribution
over the keys like every other family's frames (rows sum to 1, so pooling, aggregation, entropy and
the sink mass mean the same), and the branch the model adds value through. p2 is the subtracted
"noise" map that differential attention learns to cancel common-mode attention with; the signed
effective weights p1 − p2 sum to 0 per row and can be negative, which none of the analyses accept.
(``engine.probe.attention_core.DifferentialCall(branch=2)`` computes p2 for a script that wants it.)
Self-attention sites are captured too (p1 of the fused ``to_qkv`` projection with partial RoPE;
keys: the audio frames and the memory tokens). Interventions on cross and self sites go through
``DifferentialCall.attend`` (head masks zero heads of the branches' difference; K/V patching moves
both branches' keys and the values); LSAC caches their effective weights ``p1 − p2``.

Queries: ``num_memory_tokens`` learned tokens are prepended inside the DiT and removed after; they
are cropped off, and so are latent frames beyond the requested duration (lattice ``(n, 1)``,
``n = ceil(duration · sr / (downsampling · patch))``). CFG: ``guidance <= 1`` (the default) runs one
item, **no unconditional half**; above 1 the batch is ``cat([negative, positive])``, **unconditional
first**. The pipeline has no legacy step callback: ``callback_on_step_end`` is used.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.backends.diffusers_backend import DiffusersBackend, to_mono
from engine.types import GenerationRequest, MelSpec, Site

DURATION_TOKEN = "<duration>"
ANALYSIS_N_MELS = 128


class StableAudio3Backend(DiffusersBackend):
    """A loaded ``StableAudio3Pipeline`` (folder, hub id or tiny)."""

    family = "stable_audio_3"
    drop_pad_keys = True  # padded text keys are attended (learned padding embedding); left out of frames

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vae.config.sampling_rate)

    @property
    def hop(self) -> int:
        """Audio samples per query (VAE downsampling × DiT patch)."""
        return int(self.pipe.vae.downsampling_ratio) * int(self.pipe.transformer.config.patch_size)

    @property
    def memory_tokens(self) -> int:
        return int(self.pipe.transformer.config.num_memory_tokens)

    def sites(self) -> list[Site]:
        """Sites in call order: ``self_attn`` before ``cross_attn`` in each block."""
        listed = sorted(super().sites(), key=lambda s: (int(s.name.split(".")[1]), s.kind == "cross"))
        return [Site(s.name, s.kind, s.context, s.heads, s.kv_heads, i, s.lattice) for i, s in enumerate(listed)]

    def queries(self, duration: float) -> int:
        """Queries that carry the requested audio."""
        return max(1, math.ceil(duration * self.sample_rate / self.hop))

    def _classify(self, name: str, module) -> tuple[str, str]:
        if name.endswith("cross_attn"):
            return "cross", "text"
        return "self", "self"

    def _lattice_parent(self, name: str) -> str:
        return name.rsplit(".", 1)[0]  # the DiT block

    def _lattice_from_input(self, name, hidden, request):
        frames = int(hidden.shape[1]) - self.memory_tokens
        n = min(frames, self.queries(request.duration))
        return (n, 1), slice(self.memory_tokens, self.memory_tokens + n)

    def planned_lattice(self, name: str, duration: float) -> tuple[int, int]:
        return (self.queries(duration), 1)

    def text_length(self) -> int:
        return min(int(getattr(self.pipe.tokenizer, "model_max_length", 256)), 256)

    def frame_shapes(self, request: GenerationRequest) -> dict[str, tuple[int, int, int]]:
        n = self.queries(request.duration)
        keys = self.text_length() + 1
        return {s.name: (s.heads, n, keys if s.kind == "cross" else n + self.memory_tokens) for s in self.sites()}

    def _token_ids(self, prompt: str):
        tok = self.pipe.tokenizer
        return tok(prompt, padding="max_length", max_length=self.text_length(), truncation=True)

    def tokens(self, prompt: str) -> dict[str, list[str]]:
        enc = self._token_ids(prompt)
        words = self.pipe.tokenizer.convert_ids_to_tokens(enc.input_ids)
        words = [w if m else "<pad>" for w, m in zip(words, enc.attention_mask, strict=True)]
        return {"text": [*words, DURATION_TOKEN]}

    def pad_keys(self, request: GenerationRequest) -> dict[str, torch.Tensor]:
        mask = torch.tensor(self._token_ids(request.prompt).attention_mask, dtype=torch.bool)
        pads = torch.cat([~mask, torch.zeros(1, dtype=torch.bool)])
        return {"text": pads.to(self.pipe.transformer.device)}

    def mel_spec(self) -> MelSpec:
        """An analysis mel (the model has none): hop = one query."""
        sr = self.sample_rate
        return MelSpec(sample_rate=sr, n_fft=max(256, 2 * self.hop), hop_length=self.hop,
                       n_mels=min(ANALYSIS_N_MELS, max(8, sr // 100)), fmin=0.0, fmax=sr / 2, mel_scale="slaney")

    def _run_pipeline(self, request, generator, callback):
        def step_end(pipe, i, t, tensors):
            callback(i, t, tensors.get("latents"))
            return {}

        with torch.no_grad():
            out = self.pipe(request.prompt, negative_prompt=request.negative_prompt or None,
                            duration=float(request.duration), num_inference_steps=int(request.steps),
                            guidance_scale=float(request.guidance), generator=generator,
                            callback_on_step_end=step_end, output_type="np")
        audio = np.asarray(out.audios[0], dtype=np.float32)
        notes = ["differential attention: frames hold p1 = softmax(q1 k1^T), the positive branch"]
        return to_mono(audio, notes), notes
