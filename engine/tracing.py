"""``engine.trace`` (defined here, in ``engine.tracing``, so that the name is not shadowed by a
submodule): attention capture on a pipeline the user built, as a context manager.

Follows DAAM's ``with trace(pipe) as tc`` convention::

    with engine.trace(pipe) as tr:
        audio = pipe("bass and drums", num_inference_steps=25).audios[0]
    heat = tr.word_map("bass")          # (T, F), low frequency first; (T, 1) for time-only models
    tr.save("out/run")                  # audio.wav, run.json, attention.npz: what `analyze` writes

The probes are the engine's own (the backend of the pipeline's family supplies sites, lattices,
tokens and the CFG order; :mod:`engine.probe.capture` records; pipelines no family backend knows go
through :mod:`engine.backends.generic`, which records at the attention kernel). The user calls the pipeline, so
what the engine's backends know from a request is read from the call instead:

* guidance: the ``do_classifier_free_guidance`` argument of ``pipe.encode_prompt`` (AudioLDM2,
  Stable Audio), else the pipeline's ``do_classifier_free_guidance`` property (ACE-Step, Stable
  Audio 3), else ``_guidance_scale`` (generic path), read at the first denoiser call; pipelines
  that guide with separate calls (LongCat) record their first, conditional call;
* the prompt (token strings): the ``prompt`` argument of the first ``encode_prompt`` call (the
  first prompt of a list: capture records the first conditional item);
* the duration (query crop): ``encode_duration``'s arguments (Stable Audio Open's start/end,
  Stable Audio 3's ``duration``);
* the audio for :meth:`Trace.save`: the waveform the decoder produced (the vocoder output for
  AudioLDM2, ``vae.decode`` otherwise; not cropped to the requested length), unless passed.

Those methods are shadowed on the instance for the block and removed on exit; processors and
hooks are restored also when the pipeline raises. The pipeline's output is bit-identical to a
run without trace (capture recomputes probabilities beside the stock processor).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.probe.cfg_layout import CfgLayout
from engine.types import EngineError, GenerationRequest, NullObserver

DEFAULT_GRID = (128, 64)
# pipeline class -> (engine.backends module, backend class)
BACKENDS: dict[str, tuple[str, str]] = {
    "AudioLDM2Pipeline": ("engine.backends.audioldm2", "AudioLDM2Backend"),
    "StableAudioPipeline": ("engine.backends.stable_audio", "StableAudioBackend"),
    "AceStepPipeline": ("engine.backends.ace_step", "AceStepBackend"),
    "StableAudio3Pipeline": ("engine.backends.stable_audio_3", "StableAudio3Backend"),
}
GENERIC = ("engine.backends.generic", "GenericBackend")  # any other pipeline (LongCat-Audio-DiT, ...)


def backend_for(pipe: Any) -> Any:
    """The engine backend of ``pipe``'s family, wrapping the user's pipeline object (no copy).

    The backend's constructor turns off progress bars and calls ``eval()``; both are undone here so
    the user's pipeline is left as it was.
    """
    import importlib

    name = type(pipe).__name__
    module, cls = BACKENDS.get(name, GENERIC)
    if name not in BACKENDS and not any(isinstance(getattr(pipe, n, None), torch.nn.Module)
                                        for n in ("transformer", "unet")):
        raise EngineError(f"engine.trace does not know {name}: it has no transformer or unet; "
                          f"family backends: {', '.join(BACKENDS)}")
    backend_cls = getattr(importlib.import_module(module), cls)
    modules = [c for c in getattr(pipe, "components", {}).values() if isinstance(c, torch.nn.Module)]
    training = [(m, m.training) for c in modules for m in c.modules()]
    had_bar = "_progress_bar_config" in vars(pipe)
    bar = dict(vars(pipe).get("_progress_bar_config", {}))
    model_id = str(getattr(getattr(pipe, "config", None), "_name_or_path", "") or name)
    backend = backend_cls(pipe, model_id, str(getattr(pipe, "device", "cpu")), str(getattr(pipe, "dtype", "")))
    for m, flag in training:
        m.training = flag
    if had_bar:
        pipe._progress_bar_config = bar
    else:
        vars(pipe).pop("_progress_bar_config", None)
    return backend


class _Spy:
    """Shadows ``obj.name`` for the block: records the first call's bound arguments (and hands every
    result to ``on_result``)."""

    def __init__(self, obj: Any, name: str, on_result: Callable[[Any], None] | None = None) -> None:
        self.obj, self.name, self.args = obj, name, {}
        self.calls = 0
        original = getattr(obj, name)
        signature = inspect.signature(original)

        def spy(*args: Any, **kwargs: Any) -> Any:
            if not self.calls:  # the first call: Stable Audio 3 encodes the negative prompt second
                bound = signature.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                self.args = dict(bound.arguments)
            self.calls += 1
            result = original(*args, **kwargs)
            if on_result is not None:
                on_result(result)
            return result

        object.__setattr__(obj, name, spy)

    def remove(self) -> None:
        vars(self.obj).pop(self.name, None)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list | tuple) and value else value


def _mono(audio: Any) -> np.ndarray:
    """The first waveform as mono float32 (channels averaged)."""
    array = audio.detach().float().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    array = np.asarray(array, dtype=np.float32)
    while array.ndim > 2:
        array = array[0]
    if array.ndim == 2:
        array = array.mean(axis=0) if array.shape[0] <= 8 else array.mean(axis=1)
    return np.ascontiguousarray(array)


class Trace:
    """The probes of one ``with engine.trace(pipe)`` block and, after it, what they recorded."""

    def __init__(self, pipe: Any, *, sites: Iterable[str] | None = None, steps: Iterable[int] | None = None,
                 per_head: bool = False, grid: tuple[int, int] | None = None,
                 memory_budget_mb: float = 2048.0, backend: Any = None) -> None:
        from engine.recipe import LIMITS

        self.pipe = pipe
        self.backend = backend if backend is not None else backend_for(pipe)
        self.per_head = bool(per_head)
        self.grid = tuple(grid) if grid is not None else None
        if self.grid is not None and (len(self.grid) != 2 or min(self.grid) < 1 or max(self.grid) > LIMITS.grid_max):
            raise EngineError(f"grid must be two sizes in 1..{LIMITS.grid_max}, got {grid}")
        if not 0 < float(memory_budget_mb) <= LIMITS.memory_budget_max_mb:
            raise EngineError(f"memory_budget_mb must be in (0, {LIMITS.memory_budget_max_mb:g}]")
        self.memory_budget_mb = float(memory_budget_mb)
        known = {s.name: s for s in self.backend.sites()}
        if sites is None:
            self._sites = [s for s in known.values() if s.kind == "cross"]
        else:
            wanted = list(sites)
            unknown = [n for n in wanted if n not in known]
            if unknown:
                raise EngineError(f"unknown site {unknown[0]!r}; pick names from engine.trace(pipe).backend.sites()")
            self._sites = [s for s in known.values() if s.name in set(wanted)]
        self._steps = list(range(LIMITS.steps_max)) if steps is None else sorted({int(s) for s in steps})
        self._stack: ExitStack | None = None
        self._spies: dict[str, _Spy] = {}
        self._audio: np.ndarray | None = None
        self._notes: list[str] = []  # warnings found while tracing
        self.result: Any = None

    # -- the block ------------------------------------------------------------------------------
    def __enter__(self) -> Trace:
        from engine.probe.attach import PROCESSOR_SUFFIX, attached
        from engine.probe.capture import capture_processor_for
        from engine.probe.recorder import CapturePlan, FrameRecorder
        from engine.probe.run_context import RunContext

        if self._stack is not None:
            raise EngineError("this trace is already active; make a new engine.trace(pipe) per block")
        backend, pipe = self.backend, self.pipe
        self.result, self._notes, self._audio = None, [], None
        self._request = GenerationRequest(prompt="", guidance=0.0, duration=self._max_duration())
        plan = CapturePlan(sites=list(self._sites), steps=self._steps, per_head=self.per_head,
                           budget_bytes=int(self.memory_budget_mb * 2**20))
        self.run = RunContext(CfgLayout(backend.cfg_order, True))
        self.recorder = FrameRecorder(0, plan, NullObserver(), self.run)
        self.recorder.drop_pads = bool(getattr(backend, "drop_pad_keys", False))  # as backend.generate does
        denoiser = backend.denoiser
        stack = ExitStack()
        try:
            for name in ("encode_prompt", "encode_duration"):
                if callable(getattr(pipe, name, None)):
                    self._spies[name] = spy = _Spy(pipe, name)
                    stack.callback(spy.remove)
            self._hook_audio(stack)
            if getattr(backend, "generic", False):  # engine.backends.generic: kernel-level capture
                stack.enter_context(backend.kernel_capture(plan.sites, self.recorder, self.run, self._step_hook))
                self._stack = stack
                return self
            hooks: list[tuple[torch.nn.Module, Callable]] = [(denoiser, self._step_hook)]
            parents: dict[str, list[str]] = {}
            for site in plan.sites:
                parents.setdefault(backend._lattice_parent(site.name), []).append(site.name)
            for parent, names in parents.items():
                hooks.append((denoiser.get_submodule(parent), self._lattice_hook(names)))
            hooks += backend._extra_hooks(self.run)
            originals = {k[: -len(PROCESSOR_SUFFIX)]: v for k, v in denoiser.attn_processors.items()}
            processors = {s.name: capture_processor_for(s.name, originals[s.name], self.recorder)
                          for s in plan.sites}
            stack.enter_context(attached(denoiser, processors, hooks))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                stack.close()
        finally:
            if exc_type is not None:
                if self.recorder.writer is not None:
                    self.recorder.writer.close()
            else:
                self.result = self._result(self.recorder.finish())
                finish = getattr(self.backend, "finish_trace", None)  # family post-processing (ACE-Step)
                if finish is not None and self.result.frames:
                    self.result = finish(self.result, self._spies["encode_prompt"].args)
        return False

    def _max_duration(self) -> float:
        return float(getattr(self.backend, "max_duration", 4.0))

    def _step_hook(self, module: Any, args: Any, kwargs: Any) -> None:
        from engine.backends.recipe import scheduler_sigmas

        run = self.run
        self.recorder.flush()
        if run.clock.step < 0:
            self._begin()
        run.clock.tick()
        if run.timesteps is None:
            scheduler = self.pipe.scheduler
            run.timesteps = scheduler.timesteps.detach().cpu().double().numpy()
            run.sigmas = scheduler_sigmas(scheduler, run.timesteps)

    def _begin(self) -> None:
        """At the first denoiser call: the call's guidance, prompt and duration."""
        prompt_args = self._spies.get("encode_prompt")
        args = prompt_args.args if prompt_args is not None else {}
        if getattr(self.backend, "separate_cfg_calls", False):
            guided = False  # CFG as separate calls: the recorded (first) call holds the cond items only
        elif "do_classifier_free_guidance" in args:
            guided = bool(args["do_classifier_free_guidance"])
        elif isinstance(getattr(type(self.pipe), "do_classifier_free_guidance", None), property):
            guided = bool(self.pipe.do_classifier_free_guidance)
        elif getattr(self.backend, "generic", False):
            guided = float(getattr(self.pipe, "_guidance_scale", 1.0) or 1.0) > 1.0
            if not hasattr(self.pipe, "_guidance_scale"):
                self._notes.append(f"{type(self.pipe).__name__} does not say whether it guides: item 0 of each "
                                   "first denoiser call was recorded (the unconditional half if it batches CFG)")
        else:
            raise EngineError(f"cannot tell whether {type(self.pipe).__name__} runs with guidance")
        self.run.cfg = CfgLayout(self.backend.cfg_order, guided)
        prompt = _first(args.get("prompt"))
        duration = self._max_duration()
        timing = self._spies.get("encode_duration")
        if timing is not None and timing.calls:
            start = float(_first(timing.args.get("audio_start_in_s")) or 0.0)
            end = _first(timing.args.get("audio_end_in_s", timing.args.get("duration")))
            if end is not None:
                duration = max(1e-3, float(end) - start)
        self._request = GenerationRequest(prompt=prompt if isinstance(prompt, str) else "",
                                          guidance=2.0 if guided else 1.0, duration=duration)
        if self._request.prompt:
            self.recorder.pad_keys = self.backend.pad_keys(self._request)

    def _lattice_hook(self, names: list[str]) -> Callable:
        def hook(module: Any, args: Any, kwargs: Any) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            for name in names:
                lattice, qslice = self.backend._lattice_from_input(name, hidden, self._request)
                self.recorder.set_lattice(name, lattice, qslice)
        return hook

    def _hook_audio(self, stack: ExitStack) -> None:
        """Keep the decoded waveform of the call (for :meth:`save`)."""
        def keep(output: Any) -> None:
            sample = getattr(output, "sample", output)
            sample = sample[0] if isinstance(sample, tuple) else sample
            if isinstance(sample, torch.Tensor):
                self._audio = _mono(sample[:1])

        vocoder = getattr(self.pipe, "vocoder", None)
        if isinstance(vocoder, torch.nn.Module):
            handle = vocoder.register_forward_hook(lambda m, a, out: keep(out))
            stack.callback(handle.remove)
            return
        vae = getattr(self.pipe, "vae", None)
        if vae is not None and callable(getattr(vae, "decode", None)):
            spy = _Spy(vae, "decode", keep)
            stack.callback(spy.remove)

    def _result(self, warnings: list[str]) -> Any:
        from engine.backends.base import RunResult
        from engine.backends.recipe import library_versions, scheduler_info

        run, backend = self.run, self.backend
        n = run.clock.step + 1
        if n == 0:
            warnings.append("the pipeline was not called inside the trace block: nothing was recorded")
        ts = run.timesteps if run.timesteps is not None else np.zeros(0)
        sig = run.sigmas if run.sigmas is not None else np.zeros(0)
        req = self._request
        audio = self._audio if self._audio is not None else np.zeros(0, dtype=np.float32)
        aux: dict[str, Any] = {}
        tokens = backend.tokens(req.prompt) if req.prompt else {}
        if self.recorder.sink_mass:
            aux["sink_mass"] = self.recorder.sink_mass
            pads = {c: m.cpu().numpy() for c, m in self.recorder.pad_keys.items()}
            aux["pad_keys"] = {c: m[~m] for c, m in pads.items()} if self.recorder.drop_pads else pads
            if self.recorder.drop_pads:
                aux["dropped_keys"] = pads
        if hasattr(self.recorder, "stored_tokens"):
            tokens = self.recorder.stored_tokens(tokens)
        recipe = {
            "model_id": backend.model_id, "family": backend.family, "traced": True,
            "scheduler": scheduler_info(self.pipe.scheduler), "steps": n,
            "guided": run.cfg.guided, "prompt": req.prompt, "duration": req.duration,
            "device": str(getattr(self.pipe, "device", "cpu")), "dtype": str(getattr(self.pipe, "dtype", "")),
            "versions": library_versions(),
            "capture": {"enabled": True, "per_head": self.per_head, "sites": [s.name for s in self._sites],
                        "steps": sorted({t for t, _ in self.recorder.frames}), "cfg_order": backend.cfg_order},
            "notes": ["engine.trace on a user-built pipeline; the call's arguments are not all known"],
            "interventions": [],
        }
        return RunResult(
            run_id=0, audio=audio, sample_rate=backend.sample_rate, mel=run.mel,
            mel_spec=backend.mel_spec(), tokens=tokens,
            sites=backend.sites(), lattices=dict(self.recorder.lattices), frames=self.recorder.frames,
            sigmas=np.asarray(sig[:n], dtype=np.float64), timesteps=np.asarray(ts[:n], dtype=np.float64),
            recipe=recipe, warnings=[*backend.warnings, *self._notes, *warnings], aux=aux,
        )

    # -- after the block ------------------------------------------------------------------------
    def _done(self) -> Any:
        if self.result is None:
            raise EngineError("nothing traced yet: read the maps after the `with engine.trace(pipe)` block")
        if not self.result.frames:
            raise EngineError("the trace recorded no attention: call the pipeline inside the with block")
        return self.result

    @property
    def contexts(self) -> list[str]:
        """The contexts the captured sites attend to, main context first (as in ``analyze``)."""
        from engine.analyze import contexts_of

        return contexts_of(self._done())

    def _context(self, context: str | None) -> str:
        contexts = self.contexts
        if context is None:
            return contexts[0]
        if context not in contexts:
            raise EngineError(f"no captured site attends to context {context!r}; use one of {contexts}")
        return context

    @property
    def time_only(self) -> bool:
        """Whether every captured lattice has one frequency row (Stable Audio, ACE-Step)."""
        return all(f == 1 for _, f in self._done().lattices.values())

    @property
    def map_grid(self) -> tuple[int, int]:
        """``(T, F)`` of the in-memory maps: ``grid`` if given, else 128 × 64, or 128 × 1 for time-only models."""
        if self.grid is not None:
            return self.grid  # type: ignore[return-value]
        return (DEFAULT_GRID[0], 1) if self.time_only else DEFAULT_GRID

    def _aggregate(self, context: str | None, **kw: Any) -> Any:
        from engine.analysis.aggregate import aggregate_run

        return aggregate_run(self._done(), self._context(context), target=self.map_grid, **kw)

    def tokens_of(self, context: str | None = None) -> list[str]:
        """Token strings of ``context`` in key order."""
        return list(self._done().tokens.get(self._context(context), []))

    @property
    def tokens(self) -> list[str]:
        """The main context's token strings, in key order (one per key of ``aggregate``)."""
        return self._aggregate(None).tokens

    @property
    def aggregate(self) -> np.ndarray:
        """``(tokens, T, F)``: every captured site and step of the main context, mean-aggregated."""
        return self._aggregate(None).maps

    @property
    def site_maps(self) -> dict[str, np.ndarray]:
        """Site -> ``(tokens, T, F)`` over the captured steps (main context)."""
        sites = self._aggregate(None).sites
        return {s: self._aggregate(None, sites=[s]).maps for s in sites}

    def word_map(self, word: str, context: str | None = None) -> np.ndarray:
        """``(T, F)`` map of ``word`` (mean over the tokens that spell it), low frequency first;
        ``(T, 1)`` for time-only models. An :class:`EngineError` when the prompt lacks the word."""
        from engine.analysis.pooling import keyword_indices

        agg = self._aggregate(context)
        found = keyword_indices(agg.tokens, [word])
        if not found:
            raise EngineError(f"{word!r} is not a token of the prompt (tokens: {agg.tokens[:20]})")
        return agg.maps[found].mean(axis=0)

    def save(self, folder: str | Path, audio: Any = None, *, grid: tuple[int, int] | None = None,
             figures: bool = True) -> Path:
        """Write what ``analyze`` writes (``audio.wav``, ``run.json``, ``attention.npz``, figures)
        into the new folder ``folder``; ``audio``: the pipeline's output waveform (default: the
        decoder's output, uncropped). Returns the folder."""
        from dataclasses import replace

        from engine.analyze import AnalyzeOptions, write_outputs
        from engine.output_dir import Output

        result = self._done()
        if audio is not None:
            result = replace(result, audio=_mono(audio))
        if result.audio.size == 0:
            raise EngineError("no waveform was decoded in the block: pass the pipeline's audio to save()")
        options = AnalyzeOptions(out=str(folder), prompt=result.recipe["prompt"] or "traced",
                                 grid=tuple(grid or self.grid or DEFAULT_GRID), figures=figures)
        with Output(folder) as claim:
            write_outputs(claim.work, result, self.backend.mel_spec(), options)
        return claim.final


def trace(pipe: Any, **options: Any) -> Trace:
    """``with engine.trace(pipe) as tr:`` — capture ``pipe``'s cross-attention while it generates.

    ``options``: ``sites`` (names; default every cross-attention site), ``steps`` (denoising step
    indices; default all), ``per_head``, ``grid`` ``(T, F)``, ``memory_budget_mb``. See
    :class:`Trace` for what is readable after the block.
    """
    return Trace(pipe, **options)
