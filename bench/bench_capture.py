"""Capture overhead: run time with attention capture / run time without, side by side.

For each model, in one process, interleaved repeats of: the stock pipeline call (no probes),
``generate`` with capture off (step/lattice hooks only), with head-mean capture, and with
per-head capture. Reports median times and the median of the per-repeat ratios
(captured / stock) as a Markdown table. Goal: head-mean ≤ 1.10.

    OMP_NUM_THREADS=1 python bench/bench_capture.py [--repeats 7] [--steps 10] [--models tiny:audioldm2 embedded]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from engine.backends.registry import load_backend  # noqa: E402
from engine.types import EngineError, GenerationRequest  # noqa: E402

MODES = ("stock", "hooks only", "head-mean", "per-head")


def stock_call(backend, req: GenerationRequest) -> None:
    """The pipeline as diffusers ships it, no probes attached."""
    gen = torch.Generator().manual_seed(req.seed)
    if backend.family == "audioldm2":
        backend.pipe(req.prompt, audio_length_in_s=req.duration, num_inference_steps=req.steps,
                     guidance_scale=req.guidance, generator=gen, output_type="np")
    elif backend.family == "stable_audio":
        backend.pipe(req.prompt, audio_end_in_s=req.duration, num_inference_steps=req.steps,
                     guidance_scale=req.guidance, generator=gen, output_type="np")
    else:
        backend.generate(GenerationRequest(**{**req.to_dict(), "capture": False}))


def run_mode(backend, req: GenerationRequest, mode: str) -> float:
    """CPU time of one run (process CPU time: robust to other jobs on a shared machine;
    equals wall time for one torch thread on the CPU)."""
    start = time.process_time()
    if mode == "stock":
        stock_call(backend, req)
    else:
        fields = req.to_dict()
        fields["capture"] = mode != "hooks only"
        fields["per_head"] = mode == "per-head"
        backend.generate(GenerationRequest(**fields))
    return time.process_time() - start


def bench(model: str, steps: int, duration: float, repeats: int) -> dict:
    backend = load_backend(model)
    req = GenerationRequest(prompt="warm bass and bright piano with soft drums", steps=steps,
                            duration=duration, guidance=3.0, seed=0)
    for mode in MODES:  # warm-up
        run_mode(backend, req, mode)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(repeats):
        order = MODES if r % 2 == 0 else MODES[::-1]  # interleave, alternate order
        for mode in order:
            times[mode].append(run_mode(backend, req, mode))
    ratios = {m: statistics.median(t / s for t, s in zip(times[m], times["stock"], strict=True))
              for m in MODES}
    n_sites = sum(s.kind == "cross" for s in backend.sites())
    return {"model": model, "backend": backend, "times": times, "ratios": ratios,
            "sites": n_sites, "steps": steps, "duration": duration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny:audioldm2", "embedded"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = []
    for model in args.models:
        try:
            rows.append(bench(model, args.steps, args.duration, args.repeats))
        except EngineError as exc:
            print(f"skipped {model}: {exc}", file=sys.stderr)
    print(f"Capture overhead (process CPU time), {args.repeats} interleaved repeats, median; torch threads "
          f"{torch.get_num_threads()}\n")
    print("| model | cross sites | steps | clip s | stock CPU s | hooks only | head-mean | per-head |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        model = row["model"]
        if row["backend"].warnings:
            model += " (fallback: tiny AudioLDM2)"
        stock = statistics.median(row["times"]["stock"])
        r = row["ratios"]
        print(f"| {model} | {row['sites']} | {row['steps']} | {row['duration']:g} | {stock:.3f} | "
              f"{r['hooks only']:.3f} | {r['head-mean']:.3f} | {r['per-head']:.3f} |")


if __name__ == "__main__":
    main()
