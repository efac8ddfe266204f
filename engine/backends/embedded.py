"""The embedded default model (``aiba-slakh-tiny``) behind the :class:`Backend` protocol.

It reuses the generic diffusers machinery (:class:`DiffusersBackend`: capture processors, step
and lattice hooks, budget, recorder). Specific here:

* sites: the UNet's ``attn2`` modules are cross-attention over the text tokens (context
  ``"text"``, keys = the prompt's word tokens, ``<bos>`` first); ``attn1`` are self-attention;
* lattice: the parent ``Transformer2DModel`` receives ``(B, C, H=time, W=mel)``; a level-0 cell
  is 4 frames x 2 mel bins (``LATTICE_FACTOR``), each UNet level halves both axes;
* keys: cond and uncond captions are padded to the same length; when the negative prompt is the
  longer one, the cond item's extra keys are masked ``<pad>`` keys (``pad_keys``) and the token
  list is padded with ``"<pad>"`` so that it matches K;
* unknown prompt words are reported in ``RunResult.warnings``;
* ``mel`` is the generated model-scale mel ``(T, n_mels)`` in ``[-1, 1]``, low bin first.
"""

from __future__ import annotations

import torch

from engine.backends.base import RunResult
from engine.backends.diffusers_backend import DiffusersBackend
from engine.backends.unet_sites import UNetSitesMixin
from engine.models.embedded.pipeline import LATTICE_FACTOR, EmbeddedPipeline
from engine.models.embedded.textenc import PAD
from engine.probe.run_context import RunContext
from engine.types import CancelToken, GenerationRequest, MelSpec, RunObserver

# Griffin-Lim iterations of a preview (request.preview): about a third of the vocoder's time; the
# default 32 stays for every other run
PREVIEW_GRIFFIN_LIM_ITERS = 8


class EmbeddedBackend(UNetSitesMixin, DiffusersBackend):
    """A loaded :class:`EmbeddedPipeline`."""

    family = "embedded"

    def __init__(self, pipe: EmbeddedPipeline, model_id: str = "embedded", device: str = "cpu",
                 dtype: str = "float32") -> None:
        notes = []
        if dtype not in ("float32", "fp32"):
            notes.append(f"the embedded model runs in float32 only; dtype {dtype!r} was ignored")
        super().__init__(pipe.to(device), model_id, device, "float32", warnings=notes)
        self._run: RunContext | None = None

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.mel_config.sample_rate)

    def mel_spec(self) -> MelSpec:
        return self.pipe.mel_config.mel_spec()

    # -- sites and geometry ----------------------------------------------------------------------
    def _classify(self, name: str, module) -> tuple[str, str]:
        if name.endswith("attn2") and module.is_cross_attention:
            return "cross", "text"
        return "self", "self"

    def _level0_lattice(self, duration: float) -> tuple[int, int]:
        return (self.pipe.n_frames(duration) // LATTICE_FACTOR[0],
                self.pipe.mel_config.n_mels // LATTICE_FACTOR[1])

    def lattice_factor(self, name: str) -> tuple[int, int]:
        """Mel frames and mel bins covered by one lattice cell of site ``name``."""
        level = self.site_level(name)
        return LATTICE_FACTOR[0] << level, LATTICE_FACTOR[1] << level

    def _key_count(self, request: GenerationRequest) -> int:
        n = len(self.pipe.tokenizer.tokenize(request.prompt)[0])
        if request.guidance > 1.0:
            n = max(n, len(self.pipe.tokenizer.tokenize(request.negative_prompt)[0]))
        return n

    def frame_shapes(self, request: GenerationRequest) -> dict[str, tuple[int, int, int]]:
        k = self._key_count(request)
        shapes = {}
        for site in self.sites():
            t, f = self.planned_lattice(site.name, request.duration)
            shapes[site.name] = (site.heads, t * f, k if site.kind == "cross" else t * f)
        return shapes

    def pad_keys(self, request: GenerationRequest) -> dict[str, torch.Tensor]:
        n_cond = len(self.pipe.tokenizer.tokenize(request.prompt)[0])
        keys = torch.zeros(self._key_count(request), dtype=torch.bool)
        keys[n_cond:] = True
        return {"text": keys}

    # -- prompt ----------------------------------------------------------------------------------
    def tokens(self, prompt: str) -> dict[str, list[str]]:
        return {"text": self.pipe.tokenizer.tokenize(prompt)[1]}

    def unknown_words(self, prompt: str) -> list[str]:
        return self.pipe.tokenizer.tokenize(prompt)[2]

    # -- one run ---------------------------------------------------------------------------------
    def _validate(self, request: GenerationRequest) -> None:
        super()._validate(request)
        self.pipe.n_frames(request.duration)  # raises for durations the model cannot make
        self.pipe.tokenizer.tokenize(request.prompt)
        self.pipe.tokenizer.tokenize(request.negative_prompt)

    def _extra_hooks(self, run: RunContext) -> list:
        self._run = run
        return []

    def _run_pipeline(self, request, generator, callback):
        iters = PREVIEW_GRIFFIN_LIM_ITERS if request.preview else self.pipe.griffin_lim_iters
        out = self.pipe(request.prompt, negative_prompt=request.negative_prompt,
                        num_inference_steps=int(request.steps), guidance_scale=float(request.guidance),
                        generator=generator, audio_length_in_s=float(request.duration),
                        callback=callback, callback_steps=1, griffin_lim_iters=iters)
        if self._run is not None:
            self._run.mel = out.mel
        return out.audio, ["mel is the generated model-scale log-mel in [-1, 1], (T, n_mels), low first",
                           f"lattice cell at level 0: {LATTICE_FACTOR[0]} frames x {LATTICE_FACTOR[1]} mel bins",
                           f"vocoder: Griffin-Lim, {iters} iterations" + (" (preview)" if request.preview else "")]

    def generate(self, request: GenerationRequest, observer: RunObserver | None = None,
                 cancel: CancelToken | None = None, run_id: int = 0) -> RunResult:
        result = super().generate(request, observer, cancel, run_id)
        k = self._key_count(request)
        text = result.tokens["text"]
        result.tokens["text"] = text + [PAD] * (k - len(text))
        unknown = self.unknown_words(request.prompt)
        if unknown:
            result.warnings.append(
                f"words not in the embedded model's vocabulary (read as <unk>): {', '.join(unknown)}")
        neg_unknown = self.unknown_words(request.negative_prompt) if request.guidance > 1.0 else []
        if neg_unknown:
            result.warnings.append(
                f"negative-prompt words not in the vocabulary (read as <unk>): {', '.join(neg_unknown)}")
        return result
