"""A generic backend for diffusers pipelines whose denoiser uses diffusers attention modules but
that no family backend knows (tested with LongCat-Audio-DiT, ``LongCatAudioDiTPipeline``).

Nothing here assumes a processor signature or a CFG batch layout:

* **sites** are found by walking the denoiser's modules: every module with a ``processor`` and
  ``set_processor`` (diffusers ``Attention`` and ``AttentionModuleMixin`` classes), in registration
  order, whether or not the denoiser has ``attn_processors`` (LongCat's has not). A site is
  ``cross`` when the module says so (``is_cross_attention``), when its name says so (``cross``,
  ``attn2``) or when its key projection reads a different width than its query projection;
  cross sites attend to context ``"text"``;
* **capture** (:class:`KernelCapture`, used by :meth:`GenericBackend.generate` and by
  :func:`engine.trace`) wraps each site's processor with one that declares the same
  call signature, and records the probabilities at the kernel: while a wrapped processor runs,
  ``torch.nn.functional.scaled_dot_product_attention`` (what diffusers' native attention backend
  calls) computes ``softmax(q kᵀ·scale + mask)`` of the query and key it is given, after the
  processor's own norms and RoPE. The kernel's output is the stock one;
* **steps**: a denoising step is the denoiser calls between two ``scheduler.step`` calls; only
  the **first** call of each step is recorded. Pipelines that run CFG as separate calls with the
  conditional call first (LongCat: ``SEPARATE_CFG_COND_FIRST``) record its items; otherwise the
  batch layout is diffusers' ``[uncond, cond]`` when the pipeline says it guides;
* **lattice**: time-only, ``(Q, 1)`` with Q the kernel's query length; **tokens**: the pipeline's
  tokenizer on the prompt after the pipeline module's own ``_normalize_text`` when it has one.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import torch

from engine.backends.base import PipelineHolder, RunResult
from engine.types import CancelToken, EngineError, GenerationRequest, MelSpec, RunObserver, Site

SEPARATE_CFG_COND_FIRST = ("LongCatAudioDiTPipeline",)
FAMILIES = {"LongCatAudioDiTPipeline": "longcat"}  # family names of known pipelines on this path
DURATION_KEYWORDS = ("audio_duration_s", "audio_length_in_s", "audio_duration", "duration", "audio_end_in_s")
ANALYSIS_N_MELS = 128


def walk_attention(denoiser: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Attention modules of ``denoiser`` by path: modules with a ``processor`` and ``set_processor``."""
    return {name: m for name, m in denoiser.named_modules()
            if name and hasattr(m, "processor") and callable(getattr(m, "set_processor", None))}


def is_cross(name: str, module: Any) -> bool:
    """Whether an attention module attends to a context (see the module docstring)."""
    if getattr(module, "is_cross_attention", False):
        return True
    leaf = name.rsplit(".", 1)[-1]
    if "cross" in leaf or leaf == "attn2":
        return True
    to_q, to_k = getattr(module, "to_q", None), getattr(module, "to_k", None)
    return to_q is not None and to_k is not None and to_k.in_features != to_q.in_features


class KernelSite:
    """Wraps a site's processor, declaring its call signature (``inspect`` sees the wrapped one's,
    which diffusers' ``Attention`` filters keywords by), and marks the site active while it runs."""

    def __init__(self, site: str, inner: Any, state: KernelCapture) -> None:
        self.site, self.inner, self.state = site, inner, state

        def call(*args: Any, **kwargs: Any) -> Any:
            return type(self).__call__(self, *args, **kwargs)

        call.__signature__ = inspect.signature(inner.__call__)  # type: ignore[attr-defined]
        self.__dict__["__call__"] = call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        previous, self.state.active = self.state.active, self.site
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.state.active = previous


