"""Benchmark of the embedded model: load time and 4 s / 25-step / CFG generation, capture on and off.

``OMP_NUM_THREADS=1 python bench/bench_embedded.py [--model DIR] [--repeats N] [--threads T]``
prints one JSON object (seconds; medians over the repeats).
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
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    import torch

    from engine.backends.embedded import EmbeddedBackend
    from engine.models.embedded.backend import default_model_dir
    from engine.models.embedded.pipeline import EmbeddedPipeline
    from engine.types import GenerationRequest

    torch.set_num_threads(args.threads)
    imports_s = time.perf_counter() - t0
    folder = Path(args.model) if args.model else default_model_dir()
    t0 = time.perf_counter()
    pipe = EmbeddedPipeline.from_pretrained(folder)
    load_s = time.perf_counter() - t0
    backend = EmbeddedBackend(pipe)

    def timed(capture: bool) -> list[float]:
        out = []
        for seed in range(args.repeats):
            req = GenerationRequest(prompt="bass and drums", seed=seed, steps=args.steps, guidance=3.0,
                                    duration=args.duration, capture=capture)
            t = time.perf_counter()
            backend.generate(req)
            out.append(time.perf_counter() - t)
        return out

    backend.generate(GenerationRequest(prompt="bass", steps=2, duration=args.duration))  # warm-up
    on, off = timed(True), timed(False)
    t = time.perf_counter()
    pipe("bass and drums", num_inference_steps=args.steps, audio_length_in_s=args.duration,
         generator=torch.Generator().manual_seed(0), vocode_audio=False)
    no_vocoder_s = time.perf_counter() - t
    result = {
        "model": str(folder), "threads": args.threads, "steps": args.steps, "duration_s": args.duration,
        "imports_s": round(imports_s, 2), "load_s": round(load_s, 3),
        "generate_capture_on_s": round(statistics.median(on), 3),
        "generate_capture_off_s": round(statistics.median(off), 3),
        "denoise_only_s": round(no_vocoder_s, 3),
        "runs_capture_on_s": [round(x, 3) for x in on],
        "runs_capture_off_s": [round(x, 3) for x in off],
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
