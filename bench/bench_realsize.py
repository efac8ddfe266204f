"""Benchmark at the published size (random weights): capture cost, memory, npz size, budget, LSAC.

``OMP_NUM_THREADS=1 python bench/bench_realsize.py --model random:audioldm2 --steps 2
--duration 5 [--device cpu|cuda] [--dtype float32|float16] [--guidance 3.5] [--lsac balanced]
[--out FILE]``

``--model`` is anything ``load_backend`` takes, or ``published-denoiser:ace_step`` /
``published-denoiser:stable_audio_3``: the published DiT inside the tiny pipeline of its family
(``bench/denoiser_shells.py``: per-step denoiser cost real, text encoder and autoencoder tiny).

One process builds the model once, then runs the same request (same seed) side by side: capture
off, head-mean capture, per-head capture, and capture off with an attention timer (the share of
denoising time spent inside attention). Per-step time is the time from the denoiser's call to the
end of the step (a forward pre-hook and the engine's step callback). It also reports peak RSS (and
peak CUDA memory), the size of ``attention.npz`` as ``analyze`` writes it (head-mean, per-head),
the budget's decisions for this request and for 10 s × 200 steps, and an extrapolation of the
stock run to 10 s × 200 steps. ``--lsac SPEC`` adds a full run and an LSAC run of ``--lsac-steps``
steps (SPEC: a preset, or ``self@F``: every self-attention site frozen from ``⌈F·T⌉``) with their
per-step CPU times, attention times, speed-ups and mel deviation; ``--part lsac`` runs only that.
``--part decode`` times the Stable Audio VAE decoding all 1024 latent frames against only the
frames a 10 s clip needs (run in fresh processes so that each peak RSS is its own). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.denoiser_shells import PREFIX, load_shell  # noqa: E402

MB = 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux: ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepClock:
    """Per-step seconds from the denoiser's call (a forward pre-hook) to the step's callback, as
    wall time and as this process's CPU time (``time.process_time``: on a shared machine the CPU
    time is what the other jobs do not change; on CUDA the wall time is the one to read)."""

    def __init__(self, backend, sync, timer=None) -> None:
        self.starts: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []
        self.attention: list[tuple[float, float]] = []  # the timer's wall and CPU totals at each step's end
        self.sync = sync
        self.timer = timer
        self._hook = backend.denoiser.register_forward_pre_hook(self._start)

    def _start(self, module, args) -> None:
        self.sync()
        self.starts.append((time.perf_counter(), time.process_time()))

    def on_frame(self, frame) -> None:
        return None

    def on_step(self, info) -> None:
        self.sync()
        self.ends.append((time.perf_counter(), time.process_time()))
        if self.timer is not None:
            self.attention.append((self.timer.total, self.timer.cpu_total))

    def per_step(self, cpu: bool = False) -> list[float]:
        i = 1 if cpu else 0
        return [e[i] - s[i] for s, e in zip(self.starts, self.ends, strict=False)]

    def attention_per_step(self, cpu: bool = False) -> list[float]:
        """Seconds inside attention in each step, wall or CPU (needs a :func:`cpu_attention_timer`)."""
        totals = [t[1 if cpu else 0] for t in self.attention]
        return [b - a for a, b in zip([0.0, *totals], totals, strict=False)]

    def close(self) -> None:
        self._hook.remove()


def cpu_attention_timer():
    """An :class:`~engine.convergence.timing.AttentionTimer` that also sums this process's CPU time
    inside attention (``cpu_total``): the figure to read on a shared CPU."""
    from engine.convergence.timing import AttentionTimer

    class CpuAttentionTimer(AttentionTimer):
        def begin(self, backend, request) -> None:
            super().begin(backend, request)
            self.cpu_total = 0.0

        def _handle(self, call):
            start = time.process_time()
            try:
                return super()._handle(call)
            finally:
                self.cpu_total += time.process_time() - start

    timer = CpuAttentionTimer()
    timer.cpu_total = 0.0
    return timer


class ModuleAttentionTimer:
    """Wall and CPU seconds inside every attention module's forward (forward hooks), with the
    ``total`` / ``cpu_total`` of :func:`cpu_attention_timer`: for processors the engine's
    ``AttentionTimer`` cannot wrap (Stable Audio 3's differential attention)."""

    def __init__(self, denoiser, sync) -> None:
        from engine.probe.attach import attention_modules

        self.total = self.cpu_total = 0.0
        self.sync = sync
        self._depth = 0
        self._start = (0.0, 0.0)
        self._hooks = []
        for module in attention_modules(denoiser).values():
            self._hooks.append(module.register_forward_pre_hook(self._enter))
            self._hooks.append(module.register_forward_hook(self._leave))

    def _enter(self, module, args) -> None:
        if self._depth == 0:
            self.sync()
            self._start = (time.perf_counter(), time.process_time())
        self._depth += 1

    def _leave(self, module, args, output) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.sync()
            self.total += time.perf_counter() - self._start[0]
            self.cpu_total += time.process_time() - self._start[1]

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


def timed_attention_run(backend, request, sync):
    """A capture-off run with the attention timer (the engine's, else :class:`ModuleAttentionTimer`)
    and a step clock; returns ``(timer, clock, how)``."""
    from engine.types import EngineError

    timer = cpu_attention_timer()
    clock = StepClock(backend, sync)
    try:
        backend.generate(dataclasses.replace(request, capture=False, interventions=(timer,)), observer=clock)
        return timer, clock, "AttentionTimer (site processors)"
    except EngineError:  # a processor the engine's timer cannot wrap: time the modules instead
        clock.close()
    timer = ModuleAttentionTimer(backend.denoiser, sync)
    clock = StepClock(backend, sync)
    try:
        backend.generate(dataclasses.replace(request, capture=False), observer=clock)
    finally:
        timer.close()
    return timer, clock, "forward hooks on the attention modules"


def budget_decisions(backend, request, budgets_mb: list[float]) -> list[dict]:
    """What :func:`plan_capture` decides for ``request`` at each budget (with a stream folder)."""
    from engine.probe.budget import plan_capture

    out = []
    for mb in budgets_mb:
        for stream in (None, "/tmp/stream"):
            req = dataclasses.replace(request, memory_budget_mb=mb, stream_dir=stream)
            try:
                plan = plan_capture(backend, req)
                out.append({"budget_mb": mb, "stream_dir": stream is not None, "stream": plan.stream,
                            "per_head": plan.per_head, "steps": len(plan.steps), "sites": len(plan.sites),
                            "estimate_mb": plan.estimate_bytes / MB, "warnings": plan.warnings})
            except Exception as exc:  # noqa: BLE001 - the refusal is the decision
                out.append({"budget_mb": mb, "stream_dir": stream is not None, "refused": str(exc)})
    return out


def npz_size(backend, result, workdir: Path, name: str) -> float:
    """MB of ``attention.npz`` as ``analyze`` writes it for ``result``."""
    import numpy as np

    from engine.analyze import AnalyzeOptions, build_maps

    opts = AnalyzeOptions(out=str(workdir / name), prompt=result.recipe["prompt"])
    arrays = build_maps(result, backend.mel_spec(), opts)
    path = workdir / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    return path.stat().st_size / MB


def decode_part(frames: int, dtype: str, device: str) -> dict:
    """Time and peak memory of the published Oobleck VAE decoding ``frames`` latent frames."""
    import torch
    from diffusers import AutoencoderOobleck

    torch.manual_seed(0)
    vae = AutoencoderOobleck().eval().to(device=device, dtype=getattr(torch, dtype))
    base = peak_rss_mb()
    z = torch.randn(1, 64, frames, device=device, dtype=getattr(torch, dtype))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.no_grad():
        audio = vae.decode(z).sample
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    out = {"frames": frames, "seconds": time.perf_counter() - start, "samples": int(audio.shape[-1]),
           "rss_before_mb": base, "peak_rss_mb": peak_rss_mb()}
    if device.startswith("cuda"):
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / MB
    return out


def decode_compare(duration: float, dtype: str, device: str) -> dict:
    """Full (1024 frames) and cropped (clip + margin) decoding, each in a fresh process."""
    import math

    from engine.backends.stable_audio import oobleck_margin

    keep = math.ceil(duration * 44100 / 2048) + oobleck_margin([2, 4, 4, 8, 8])
    runs = {}
    for label, frames in (("full", 1024), ("cropped", keep)):
        cmd = [sys.executable, __file__, "--part", "decode", "--frames", str(frames), "--dtype", dtype,
               "--device", device]
        runs[label] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    runs["time_ratio"] = runs["full"]["seconds"] / runs["cropped"]["seconds"]
    return runs


def lsac_plan(backend, request, spec: str, steps: int, cache_dtype: str | None):
    """An :class:`LSAC` for ``spec``: ``self@F`` freezes every self-attention site from
    ``⌈F·steps⌉`` (what every preset does to the sites it calls stable: the most a preset saves at
    that fraction; no diagnose run); else a preset planned from a diagnose run."""
    from engine.convergence.diagnostics import diagnose
    from engine.convergence.lsac import LSAC, freeze_step_at

    budget_mb = 1e6  # the whole cache: the speed-up is the question here, not the budget
    if spec.startswith("self@"):
        at = freeze_step_at(float(spec.removeprefix("self@")), steps)
        plan = {s.name: at for s in backend.sites() if s.kind == "self"}
        return LSAC(plan, budget_mb, name=spec, cache_dtype=cache_dtype)
    report, _ = diagnose(backend, dataclasses.replace(request, capture=False))
    return LSAC.from_preset(report, spec, steps, budget_mb, cache_dtype=cache_dtype)


def lsac_compare(backend, request, args, sync) -> dict:
    """A full run and an LSAC run of the same request (capture off), each timed per step (wall and
    process CPU) and as a whole, with the attention time of every site; the LSAC run's mel deviation
    from the full run (:func:`engine.convergence.quality.deviation`)."""
    from engine.convergence.quality import deviation

    steps = args.lsac_steps or args.steps
    req = dataclasses.replace(request, capture=False, steps=steps)
    lsac = lsac_plan(backend, req, args.lsac, steps, args.lsac_cache_dtype)
    runs: dict[str, dict] = {}
    results = {}
    for label in ("full", "lsac"):
        timer = cpu_attention_timer()  # after LSAC: it times what LSAC computes
        clock = StepClock(backend, sync, timer)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            ivs = (lsac, timer) if label == "lsac" else (timer,)
            results[label] = backend.generate(dataclasses.replace(req, interventions=ivs), observer=clock)
        finally:
            clock.close()
        runs[label] = {"run_cpu_s": time.process_time() - cpu0, "run_wall_s": time.perf_counter() - wall0,
                       "step_cpu_s": clock.per_step(cpu=True), "step_wall_s": clock.per_step(),
                       "attention_wall_s": timer.total, "attention_cpu_s": timer.cpu_total,
                       "step_attention_wall_s": clock.attention_per_step(),
                       "step_attention_cpu_s": clock.attention_per_step(cpu=True)}
        runs[label]["loop_cpu_s"] = sum(runs[label]["step_cpu_s"])
        runs[label]["loop_wall_s"] = sum(runs[label]["step_wall_s"])
    full, cached = runs["full"], runs["lsac"]
    freeze = min(lsac.active.values(), default=steps)
    reused = list(range(freeze + 1, steps))  # steps that skip QKᵀ + softmax at every planned site
    stock_step = statistics.median(full["step_cpu_s"][freeze + 1:] or full["step_cpu_s"])
    reused_step = statistics.median([cached["step_cpu_s"][i] for i in reused]) if reused else stock_step
    # attention LSAC removes: full minus LSAC attention CPU time over the reused steps, as a share
    # of the full run's CPU time in those steps
    att_full = sum(full["step_attention_cpu_s"][i] for i in reused)
    att_lsac = sum(cached["step_attention_cpu_s"][i] for i in reused)
    cpu_full = sum(full["step_cpu_s"][i] for i in reused)
    dev = deviation(results["lsac"], results["full"])
    return {
        "spec": args.lsac, "steps": steps, "cache_dtype": args.lsac_cache_dtype or "model",
        "plan_sites": len(lsac.plan), "freeze_step": freeze, "reused_steps": len(reused),
        "describe": lsac.describe(), "full": full, "lsac": cached,
        "attention_share_full_cpu": full["attention_cpu_s"] / full["loop_cpu_s"],
        "attention_share_full_wall": full["attention_wall_s"] / full["loop_wall_s"],
        "loop_cpu_speedup": full["loop_cpu_s"] / cached["loop_cpu_s"],
        "run_cpu_speedup": full["run_cpu_s"] / cached["run_cpu_s"],
        "run_wall_speedup": full["run_wall_s"] / cached["run_wall_s"],
        "step_saving_cpu": 1.0 - reused_step / stock_step,
        "attention_removed_share_cpu": (att_full - att_lsac) / cpu_full if cpu_full else None,
        "attention_share_reused_steps_cpu": att_full / cpu_full if cpu_full else None,
        "mel_deviation": dev["mel_distance"], "wave_deviation": dev["wave_distance"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:audioldm2")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=3.5)
    parser.add_argument("--lsac", default=None,
                        help="also LSAC's speed-up: a preset (safe, balanced, aggressive; planned from a "
                             "diagnose run) or self@F (every self-attention site frozen from step ⌈F·T⌉)")
    parser.add_argument("--lsac-steps", type=int, default=None, help="steps of the LSAC runs (default --steps)")
    parser.add_argument("--lsac-cache-dtype", default=None, help="model, float32 or bfloat16")
    parser.add_argument("--part", default="all", choices=["all", "lsac", "decode", "decode-compare"])
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.part == "decode":
        out = decode_part(args.frames, args.dtype, args.device)
        print(json.dumps(out))
        return out
    if args.part == "decode-compare":
        out = decode_compare(args.duration, args.dtype, args.device)
        print(json.dumps(out, indent=1))
        return out

    from engine.backends.published import parameter_count
    from engine.backends.registry import load_backend
    from engine.types import GenerationRequest

    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    start = time.perf_counter()
    if args.model.startswith(PREFIX):
        backend = load_shell(args.model, device=args.device, dtype=args.dtype)
    else:
        backend = load_backend(args.model, device=args.device, dtype=args.dtype)
    build_s = time.perf_counter() - start
    params = parameter_count(backend.pipe)
    rss_loaded = peak_rss_mb()
    request = GenerationRequest(prompt="a warm bass line with soft drums and piano", seed=0,
                                steps=args.steps, guidance=args.guidance, duration=args.duration,
                                memory_budget_mb=1_000_000.0)
    if args.part == "lsac":
        out = {"model": args.model, "device": args.device, "dtype": args.dtype, "threads": args.threads,
               "duration": args.duration, "guidance": args.guidance, "build_s": build_s,
               "parameters_total_m": sum(params.values()) / 1e6, "rss_after_build_mb": rss_loaded,
               "lsac": lsac_compare(backend, request, args, sync), "peak_rss_mb": peak_rss_mb(),
               "load_average": os.getloadavg()}
        return emit(out, args.out)
    modes = {"off": {"capture": False}, "head_mean": {"per_head": False}, "per_head": {"per_head": True}}
    step_times: dict[str, list[float]] = {m: [] for m in modes}
    step_cpu: dict[str, list[float]] = {m: [] for m in modes}
    run_times: dict[str, list[float]] = {m: [] for m in modes}
    results = {}
    for _ in range(args.repeats):
        for mode, kw in modes.items():
            clock = StepClock(backend, sync)
            try:
                res = backend.generate(dataclasses.replace(request, **kw), observer=clock)
            finally:
                clock.close()
            step_times[mode] += clock.per_step()
            step_cpu[mode] += clock.per_step(cpu=True)
            run_times[mode].append(res.elapsed_s)
            results[mode] = res
    timer, clock, timed_by = timed_attention_run(backend, request, sync)
    clock.close()
    denoise_s = sum(clock.per_step())
    denoise_cpu_s = sum(clock.per_step(cpu=True))
    med = {m: statistics.median(v) for m, v in step_times.items()}
    med_cpu = {m: statistics.median(v) for m, v in step_cpu.items()}
    workdir = Path(tempfile.mkdtemp(prefix="bench-realsize-"))
    out: dict = {
        "model": args.model, "device": args.device, "dtype": args.dtype, "threads": args.threads,
        "steps": args.steps, "duration": args.duration, "repeats": args.repeats, "guidance": args.guidance,
        "load_average": os.getloadavg(), "build_s": build_s,
        "parameters_m": {k: v / 1e6 for k, v in params.items()}, "parameters_total_m": sum(params.values()) / 1e6,
        "sites": len(backend.sites()), "cross_sites": sum(s.kind == "cross" for s in backend.sites()),
        "step_s": step_times, "median_step_s": med,
        "capture_ratio_head_mean": med["head_mean"] / med["off"],
        "capture_ratio_per_head": med["per_head"] / med["off"],
        "step_cpu_s": step_cpu, "median_step_cpu_s": med_cpu,
        "capture_cpu_ratio_head_mean": med_cpu["head_mean"] / med_cpu["off"],
        "capture_cpu_ratio_per_head": med_cpu["per_head"] / med_cpu["off"],
        "run_s": run_times, "attention_s": timer.total, "denoise_s_timed_run": denoise_s,
        "attention_share": timer.total / denoise_s if denoise_s else None, "attention_timed_by": timed_by,
        "attention_cpu_s": timer.cpu_total, "denoise_cpu_s_timed_run": denoise_cpu_s,
        "attention_share_cpu": timer.cpu_total / denoise_cpu_s if denoise_cpu_s else None,
        "rss_after_build_mb": rss_loaded, "peak_rss_mb": peak_rss_mb(),
        "npz_mb_head_mean": npz_size(backend, results["head_mean"], workdir, "head_mean"),
        "npz_mb_per_head": npz_size(backend, results["per_head"], workdir, "per_head"),
        "frames_mb_head_mean": sum(a.nbytes for a in results["head_mean"].frames.values()) / MB,
        "frames_mb_per_head": sum(a.nbytes for a in results["per_head"].frames.values()) / MB,
        "budget_this_run": budget_decisions(backend, dataclasses.replace(request, per_head=True), [2048, 64]),
        "budget_10s_200steps": budget_decisions(
            backend, dataclasses.replace(request, per_head=True, duration=10.0, steps=200), [2048, 64]),
    }
    if cuda:
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / MB
    fixed = statistics.median(run_times["off"]) - med["off"] * args.steps  # encode + decode
    out["fixed_s"] = fixed
    scale = 10.0 / args.duration
    step = med_cpu if not cuda else med
    out["extrapolated_10s_200steps_s"] = {
        "note": "200 × median step (CPU time on CPU, wall on CUDA) × (10 s / duration) + fixed (wall) "
                "× (10 s / duration); self-attention grows quadratically, so a lower bound below 10 s",
        "stock": 200 * step["off"] * scale + fixed * scale,
        "head_mean": 200 * step["head_mean"] * scale + fixed * scale,
        "per_head": 200 * step["per_head"] * scale + fixed * scale,
    }
    if args.lsac:
        out["lsac"] = lsac_compare(backend, request, args, sync)
    return emit(out, args.out)


def emit(out: dict, path: str | None) -> dict:
    """Print ``out`` as JSON (and write it to ``path``)."""
    text = json.dumps(out, indent=1, default=float)
    print(text)
    if path:
        Path(path).write_text(text)
    return out


if __name__ == "__main__":
    main()