class KernelCapture:
    """Kernel-level capture of one run (see the module docstring): processor wrappers, an SDPA hook
    that records the active site's conditional probabilities on the first denoiser call of each
    step, and the step boundary from ``scheduler.step``. ``on_step(module, args, kwargs)`` runs at
    the start of every step (it ticks the run's clock)."""

    def __init__(self, recorder: Any, run: Any, on_step: Callable) -> None:
        self.recorder, self.run, self.on_step = recorder, run, on_step
        self.active: str | None = None
        self.stepped = False
        self.call_in_step = 0

    def step_hook(self, module: Any, args: Any, kwargs: Any) -> None:
        """A step starts at the first denoiser call after ``scheduler.step``; later calls of the same
        step (separate CFG calls) are counted and not recorded."""
        if self.run.clock.step >= 0 and not self.stepped:
            self.call_in_step += 1
            return
        self.stepped, self.call_in_step = False, 0
        self.on_step(module, args, kwargs)

    def sdpa(self, kernel: Callable) -> Callable:
        """``kernel`` (SDPA) that also records the active site's probabilities."""
        from engine.probe.sdpa_intercept import sdpa_probs

        def hooked(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                   enable_gqa: bool = False, **kwargs: Any) -> torch.Tensor:
            site = self.active
            if site is not None and self.call_in_step == 0 and query.ndim == 4 and self.recorder.wants(site):
                items = self.run.cfg.cond_item(query.shape[0])
                mask = attn_mask
                if mask is not None and mask.ndim == 4 and mask.shape[0] > 1:
                    mask = mask[items]
                with torch.no_grad():
                    probs = sdpa_probs(query[items], key[items], mask, is_causal, scale, enable_gqa)[0]
                self.recorder.set_lattice(site, (int(query.shape[-2]), 1), slice(None))
                self.recorder.add(site, probs)
            if scale is not None:
                kwargs["scale"] = scale
            if enable_gqa:
                kwargs["enable_gqa"] = enable_gqa
            return kernel(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs)
        return hooked


