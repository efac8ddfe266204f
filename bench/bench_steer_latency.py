"""Steering latency: slider release → first audio sample ready.

A slider release regenerates the same prompt with the same seed and the new α (capture off), then
vocodes: the first audio sample is ready when ``backend.generate`` returns (both vocoders, the
embedded model's Griffin-Lim and AudioLDM2's HiFi-GAN, produce the whole clip at once). Goal ≤ 2 s.
``preview_s`` is the same steered run at the GUI's preview step count (``gui.steer_listen_state.preview_steps``,
a quarter of the steps), timed interleaved with the full one; ``bench_steer_listen.py`` measures the
same through the window (move → preview sound, → refined sound, prefetched α → sound).

``OMP_NUM_THREADS=1 python bench/bench_steer_latency.py [--model embedded] [--steps 25] [--repeats 3]``
prints one JSON object (seconds, median over repeats; ``model`` says which model really ran:
``embedded`` falls back to a tiny random AudioLDM2 while the trained weights are missing, and
``warnings`` says so).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from engine.backends.registry import load_backend
    from engine.interventions.caa import Steer, random_directions
    from engine.types import GenerationRequest
    from gui.steer_listen_state import preview_steps

    backend = load_backend(args.model, device=args.device)
    sv = random_directions(backend, concept="bench")
    req = {"prompt": "bass and drums", "seed": 0, "steps": args.steps, "duration": args.duration, "capture": False}
    backend.generate(GenerationRequest(**{**req, "steps": 2}))  # warm-up

    quick = preview_steps(GenerationRequest(**req))

    def timed(alpha: float, steps: int = args.steps) -> float:
        t0 = time.perf_counter()
        backend.generate(GenerationRequest(**{**req, "steps": steps}, interventions=(Steer(sv, alpha),) if alpha else ()))
        return time.perf_counter() - t0

    plain = [timed(0.0) for _ in range(args.repeats)]
    steered, preview = [], []
    for _ in range(args.repeats):  # interleaved: the same machine load for both
        steered.append(timed(5.0))
        preview.append(timed(5.0, quick))
    result = {
        "model": backend.model_id, "family": backend.family, "warnings": backend.warnings,
        "steps": args.steps, "duration_s": args.duration, "threads": args.threads, "device": args.device,
        "unsteered_s": statistics.median(plain), "release_to_first_sample_s": statistics.median(steered),
        "goal_s": 2.0, "meets_goal": statistics.median(steered) <= 2.0,
        "preview_steps": quick, "preview_s": statistics.median(preview),
        "full_over_preview": statistics.median(steered) / statistics.median(preview),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
