"""Evaluation throughput: scored items per minute of ``run_eval`` on this machine.

Renders a few Slakh-format tracks with FluidSynth (or uses ``--dataset``), then runs the full eval
(generation with per-head capture, mapping, scoring, npz files) per model into a scratch folder
and prints one Markdown row per model. The embedded model is reported as such only when its
trained weights are installed; otherwise the row says it fell back to the tiny random AudioLDM2.

    OMP_NUM_THREADS=1 python bench/bench_eval.py [--tracks 2] [--steps 25] [--duration 4] \
        [--models tiny:audioldm2 untrained:embedded embedded] [--dataset DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.backends.registry import load_backend  # noqa: E402
from engine.evaluation import EvalOptions, run_eval  # noqa: E402
from engine.types import EngineError  # noqa: E402

UNTRAINED = "untrained:embedded"  # the embedded architecture with fresh random weights


def untrained_embedded():
    from engine.backends.embedded import EmbeddedBackend
    from engine.models.embedded.pipeline import EmbeddedPipeline

    return EmbeddedBackend(EmbeddedPipeline.build(seed=0), model_id=UNTRAINED)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--models", nargs="+", default=["tiny:audioldm2", "embedded"])
    ap.add_argument("--dataset", default=None, help="an existing Slakh-format folder")
    ap.add_argument("--no-per-head", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        data = Path(args.dataset) if args.dataset else Path(tmp) / "data"
        if args.dataset is None:
            from engine.data.render import render_dataset

            t0 = time.perf_counter()
            render_dataset(data, args.tracks, seed=2024, duration_s=max(8.0, args.duration))
            print(f"rendered {args.tracks} tracks in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        print("| model | steps | clip (s) | per-head | items | items/min | s/item |")
        print("|---|---|---|---|---|---|---|")
        for model in args.models:
            try:
                backend = untrained_embedded() if model == UNTRAINED else load_backend(model)
            except EngineError as exc:
                print(f"| {model} | - | - | - | - | not available: {exc} | - |")
                continue
            label = model
            if model == "embedded" and backend.warnings:
                label = "embedded (NOT trained: fell back to tiny random AudioLDM2)"
            out = Path(tmp) / f"out-{model.replace(':', '_').replace('/', '_')}"
            opts = EvalOptions(dataset=str(data), out=str(out), model=model, steps=args.steps,
                               duration=args.duration, max_tracks=args.tracks,
                               per_head=not args.no_per_head, figures=False)
            t0 = time.perf_counter()
            run_eval(opts, backend=backend)
            wall = time.perf_counter() - t0
            report = json.loads((out / "report.json").read_text())
            n = report["items"]
            per_min = report["items_per_minute"]
            print(f"| {label} | {args.steps} | {args.duration:g} | {not args.no_per_head} | {n} | "
                  f"{per_min:.1f} | {60.0 / per_min:.2f} |" if per_min else
                  f"| {label} | {args.steps} | {args.duration:g} | - | {n} | - | - |")
            print(f"{model}: {wall:.1f} s wall including tables and head selection", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