class GenericBackend(PipelineHolder):
    """A diffusers pipeline seen through :mod:`engine.tracing` (see the module docstring)."""

    family = "generic"
    generic = True
    cfg_order = "uncond_cond"

    def __init__(self, pipe: Any, model_id: str = "generic", device: str = "cpu", dtype: str = "float32",
                 revision: str | None = None, warnings: list[str] | None = None) -> None:
        # an engine-owned pipeline: engine.trace restores its progress-bar setting afterwards
        super().__init__(pipe, model_id, device, dtype, revision, warnings)
        self.separate_cfg_calls = type(pipe).__name__ in SEPARATE_CFG_COND_FIRST
        self.family = FAMILIES.get(type(pipe).__name__, "generic")
        self._lattices: dict[str, tuple[int, int]] = {}
        if not walk_attention(self.denoiser):
            raise EngineError(f"{type(pipe).__name__}'s denoiser has no diffusers attention modules to capture")

    @property
    def denoiser(self) -> torch.nn.Module:
        for name in ("transformer", "unet"):
            module = getattr(self.pipe, name, None)
            if isinstance(module, torch.nn.Module):
                return module
        raise EngineError(f"{type(self.pipe).__name__} has no transformer or unet to capture")

    def attention_modules(self) -> dict[str, torch.nn.Module]:
        """The denoiser's attention modules by path (:func:`walk_attention`)."""
        return walk_attention(self.denoiser)

    @contextmanager
    def kernel_capture(self, sites: list[Site], recorder: Any, run: Any, on_step: Callable) -> Iterator[KernelCapture]:
        """Install :class:`KernelCapture` on ``sites`` for one run; everything is undone on exit,
        also when the run raises."""
        import torch.nn.functional as F

        state = KernelCapture(recorder, run, on_step)
        modules = self.attention_modules()
        scheduler = self.pipe.scheduler
        stack = ExitStack()
        with stack:
            for site in sites:
                module = modules[site.name]
                original = module.processor
                module.set_processor(KernelSite(site.name, original, state))
                stack.callback(module.set_processor, original)
            step = scheduler.step

            def scheduler_step(*args: Any, **kwargs: Any) -> Any:
                state.stepped = True
                return step(*args, **kwargs)

            object.__setattr__(scheduler, "step", scheduler_step)
            stack.callback(vars(scheduler).pop, "step", None)
            handle = self.denoiser.register_forward_pre_hook(state.step_hook, with_kwargs=True)
            stack.callback(handle.remove)
            kernel = F.scaled_dot_product_attention
            F.scaled_dot_product_attention = state.sdpa(kernel)
            stack.callback(setattr, F, "scaled_dot_product_attention", kernel)
            yield state

    def sites(self) -> list[Site]:
        """Every attention module of the denoiser, in registration order."""
        out = []
        for index, (name, module) in enumerate(walk_attention(self.denoiser).items()):
            heads = int(getattr(module, "heads", 1))
            kv = heads
            if hasattr(module, "to_k") and hasattr(module, "to_q"):
                kv = max(1, module.to_k.out_features // max(1, module.to_q.out_features // heads))
            cross = is_cross(name, module)
            out.append(Site(name, "cross" if cross else "self", "text" if cross else "self", heads, kv, index,
                            self._lattices.get(name)))
        return out

    def _lattice_from_input(self, name: str, hidden: torch.Tensor, request: Any) -> tuple[tuple[int, int], None]:
        return (int(hidden.shape[-2]), 1), None

    def pad_keys(self, request: Any) -> dict[str, torch.Tensor]:
        return {}

    def _extra_hooks(self, run: Any) -> list:
        return []

    def tokens(self, prompt: str) -> dict[str, list[str]]:
        normalise = getattr(sys.modules.get(type(self.pipe).__module__), "_normalize_text", None)
        text = normalise(prompt) if callable(normalise) else prompt
        tok = self.pipe.tokenizer
        return {"text": tok.convert_ids_to_tokens(tok(text, truncation=True).input_ids)}

    @property
    def sample_rate(self) -> int:
        sr = getattr(self.pipe, "sample_rate", None)
        config = getattr(getattr(self.pipe, "vae", None), "config", {})
        sr = sr or getattr(config, "sample_rate", None) or getattr(config, "sampling_rate", None)
        if not sr:
            raise EngineError(f"cannot tell the sample rate of {type(self.pipe).__name__}")
        return int(sr)

    @property
    def hop(self) -> int:
        """Audio samples per latent frame."""
        factor = getattr(self.pipe, "vae_scale_factor", None)
        factor = factor or getattr(getattr(self.pipe.vae, "config", {}), "downsampling_ratio", None)
        return int(factor or 1)

    def mel_spec(self) -> MelSpec:
        """An analysis mel: hop = one latent frame."""
        sr = self.sample_rate
        return MelSpec(sample_rate=sr, n_fft=max(256, 2 * self.hop), hop_length=self.hop,
                       n_mels=min(ANALYSIS_N_MELS, max(8, sr // 100)), fmin=0.0, fmax=sr / 2, mel_scale="slaney")

    def planned_lattice(self, name: str, duration: float) -> tuple[int, int]:
        return (max(1, math.ceil(duration * self.sample_rate / self.hop)), 1)

    def generate(self, request: GenerationRequest, observer: RunObserver | None = None,
                 cancel: CancelToken | None = None, run_id: int = 0) -> RunResult:
        """Generate with kernel-level capture (:class:`KernelCapture`); frames and steps reach the
        observer as each step ends; ``cancel`` is checked at every step."""
        import time

        from engine.backends.recipe import library_versions, scheduler_info, scheduler_sigmas
        from engine.probe.budget import plan_capture
        from engine.probe.cfg_layout import CfgLayout
        from engine.probe.recorder import FrameRecorder
        from engine.probe.run_context import RunContext
        from engine.types import NullObserver, StepInfo

        request.validate()
        if request.interventions or request.head_mask or request.lsac is not None:
            raise EngineError(f"{self.family} runs on the generic capture path, which has no interventions, "
                              "head masks or LSAC: run it without them")
        observer = observer or NullObserver()
        cancel = cancel or CancelToken()
        cancel.raise_if_cancelled()
        plan = plan_capture(self, request)
        guided = float(request.guidance) > 1.0 and not self.separate_cfg_calls
        run = RunContext(CfgLayout(self.cfg_order, guided))
        recorder = FrameRecorder(run_id, plan, observer, run, stream_dir=request.stream_dir,
                                 nan_policy=request.nan_policy)
        scheduler = self.pipe.scheduler

        def on_step(module: Any, args: Any, kwargs: Any) -> None:
            cancel.raise_if_cancelled()
            recorder.flush()
            if run.clock.step >= 0:
                observer.on_step(StepInfo(run_id, run.clock.step, request.steps, float("nan"), float("nan")))
            run.clock.tick()
            if run.timesteps is None:
                run.timesteps = scheduler.timesteps.detach().cpu().double().numpy()
                run.sigmas = scheduler_sigmas(scheduler, run.timesteps)

        params = inspect.signature(self.pipe.__call__).parameters
        kwargs: dict[str, Any] = {"num_inference_steps": int(request.steps), "guidance_scale": float(request.guidance),
                                  "generator": torch.Generator(device="cpu").manual_seed(int(request.seed))}
        length = next((k for k in DURATION_KEYWORDS if k in params), None)
        if length is not None:
            kwargs[length] = float(request.duration)
        if "negative_prompt" in params and request.negative_prompt:
            kwargs["negative_prompt"] = request.negative_prompt
        if "output_type" in params:
            kwargs["output_type"] = "np"
        start = time.perf_counter()
        try:
            with torch.no_grad(), self.kernel_capture(plan.sites, recorder, run, on_step):
                out = self.pipe(request.prompt, **kwargs)
            warnings = recorder.finish()
        except BaseException:
            if recorder.writer is not None:
                recorder.writer.close()
            raise
        if run.clock.step >= 0:
            observer.on_step(StepInfo(run_id, run.clock.step, request.steps, float("nan"), float("nan")))
        audio = np.asarray(out.audios[0], dtype=np.float32)
        while audio.ndim > 1:
            audio = audio.mean(axis=0)
        self._lattices.update(recorder.lattices)
        n = run.clock.step + 1
        ts = run.timesteps if run.timesteps is not None else np.zeros(0)
        sig = run.sigmas if run.sigmas is not None else np.zeros(0)
        recipe = {
            "model_id": self.model_id, "revision": self.revision, "family": self.family,
            "scheduler": scheduler_info(scheduler), "steps": request.steps, "guidance": request.guidance,
            "seed": request.seed, "prompt": request.prompt, "negative_prompt": request.negative_prompt,
            "duration": request.duration, "device": self.device, "dtype": self.dtype, "versions": library_versions(),
            "capture": {"enabled": request.capture, "per_head": plan.per_head, "sites": [s.name for s in plan.sites],
                        "steps": list(plan.steps), "streamed": plan.stream, "estimate_bytes": plan.estimate_bytes,
                        "maps_bytes": plan.maps_bytes,
                        "cfg_order": "separate calls, cond first" if self.separate_cfg_calls else self.cfg_order},
            "notes": ["generic path: probabilities recorded at the SDPA kernel, first denoiser call of each step"],
            "interventions": [],
        }
        return RunResult(
            run_id=run_id, audio=np.ascontiguousarray(audio), sample_rate=self.sample_rate, mel=None,
            mel_spec=self.mel_spec(), tokens=self.tokens(request.prompt), sites=self.sites(),
            lattices=dict(recorder.lattices), frames=recorder.frames, sigmas=np.asarray(sig[:n], dtype=np.float64),
            timesteps=np.asarray(ts[:n], dtype=np.float64), recipe=recipe,
            frames_dir=str(recorder.writer.folder) if recorder.writer is not None else None,
            warnings=[*self.warnings, *plan.warnings, *warnings], elapsed_s=time.perf_counter() - start)

    def frame_shapes(self, request: GenerationRequest) -> dict[str, tuple[int, int, int]]:
        """Per-head ``(heads, Q, K)`` per site, from the duration and the prompt's tokens."""
        q = self.planned_lattice("", request.duration)[0]
        keys = len(self.tokens(request.prompt)["text"])
        return {s.name: (s.heads, q, keys if s.kind == "cross" else q) for s in self.sites()}
