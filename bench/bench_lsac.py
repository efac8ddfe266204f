"""Benchmark of LSAC: attention time and generation time with and without a preset, side by side.

``OMP_NUM_THREADS=1 python bench/bench_lsac.py [--model embedded|tiny:...|DIR] [--preset balanced]
[--steps 25] [--duration 4] [--repeats 3]`` profiles the model once (stable / fast sites), then
alternates full and LSAC runs of the same request (same seed) ``repeats`` times and prints one
JSON object: medians of the time spent inside attention calls (all sites) and of the whole
generation, their speed-ups, the attention FLOPs the preset skips and the output deviation.
``--random-embedded`` uses a random-weight embedded model of the shipped architecture (timing
only) when no trained weights are installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--random-embedded", action="store_true")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt", default="bass and drums")
    parser.add_argument("--cache-dtype", default=None, help="model (default), bfloat16, float16, float32")
    parser.add_argument("--kinds", default="self", help="attention kinds the preset caches: self (default) or self,cross")
    parser.add_argument("--sweep", default=None, help="freeze_sweep.npz from `main.py convergence --sweep`: plan from it")
    args = parser.parse_args(argv)

    import torch

    from engine.backends.registry import load_backend
    from engine.convergence.compare import attention_saving
    from engine.convergence.diagnostics import diagnose
    from engine.convergence.lsac import LSAC
    from engine.convergence.quality import deviation
    from engine.convergence.timing import AttentionTimer
    from engine.types import GenerationRequest

    torch.set_num_threads(args.threads)
    if args.random_embedded:
        from engine.backends.embedded import EmbeddedBackend
        from engine.models.embedded.pipeline import EmbeddedPipeline

        backend = EmbeddedBackend(EmbeddedPipeline.build(seed=0))
    else:
        backend = load_backend(args.model)
    request = GenerationRequest(prompt=args.prompt, seed=0, steps=args.steps, guidance=3.0,
                                duration=args.duration, capture=False)
    report, _ = diagnose(backend, request)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    sweep = None
    if args.sweep:
        from engine.convergence.freeze import load_sweep

        sweep = load_sweep(args.sweep)
    lsac = LSAC.from_preset(report, args.preset, args.steps, kinds=kinds, sweep=sweep)

    def run(with_cache: bool):
        timer = AttentionTimer()
        ivs = [LSAC(lsac.plan, name=lsac.name, cache_dtype=args.cache_dtype), timer] if with_cache else [timer]
        res = backend.generate(dataclasses.replace(request, interventions=tuple(ivs)))
        return res, timer.total

    times: dict[str, list[float]] = {"full_attn": [], "lsac_attn": [], "full_gen": [], "lsac_gen": []}
    full = cached = None
    run(False)  # warm-up
    for _ in range(args.repeats):
        full, t = run(False)
        times["full_attn"].append(t)
        times["full_gen"].append(full.elapsed_s)
        cached, t = run(True)
        times["lsac_attn"].append(t)
        times["lsac_gen"].append(cached.elapsed_s)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "model": backend.model_id, "warnings": backend.warnings, "preset": args.preset,
        "cache_dtype": args.cache_dtype or "model", "kinds": list(kinds), "sweep": args.sweep,
        "steps": args.steps, "duration": args.duration, "threads": args.threads,
        "sites": len(report.sites), "stable_sites": report.stable_sites,
        "cached_sites": len(lsac.plan), "plan": lsac.plan,
        "attention_flops_saved": attention_saving(lsac.plan, report.shapes, args.steps),
        **{f"median_{k}_s": v for k, v in med.items()},
        "attention_speedup": med["full_attn"] / med["lsac_attn"],
        "generation_speedup": med["full_gen"] / med["lsac_gen"],
        "deviation": deviation(cached, full),
    }
    print(json.dumps(out, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
