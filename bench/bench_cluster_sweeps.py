"""Ray scale-out of a sweep command: ``patch`` in this process and with ``--ray local --workers N``.

Runs the same K/V patching sweep (embedded model by default) in process and on N Ray workers, one
after the other, and prints per run: wall time, seconds until the first layer item (round 2) came
back (model load, Ray start, the first round and the second round's actor start), the steady
rate of round 2 (layer items per minute from its first to its last item) and whether
``patch_<concept>.json`` equals the in-process one (``options.out`` aside).

    OMP_NUM_THREADS=1 python bench/bench_cluster_sweeps.py [--model embedded] [--steps 8] \
        [--duration 2] [--pairs 2] [--seeds 0,1] [--workers 2]
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

from engine.cluster import ClusterSpec  # noqa: E402
from engine.interventions.commands import PatchOptions, run_patch  # noqa: E402


def run_once(out: Path, args, spec: ClusterSpec) -> dict:
    stamps: list[tuple[float, int]] = []
    start = time.perf_counter()
    path = run_patch(PatchOptions(concept="drums", prompt_set="embedded", max_pairs=args.pairs, seeds=args.seeds,
                                  scorer="band-template", model=args.model, steps=args.steps,
                                  duration=args.duration, out=str(out), cluster=spec),
                     progress=lambda done, total: stamps.append((time.perf_counter(), done)))
    wall = time.perf_counter() - start
    n_first = args.pairs * len(args.seeds.split(",")) * 2  # round 1: two runs per pair x seed
    second = [t for t, done in stamps if done > n_first]
    rate = 60 * (len(second) - 1) / (second[-1] - second[0]) if len(second) > 1 else float("nan")
    data = json.loads(path.read_text())
    data["options"].pop("out")
    return {"wall_s": round(wall, 1), "first_layer_item_s": round(second[0] - start, 1),
            "round2_items": len(second), "round2_items_per_min": round(rate, 1), "data": data}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--workers", type=int, nargs="+", default=[2])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"in_process": run_once(Path(tmp, "local"), args, ClusterSpec())}
        for n in args.workers:
            runs[f"ray_{n}"] = run_once(Path(tmp, f"ray{n}"), args, ClusterSpec("local", n))
    reference = runs["in_process"].pop("data")
    for name, r in runs.items():
        if name != "in_process":
            r["same_file"] = r.pop("data") == reference
    print(json.dumps({"settings": vars(args), "cpus": os.cpu_count(), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
