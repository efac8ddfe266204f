"""ACE-Step 1.5 (``AceStepPipeline``): sites, packed keys split into contexts, one observed run.

Every DiT block ``layers.{i}`` has ``self_attn`` (RoPE, sliding window on every other layer) and
``cross_attn`` (``AceStepAttention``: GQA, RMSNorm on q/k, no RoPE) over the packed condition
sequence. Cross-attention layer number ``i`` is block ``i`` (TADA's numbering, 0-based).

Keys (``condition_encoder``: two stable packings, valid tokens first): for one prompt the
cross-attention keys are ``[lyric tokens][1 timbre token][text tokens]`` (padding follows only in
a batch of prompts of different lengths). The text is the pipeline's SFT template (instruction,
caption, metadata incl. the duration) and the lyrics its ``# Languages / # Lyric`` format, both
tokenized as the pipeline does (after truncation). The DiT is called without a key mask.

**Contexts.** The packed keys are split after the run: each captured cross-attention site keeps its
name with context ``"text"`` and the text-token columns; a second entry ``<site>:lyrics``
(context ``"lyrics"``) holds the lyric columns — like AudioLDM2's ``t5``/``loa``. Rows of the
split frames sum to less than 1: the rest went to the other segment and to the timbre token, whose
mass is reported per frame and query in ``RunResult.aux["timbre_mass"]``. Frames delivered live to
the observer hold the packed keys (``aux["key_segments"]`` gives the slices).

Queries are latent frames after patching (patch size p): query q covers
``[q·p, (q+1)·p)`` latent frames (25 latents/s in the real model), lattice ``(Q, 1)``. CFG: one
batched call ``cat([cond, null])``, **conditional first** (``cfg_order = "cond_uncond"``); the null
half is a learned embedding at every key position. Guidance applies when ``guidance > 1`` and the
checkpoint is not turbo.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.backends.base import RunResult
from engine.backends.diffusers_backend import DiffusersBackend, to_mono
from engine.types import CancelToken, EngineError, GenerationRequest, MelSpec, RunObserver, Site

LYRICS_SUFFIX = ":lyrics"
TIMBRE_TOKEN = "<timbre>"
ANALYSIS_N_MELS = 128


class AceStepBackend(DiffusersBackend):
    """A loaded ``AceStepPipeline`` (folder, hub id or tiny). ``lyrics`` and ``vocal_language``
    are the lyric inputs of every run (``GenerationRequest`` has none)."""

    family = "ace_step"
    cfg_order = "cond_uncond"
    lyrics = ""
    vocal_language = "en"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._duration = 4.0  # formats the metadata of tokens(); set per run

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.sample_rate)

    @property
    def patch(self) -> int:
        return int(self.pipe.transformer.config.patch_size)

    @property
    def hop(self) -> int:
        """Audio samples per latent frame."""
        return int(round(self.sample_rate / self.pipe.latents_per_second))

    def _classify(self, name: str, module) -> tuple[str, str]:
        if name.endswith("cross_attn") and module.is_cross_attention:
            return "cross", "text"
        return "self", "self"

    def sites(self) -> list[Site]:
        """Sites in call order: ``self_attn`` before ``cross_attn`` in each block."""
        listed = super().sites()
        ordered = sorted(listed, key=lambda s: (int(s.name.split(".")[1]), s.kind == "cross"))
        return [Site(s.name, s.kind, s.context, s.heads, s.kv_heads, i, s.lattice) for i, s in enumerate(ordered)]

    # -- geometry ---------------------------------------------------------------------------------
    def queries(self, duration: float) -> int:
        """Patched latent frames (queries) the pipeline makes for ``duration`` s."""
        latents = math.ceil(self.pipeline_duration(duration) * self.pipe.latents_per_second)
        return -(-latents // self.patch)

    def _lattice_parent(self, name: str) -> str:
        return name.rsplit(".", 1)[0]  # the DiT block

    def _lattice_from_input(self, name, hidden, request):
        return (int(hidden.shape[1]), 1), None

    def planned_lattice(self, name: str, duration: float) -> tuple[int, int]:
        return (self.queries(duration), 1)

    def frame_shapes(self, request: GenerationRequest) -> dict[str, tuple[int, int, int]]:
        q = self.queries(request.duration)
        keys = sum(map(len, self.segments(request.prompt, request.duration).values()))
        return {s.name: (s.heads, q, keys if s.kind == "cross" else q) for s in self.sites()}

    # -- keys -------------------------------------------------------------------------------------
    def segments(self, prompt: str, duration: float | None = None, **fmt) -> dict[str, list[str]]:
        """Token strings of the packed keys by segment, in key order: ``lyrics``, ``timbre``, ``text``.

        ``fmt``: the pipeline's formatting arguments (``lyrics``, ``vocal_language``, ``bpm``,
        ``keyscale``, ``timesignature``, ``instruction``, ``max_text_length``, ``max_lyric_length``).
        """
        pipe = self.pipe
        max_text = int(fmt.pop("max_text_length", 256))
        max_lyric = int(fmt.pop("max_lyric_length", 2048))
        fmt.setdefault("lyrics", self.lyrics)
        fmt.setdefault("vocal_language", self.vocal_language)
        if fmt.get("instruction") is None:
            fmt["instruction"] = pipe._get_task_instruction(task_type="text2music")
        text, lyric = pipe._format_prompt(prompt=prompt, audio_duration=self._duration if duration is None
                                          else duration, **fmt)
        tok = pipe.tokenizer

        def pieces(s: str, limit: int) -> list[str]:
            return tok.convert_ids_to_tokens(tok(s, truncation=True, max_length=limit).input_ids)

        return {"lyrics": pieces(lyric, max_lyric), "timbre": [TIMBRE_TOKEN], "text": pieces(text, max_text)}

    def key_slices(self, segments: dict[str, list[str]]) -> dict[str, slice]:
        """Column slices of each segment in the packed keys."""
        out, start = {}, 0
        for name in ("lyrics", "timbre", "text"):
            out[name] = slice(start, start + len(segments[name]))
            start += len(segments[name])
        return out

    def tokens(self, prompt: str) -> dict[str, list[str]]:
        seg = self.segments(prompt)
        return {"text": seg["text"], "lyrics": seg["lyrics"]}

    def mel_spec(self) -> MelSpec:
        """An analysis mel (the model has none): hop = one latent frame."""
        sr = self.sample_rate
        return MelSpec(sample_rate=sr, n_fft=max(256, 2 * self.hop), hop_length=self.hop,
                       n_mels=min(ANALYSIS_N_MELS, max(8, sr // 100)), fmin=0.0, fmax=sr / 2, mel_scale="slaney")

    # -- one run ----------------------------------------------------------------------------------
    def _validate(self, request: GenerationRequest) -> None:
        super()._validate(request)
        if request.negative_prompt:
            raise EngineError("ACE-Step has no negative prompt (its unconditional half is a learned "
                              "null embedding): leave the negative prompt empty")

    def pipeline_duration(self, duration: float) -> float:
        """The duration handed to the pipeline: ``duration`` rounded up to the first whole number of
        latent frames ``n`` for which ``(n / rate) * rate == n`` holds in floating point.

        diffusers' ``AceStepPipeline`` computes ``n = ceil(duration · rate)``, then sizes the noise
        from ``ceil((n / rate) · rate)``; where that round trip is inexact (n = 7 or 28 at 25 frames/s)
        the two disagree by a frame and the DiT fails on mismatched tensor sizes (e.g. at 0.25 s or
        1.1 s). Such ``n`` are skipped: the clip is at most a few frames (40 ms each) longer."""
        rate = float(self.pipe.latents_per_second)
        frames = max(1, math.ceil(duration * rate))
        while math.ceil((frames / rate) * rate) != frames:
            frames += 1
        return frames / rate

    def _run_pipeline(self, request, generator, callback):
        with torch.no_grad():
            out = self.pipe(request.prompt, lyrics=self.lyrics, vocal_language=self.vocal_language,
                            audio_duration=self.pipeline_duration(float(request.duration)),
                            num_inference_steps=int(request.steps),
                            guidance_scale=float(request.guidance), generator=generator, callback=callback,
                            callback_steps=1, output_type="np")
        audio = np.asarray(out.audios[0], dtype=np.float32)
        notes = ["cross-attention keys packed [lyrics][timbre][text]; frames split into contexts text and lyrics"]
        return to_mono(audio, notes), notes

    def generate(self, request: GenerationRequest, observer: RunObserver | None = None,
                 cancel: CancelToken | None = None, run_id: int = 0) -> RunResult:
        self._duration = float(request.duration)
        result = super().generate(request, observer, cancel, run_id)
        return self.split_contexts(result, self.segments(request.prompt, request.duration))

    def finish_trace(self, result: RunResult, call: dict) -> RunResult:
        """:func:`engine.trace`'s result split into contexts; ``call``: ``encode_prompt``'s arguments."""
        keys = ("lyrics", "vocal_language", "instruction", "bpm", "keyscale", "timesignature",
                "max_text_length", "max_lyric_length")
        fmt = {k: (v[0] if isinstance(v, list | tuple) else v) for k, v in call.items() if k in keys}
        duration = call.get("audio_duration")
        prompt = call.get("prompt")
        prompt = prompt[0] if isinstance(prompt, list | tuple) else prompt
        return self.split_contexts(result, self.segments(prompt or "", duration, **fmt))

    def split_contexts(self, result: RunResult, segments: dict[str, list[str]]) -> RunResult:
        """Split the packed cross-attention frames of ``result`` into the ``text`` and ``lyrics``
        contexts (see the module docstring); in place, returns ``result``."""
        slices = self.key_slices(segments)
        n_keys = slices["text"].stop
        cross = {s.name: s for s in result.sites if s.kind == "cross"}
        frames: dict[tuple[int, str], np.ndarray] = {}
        timbre: dict[tuple[int, str], np.ndarray] = {}
        for (step, site), probs in result.frames.items():
            if site not in cross:
                frames[(step, site)] = probs
                continue
            if probs.shape[-1] != n_keys:
                raise EngineError(f"site {site} has {probs.shape[-1]} keys, the prompt's segments {n_keys}: "
                                  "ACE-Step's key layout differs from this backend's (one prompt, no reference audio)")
            for key, part in ((site, "text"), (site + LYRICS_SUFFIX, "lyrics")):
                array = np.ascontiguousarray(probs[..., slices[part]])
                array.setflags(write=False)
                frames[(step, key)] = array
            timbre[(step, site)] = probs[..., slices["timbre"]].astype(np.float32).sum(-1).mean(0)
        result.frames = frames
        extra = [Site(s.name + LYRICS_SUFFIX, "cross", "lyrics", s.heads, s.kv_heads, s.index, s.lattice)
                 for s in cross.values()]
        result.sites = [*result.sites, *extra]
        for site in list(result.lattices):
            if site in cross:
                result.lattices[site + LYRICS_SUFFIX] = result.lattices[site]
        result.tokens = {"text": list(segments["text"]), "lyrics": list(segments["lyrics"])}
        result.aux["timbre_mass"] = timbre
        result.aux["key_segments"] = {k: [v.start, v.stop] for k, v in slices.items()}
        return result
