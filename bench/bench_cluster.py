"""Ray scale-out of ``eval``: items per minute in this process and on 1 and 2 Ray workers.

Renders Slakh-format tracks with FluidSynth (or uses ``--dataset``), then runs the same eval
(embedded model, per-head capture, no figures) in this process and with ``--ray local
--workers N``, one after the other, into scratch folders. Per run it prints: wall time, the time
until the first item came back (model load; for Ray also starting Ray and the actors), the
steady rate (items per minute from the first item to the last), the CPU seconds of this process
and everything it started (Ray's GCS, raylet and workers), the box's load average, and whether
the tables and per-item files equal the in-process run's. "median item" is an item's own
computation time where it ran (``elapsed_s``) and "workers busy" the sum of those times over the
steady span: 2.0 means two workers computed all the time (the pool kept both fed), so a rate
below 2x comes from each item running slower, i.e. from the CPU the machine gave.

    OMP_NUM_THREADS=1 python bench/bench_cluster.py [--tracks 4] [--steps 8] [--duration 2] \
        [--workers 1 2] [--dataset DIR]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.cluster import ClusterSpec  # noqa: E402
from engine.evaluation import EvalOptions, run_eval  # noqa: E402


def _cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of ``proc`` and its live descendants (Ray's processes while it runs)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def run_once(dataset: Path, out: Path, args, spec: ClusterSpec) -> dict:
    me = psutil.Process()
    stamps: list[float] = []
    cpu: list[float] = []

    def progress(done: int, total: int) -> None:
        stamps.append(time.perf_counter())
        cpu[:] = [_cpu_seconds(me)]  # before Ray shuts down and takes its workers' CPU with it

    cpu0 = _cpu_seconds(me)
    start = time.perf_counter()
    run_eval(EvalOptions(dataset=str(dataset), out=str(out), steps=args.steps, duration=args.duration,
                         grid=(32, 16), figures=False, resume=False, cluster=spec), progress=progress)
    wall = time.perf_counter() - start
    n = len(stamps)
    span = stamps[-1] - stamps[0] if n > 1 else float("nan")
    steady = 60.0 * (n - 1) / span if span > 0 else float("nan")
    # busy seconds of the items' own computation (each record's elapsed_s, measured where it ran)
    busy = [json.loads(line)["elapsed_s"] for line in (out / "items.jsonl").read_text().splitlines()]
    return {"mode": "in-process" if spec.address is None else f"ray x{spec.workers}", "items": n,
            "wall_s": wall, "first_item_s": stamps[0] - start, "steady_items_per_min": steady,
            "overall_items_per_min": 60.0 * n / wall, "cpu_s": cpu[0] - cpu0 if cpu else float("nan"),
            "item_s": float(np.median(busy)), "occupancy": sum(busy) * (n - 1) / n / span if span > 0 else float("nan"),
            "load_avg_1min": os.getloadavg()[0]}


def ray_startup(workers: int) -> dict:
    """Seconds to start a local Ray instance, to set up ``workers`` actors of a job that loads
    nothing, and to shut Ray down (the fixed cost of ``--ray local`` beyond the model load)."""
    import ray

    from engine.cluster.ray_pool import ActorPool, connect
    from tests.engine.cluster_jobs import Poison

    spec = ClusterSpec("local", workers=workers)
    t0 = time.perf_counter()
    connect(spec)
    t1 = time.perf_counter()
    pool = ActorPool(ray, Poison(), spec)
    t2 = time.perf_counter()
    pool.kill_all()
    ray.shutdown()
    return {"ray_init_s": t1 - t0, "empty_actors_s": t2 - t1, "shutdown_s": time.perf_counter() - t2}


def same_outputs(a: Path, b: Path) -> bool:
    """Tables and masks byte-equal, npz arrays equal, items.jsonl equal but for timings."""
    for f in sorted(a.rglob("*")):
        if not f.is_file() or f.name == "report.json":
            continue
        g = b / f.relative_to(a)
        if f.suffix == ".npz":
            with np.load(f) as x, np.load(g) as y:
                if sorted(x.files) != sorted(y.files) or any(
                        not np.array_equal(x[k], y[k]) for k in x.files):
                    return False
        elif f.name == "items.jsonl":
            strip = [[{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
                      for line in p.read_text().splitlines()] for p in (f, g)]
            if strip[0] != strip[1]:
                return False
        elif not filecmp.cmp(f, g, shallow=False):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dataset", default=None)
    args = ap.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    dataset = Path(args.dataset) if args.dataset else scratch / "slakh"
    if args.dataset is None:
        from engine.data.render import render_dataset

        render_dataset(dataset, args.tracks, seed=7, duration_s=max(4.0, args.duration + 2), source="patterns")
    rows = [run_once(dataset, scratch / "local", args, ClusterSpec())]
    for w in args.workers:
        rows.append(run_once(dataset, scratch / f"ray{w}", args, ClusterSpec("local", workers=w)))
        rows[-1]["same_as_in_process"] = same_outputs(scratch / "local", scratch / f"ray{w}")
    startup = ray_startup(max(args.workers))
    base = rows[0]["steady_items_per_min"]
    print(f"steps {args.steps}, {args.duration:g} s clips, {rows[0]['items']} items, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print("| mode | wall (s) | first item (s) | steady items/min | x in-process | overall items/min "
          "| median item (s) | workers busy | CPU (s) | load avg | same files |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['wall_s']:.1f} | {r['first_item_s']:.1f} | {r['steady_items_per_min']:.1f} "
              f"| {r['steady_items_per_min'] / base:.2f} | {r['overall_items_per_min']:.1f} | {r['item_s']:.2f} "
              f"| {r['occupancy']:.2f} | {r['cpu_s']:.1f} "
              f"| {r['load_avg_1min']:.1f} | {r.get('same_as_in_process', '-')} |")
    print(f"Ray start-up ({max(args.workers)} workers): ray.init {startup['ray_init_s']:.1f} s, actors of an "
          f"empty job {startup['empty_actors_s']:.1f} s, shutdown {startup['shutdown_s']:.1f} s")
    print(json.dumps({"runs": rows, "startup": startup}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
