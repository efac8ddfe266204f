"""Shared machinery of the diffusers-pipeline backends: site discovery, one observed run.

A family subclass supplies the denoiser, how each site is classified (kind, context), how a
site's lattice is read from its parent module's input, the key layout of the prompt, and the
pipeline call. :meth:`DiffusersBackend.generate` then

1. plans the capture against the memory budget (:mod:`engine.probe.budget`);
2. attaches capture processors on the chosen sites, a step pre-hook on the denoiser (it ticks
   the run's step clock, :class:`~engine.probe.run_context.RunContext`, checks cancel, reads σ)
   and lattice pre-hooks on the sites' parent modules;
3. runs the pipeline with a seeded ``torch.Generator`` and the legacy step ``callback``
   (frames are flushed to the observer and a :class:`StepInfo` is sent after every step);
4. takes everything off again (also on error or cancel) and assembles the :class:`RunResult`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from engine.backends.base import PipelineHolder, RunResult
from engine.backends.recipe import library_versions, scheduler_info, scheduler_sigmas
from engine.probe.attach import PROCESSOR_SUFFIX, attached, attention_modules
from engine.probe.attention_core import kv_heads_of
from engine.probe.budget import plan_capture
from engine.probe.capture import capture_processor_for
from engine.probe.cfg_layout import CfgLayout
from engine.probe.intervention import intervention_hooks, interventions_of, wrap_sites
from engine.probe.recorder import FrameRecorder, without_padded_keys
from engine.probe.run_context import RunContext
from engine.types import (
    CancelToken,
    GenerationRequest,
    MelSpec,
    NullObserver,
    RunObserver,
    Site,
    StepInfo,
)

_SECTION_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def to_mono(audio: np.ndarray, notes: list[str]) -> np.ndarray:
    """``(channels, samples)`` output averaged to mono, said in ``notes``; mono audio as it is."""
    if audio.ndim == 2:
        notes.append(f"{audio.shape[0]}-channel output averaged to mono")
        return audio.mean(axis=0)
    return audio


def call_order_key(name: str) -> tuple:
    """Sort key that puts module paths in the order a UNet/DiT forward calls them
    (down blocks, mid block, up blocks; numeric indices compared as numbers; attn1 before attn2)."""
    parts = name.split(".")
    section = _SECTION_ORDER.get(parts[0], 3)
    return (section, *[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts])


class DiffusersBackend(PipelineHolder):
    """Base of the diffusers-pipeline families (see the module docstring)."""

    family = "diffusers"
    # CFG batch order of the pipeline (engine.probe.cfg_layout): [uncond, cond] in diffusers'
    # AudioLDM2 and Stable Audio pipelines and in the embedded model
    cfg_order = "uncond_cond"

    def __init__(self, pipe, model_id: str, device: str = "cpu", dtype: str = "float32",
                 revision: str | None = None, warnings: list[str] | None = None) -> None:
        super().__init__(pipe, model_id, device, dtype, revision, warnings)
        self._sites: list[Site] | None = None
        self._last_lattices: dict[str, tuple[int, int]] = {}
        for component in getattr(pipe, "components", {}).values():
            if isinstance(component, torch.nn.Module):
                component.eval()

    # -- family hooks -------------------------------------------------------------------------
    @property
    def denoiser(self) -> torch.nn.Module:
        raise NotImplementedError

    def _classify(self, name: str, module) -> tuple[str, str]:
        """``(kind, context)`` of the attention module ``name``."""
        raise NotImplementedError

    def _lattice_parent(self, name: str) -> str:
        """Module path whose forward input reveals the lattice of site ``name``."""
        raise NotImplementedError

    def _lattice_from_input(self, name: str, hidden: torch.Tensor,
                            request: GenerationRequest) -> tuple[tuple[int, int], slice | None]:
        """Lattice and query crop of site ``name`` from its parent's input ``hidden``."""
        raise NotImplementedError

    def frame_shapes(self, request: GenerationRequest) -> dict[str, tuple[int, int, int]]:
        """Per-head frame shape ``(heads, Q, K)`` of every site for ``request``, from the
        architecture (no model run)."""
        raise NotImplementedError

    def pad_keys(self, request: GenerationRequest) -> dict[str, torch.Tensor]:
        """Context -> bool ``(K,)`` marking padded keys of the cond item (for the sink mass)."""
        return {}

    def _run_pipeline(self, request: GenerationRequest, generator: torch.Generator,
                      callback: Callable) -> tuple[np.ndarray, list[str]]:
        """Run the pipeline; return mono float32 audio and notes for the recipe."""
        raise NotImplementedError

    def _call_pipeline(self, request: GenerationRequest, generator: torch.Generator,
                       callback: Callable, **length: float) -> np.ndarray:
        """Call a diffusers audio pipeline with the request (``length``: its duration keyword)
        and the legacy step callback; the first waveform as float32."""
        with torch.no_grad():
            out = self.pipe(
                request.prompt,
                negative_prompt=request.negative_prompt or None,
                num_inference_steps=int(request.steps),
                guidance_scale=float(request.guidance),
                generator=generator,
                callback=callback,
                callback_steps=1,
                output_type="np",
                **length,
            )
        return np.asarray(out.audios[0], dtype=np.float32)

    def _extra_hooks(self, run: RunContext) -> list[tuple[torch.nn.Module, Callable]]:
        """Family pre-hooks; ``run`` is the run's shared state (a family may set ``run.mel``)."""
        return []

    def mel_spec(self) -> MelSpec:
        raise NotImplementedError

    def stored_tokens(self, prompt: str) -> dict[str, list[str]]:
        """The prompt's tokens in the key order of recorded frames: :meth:`tokens`, less the padded
        keys of families that drop them before storage (Stable Audio)."""
        tokens = self.tokens(prompt)
        if not getattr(self, "drop_pad_keys", False):
            return tokens
        return without_padded_keys(tokens, self.pad_keys(GenerationRequest(prompt=prompt)))

    def tokens(self, prompt: str) -> dict[str, list[str]]:
        raise NotImplementedError

    @property
    def sample_rate(self) -> int:
        raise NotImplementedError

    # -- sites ---------------------------------------------------------------------------------
    def sites(self) -> list[Site]:
        """Every attention module of the denoiser (cross and self), in call order."""
        if self._sites is None:
            modules = attention_modules(self.denoiser)
            names = sorted(modules, key=call_order_key)
            found = []
            for index, name in enumerate(names):
                module = modules[name]
                kind, context = self._classify(name, module)
                found.append(Site(name=name, kind=kind, context=context, heads=module.heads,
                                  kv_heads=kv_heads_of(module), index=index))
            self._sites = found
        return [
            Site(s.name, s.kind, s.context, s.heads, s.kv_heads, s.index,
                 self._last_lattices.get(s.name))
            for s in self._sites
        ]

    # -- one run -------------------------------------------------------------------------------
    def _validate(self, request: GenerationRequest) -> None:
        """The engine's limits (:meth:`GenerationRequest.validate`); families add their own."""
        request.validate()

    def generate(
        self,
        request: GenerationRequest,
        observer: RunObserver | None = None,
        cancel: CancelToken | None = None,
        run_id: int = 0,
    ) -> RunResult:
        """Generate audio, recording attention as the request asks; removes all probes after."""
        self._validate(request)
        observer = observer or NullObserver()
        cancel = cancel or CancelToken()
        cancel.raise_if_cancelled()
        plan = plan_capture(self, request)
        run = RunContext(CfgLayout.of(self, request))
        recorder = FrameRecorder(run_id, plan, observer, run, stream_dir=request.stream_dir,
                                 nan_policy=request.nan_policy)
        recorder.pad_keys = self.pad_keys(request)
        recorder.drop_pads = bool(getattr(self, "drop_pad_keys", False))
        denoiser = self.denoiser
        interventions = interventions_of(request)
        scheduler = self.pipe.scheduler

        def step_hook(module, args, kwargs):
            cancel.raise_if_cancelled()
            recorder.flush()
            run.clock.tick()
            if run.timesteps is None:
                run.timesteps = scheduler.timesteps.detach().cpu().double().numpy()
                run.sigmas = scheduler_sigmas(scheduler, run.timesteps)

        def callback(step_idx, t, latents):
            recorder.flush()
            step, ts, sig = run.clock.step, run.timesteps, run.sigmas
            observer.on_step(StepInfo(
                run_id=run_id, step=step, total=request.steps,
                timestep=float(ts[step]) if step < len(ts) else float(t),
                sigma=float(sig[step]) if step < len(sig) else float("nan"),
            ))
            cancel.raise_if_cancelled()

        hooks: list[tuple[torch.nn.Module, Callable]] = [(denoiser, step_hook)]
        for parent_name, site_names in self._lattice_parents(plan.sites).items():
            hooks.append((denoiser.get_submodule(parent_name),
                          self._make_lattice_hook(site_names, recorder, request)))
        hooks += self._extra_hooks(run)
        hooks += intervention_hooks(interventions, self, run)

        generator = torch.Generator(device="cpu").manual_seed(int(request.seed))
        start = time.perf_counter()
        try:
            for iv in interventions:
                if hasattr(iv, "begin"):
                    iv.begin(self, request)
            originals = {k[: -len(PROCESSOR_SUFFIX)]: v for k, v in denoiser.attn_processors.items()}
            processors = wrap_sites(interventions, attention_modules(denoiser), originals)
            for s in plan.sites:
                processors[s.name] = capture_processor_for(
                    s.name, processors.get(s.name, originals[s.name]), recorder)
            with attached(denoiser, processors, hooks):
                audio, notes = self._run_pipeline(request, generator, callback)
            rec_warnings = recorder.finish()
        except BaseException:
            if recorder.writer is not None:
                recorder.writer.close()
            raise
        finally:
            for iv in interventions:
                if hasattr(iv, "end"):
                    iv.end()
        elapsed = time.perf_counter() - start
        self._last_lattices.update(recorder.lattices)
        n = run.clock.step + 1
        ts = run.timesteps if run.timesteps is not None else np.zeros(0)
        sig = run.sigmas if run.sigmas is not None else np.zeros(0)
        aux: dict[str, Any] = {}
        if recorder.sink_mass:
            aux["sink_mass"] = recorder.sink_mass
            pads = {c: m.cpu().numpy() for c, m in recorder.pad_keys.items()}
            # pad_keys marks padded keys of the stored frames (none left when they were dropped)
            aux["pad_keys"] = {c: m[~m] for c, m in pads.items()} if recorder.drop_pads else pads
            if recorder.drop_pads:
                aux["dropped_keys"] = pads  # the model's key layout, True at the keys left out
        return RunResult(
            run_id=run_id,
            audio=np.ascontiguousarray(audio, dtype=np.float32),
            sample_rate=self.sample_rate,
            mel=run.mel,
            mel_spec=self.mel_spec(),
            tokens=recorder.stored_tokens(self.tokens(request.prompt)),
            sites=self.sites(),
            lattices=dict(recorder.lattices),
            frames=recorder.frames,
            sigmas=np.asarray(sig[:n], dtype=np.float64),
            timesteps=np.asarray(ts[:n], dtype=np.float64),
            recipe=self._recipe(request, plan, notes, interventions),
            frames_dir=str(recorder.writer.folder) if recorder.writer is not None else None,
            warnings=[*self.warnings, *plan.warnings, *rec_warnings],
            elapsed_s=elapsed,
            aux=aux,
        )

    def _lattice_parents(self, sites: list[Site]) -> dict[str, list[str]]:
        """Parent module -> captured sites whose lattice its input reveals."""
        parents: dict[str, list[str]] = {}
        for site in sites:
            parents.setdefault(self._lattice_parent(site.name), []).append(site.name)
        return parents

    def _make_lattice_hook(self, site_names: list[str], recorder: FrameRecorder,
                           request: GenerationRequest) -> Callable:
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            for name in site_names:
                lattice, qslice = self._lattice_from_input(name, hidden, request)
                recorder.set_lattice(name, lattice, qslice)
        return hook

    def _recipe(self, request: GenerationRequest, plan, notes: list[str],
                interventions: list[Any]) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "family": self.family,
            "scheduler": scheduler_info(self.pipe.scheduler),
            "steps": request.steps,
            "guidance": request.guidance,
            "seed": request.seed,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "duration": request.duration,
            "preview": request.preview,
            "device": self.device,
            "dtype": self.dtype,
            "versions": library_versions(),
            "capture": {
                "enabled": request.capture,
                "per_head": plan.per_head,
                "sites": [s.name for s in plan.sites],
                "steps": list(plan.steps),
                "streamed": plan.stream,
                "estimate_bytes": plan.estimate_bytes,
                "maps_bytes": plan.maps_bytes,
                "cfg_order": self.cfg_order,
            },
            "notes": notes,
            "interventions": [
                iv.describe() if hasattr(iv, "describe") else type(iv).__name__
                for iv in interventions
            ],
        }


def parse_site(name: str) -> re.Match | None:
    """Split a UNet site path into block, attention index and the rest."""
    return re.match(r"^(?P<block>(?:down_blocks|up_blocks)\.\d+|mid_block)\.attentions\."
                    r"(?P<att>\d+)\.transformer_blocks\.(?P<tb>\d+)\.(?P<attn>attn\d)$", name)
