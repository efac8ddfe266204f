"""Frame store on disk: one ``.npy`` per frame + ``index.json`` (today's
:mod:`engine.probe.frame_store`) against zarr v3 (one array per site, chunked by step), on real
attention captures.

``OMP_NUM_THREADS=1 python bench/bench_frame_store.py --model embedded --steps 25 --duration 4
--sites all [--out FILE]`` (needs ``pip install zarr==3.1.6``; it is not a project dependency)

One process loads the model and runs the same per-head request (same seed) once per store: the
recorder streams every frame to the store (``stream_dir`` with a budget too small to keep any),
and each ``write`` call is timed inside the run, as the recorder makes it (the sum per step is
the stall a step gets). Then, per store:

* size on disk (bytes of the files, blocks used, number of files);
* in a fresh process: opening the store lazily (the index, or the group's arrays and their
  attributes), reading one step of one site (the largest), one site across all steps, and every
  frame once (what ``analyze``'s one-pass reduction does); the page cache is warm (just written);
* several processes: two processes write half of the sites each into the same store at once, and
  two write whole runs into their own stores at once; the reader then counts what it sees and
  compares it with the frames written. The ``.npy`` store admits one writer per folder (the
  second exits with code 2 and its one-line refusal); zarr lets both write (different arrays).

Every zarr store is read back and compared with the ``.npy`` frames (lossless: equal to the bit).
``--sites cross`` captures the cross-attention sites only (what ``analyze`` records by default);
``all`` adds self-attention, whose ``Q × Q`` frames make the large captures. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB = 2**20
ZARR_CODECS = ("zarr-none", "zarr-zstd", "zarr-blosc")  # no compression, zarr's default zstd, blosc zstd + byte shuffle


# -- the candidate: zarr v3, one array per site, one chunk per step ---------------------------
class ZarrFrameWriter:
    """The recorder's writer interface (``write``, ``close``, ``folder``) over a zarr v3 group:
    one array ``(steps, H, Q, K)`` float16 per site, chunked ``(1, H, Q, K)``, with the site's
    lattice, context and head reduction as attributes."""

    def __init__(self, folder: Path, steps: list[int], codec: str) -> None:
        import zarr

        self.folder = Path(folder)
        self.group = zarr.open_group(str(self.folder), mode="a")
        self.position = {s: i for i, s in enumerate(steps)}
        self.codec = codec
        self.arrays: dict[str, Any] = {}

    def _compressors(self):
        from zarr.codecs import BloscCodec, ZstdCodec

        if self.codec == "zarr-none":
            return None
        if self.codec == "zarr-zstd":
            return ZstdCodec(level=0)
        return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=2)

    def write(self, step: int, site: str, array: np.ndarray, lattice: tuple[int, int],
              context: str, head_mean: bool) -> None:
        arr = self.arrays.get(site)
        if arr is None:
            arr = self.group.create_array(
                name=site, shape=(len(self.position),) + array.shape, chunks=(1,) + array.shape,
                dtype="float16", compressors=self._compressors(), fill_value=0,
                attributes={"lattice": list(lattice), "context": context, "head_mean": bool(head_mean),
                            "steps": list(self.position)})
            self.arrays[site] = arr
        arr[self.position[step]] = array

    def close(self) -> None:
        return None


class TimedWriter:
    """Wraps a writer; keeps the seconds of every ``write`` call per step."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.folder = inner.folder
        self.per_step: dict[int, float] = {}
        self.close_s = 0.0

    def write(self, step, site, array, lattice, context, head_mean) -> None:
        t = time.perf_counter()
        self.inner.write(step, site, array, lattice, context, head_mean)
        self.per_step[step] = self.per_step.get(step, 0.0) + time.perf_counter() - t

    def close(self) -> None:
        t = time.perf_counter()
        self.inner.close()
        self.close_s = time.perf_counter() - t


def make_writer(kind: str, folder: Path, steps: list[int]):
    from engine.probe.frame_store import FrameStoreWriter

    return FrameStoreWriter(folder) if kind == "npy" else ZarrFrameWriter(folder, steps, kind)


# -- reading ------------------------------------------------------------------------------------
def open_store(kind: str, folder: str):
    """``(frames by (step, site) -> callable, sites, steps)`` after opening ``folder`` lazily."""
    if kind == "npy":
        from engine.probe.frame_store import StoredFrames

        store = StoredFrames(folder)
        return store, sorted({s for _, s in store}), sorted({t for t, _ in store})
    import zarr

    group = zarr.open_group(folder, mode="r")
    arrays = dict(group.arrays())
    meta = {name: dict(a.attrs) for name, a in arrays.items()}
    steps = meta[next(iter(meta))]["steps"] if meta else []
    return (arrays, meta), sorted(arrays), steps


def read_frame(kind: str, store, step: int, site: str) -> np.ndarray:
    if kind == "npy":
        return store[(step, site)]
    arrays, meta = store
    return arrays[site][meta[site]["steps"].index(step)]


def read_site(kind: str, store, site: str, steps: list[int]) -> np.ndarray:
    if kind == "npy":
        return np.stack([store[(t, site)] for t in steps])
    return store[0][site][:]


def read_timings(kind: str, folder: str, repeats: int = 5) -> dict[str, Any]:
    """Times of importing the store's module, opening and reading ``folder`` in this (fresh) process."""
    t = time.perf_counter()
    if kind == "npy":
        import engine.probe.frame_store  # noqa: F401
    else:
        import zarr  # noqa: F401
    import_s = time.perf_counter() - t
    t = time.perf_counter()
    store, sites, steps = open_store(kind, folder)
    open_s = time.perf_counter() - t
    sizes = {s: read_frame(kind, store, steps[0], s).nbytes for s in sites}
    big = max(sites, key=sizes.get)
    mid = steps[len(steps) // 2]
    one = []
    for _ in range(repeats):
        t = time.perf_counter()
        read_frame(kind, store, mid, big)
        one.append(time.perf_counter() - t)
    t = time.perf_counter()
    read_site(kind, store, big, steps)
    site_s = time.perf_counter() - t
    t = time.perf_counter()
    n = sum(read_frame(kind, store, st, s).size > 0 for st in steps for s in sites)
    all_s = time.perf_counter() - t
    return {"import_s": import_s, "open_s": open_s, "one_frame_first_s": one[0], "one_frame_median_s": statistics.median(one[1:]),
            "one_site_all_steps_s": site_s, "every_frame_s": all_s, "frames": int(n),
            "largest_frame_mb": sizes[big] / MB}


def disk_usage(folder: Path) -> dict[str, Any]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"bytes_mb": sum(p.stat().st_size for p in files) / MB,
            "blocks_mb": sum(p.stat().st_blocks * 512 for p in files) / MB, "files": len(files)}


def frames_equal(kind: str, folder: Path, reference: Path) -> bool:
    from engine.probe.frame_store import StoredFrames

    ref = StoredFrames(reference)
    store, _, _ = open_store(kind, str(folder))
    return all(np.array_equal(read_frame(kind, store, t, s), a) for (t, s), a in ref.items())


# -- several processes ----------------------------------------------------------------------
def write_part(kind: str, source: str, target: str, sites: list[str], start_at: float) -> None:
    """Write ``sites`` of the ``.npy`` capture ``source`` into ``target`` (waits until ``start_at``)."""
    from engine.probe.frame_store import StoredFrames, load_frame_index

    entries = {(e["step"], e["site"]): e for e in load_frame_index(source)}
    frames = StoredFrames(source)
    steps = sorted({t for t, _ in frames})
    writer = make_writer(kind, Path(target), steps)
    time.sleep(max(0.0, start_at - time.time()))
    for step in steps:
        for site in sites:
            e = entries[(step, site)]
            writer.write(step, site, frames[(step, site)], tuple(e["lattice"]), e["context"], e["head_mean"])
    writer.close()


def concurrent_writes(kind: str, source: Path, work: Path) -> dict[str, Any]:
    """Two processes write half of the sites each into one store, then whole runs into two stores."""
    from engine.probe.frame_store import StoredFrames

    ref = StoredFrames(source)
    sites = sorted({s for _, s in ref})
    halves = [sites[0::2], sites[1::2]]
    out: dict[str, Any] = {}
    for case, targets, parts in (
        ("same_store_half_sites_each", [work / f"{kind}-shared"] * 2, halves),
        ("own_store_whole_run_each", [work / f"{kind}-run{i}" for i in range(2)], [sites, sites]),
    ):
        start_at = time.time() + 2.0
        procs = [subprocess.Popen([sys.executable, __file__, "--write-part", kind, str(source), str(tgt),
                                   json.dumps(part), str(start_at)]) for tgt, part in zip(targets, parts, strict=True)]
        codes = [p.wait() for p in procs]
        wall = time.time() - start_at  # from the common start to the last exit (process exit included)
        seen = []
        for tgt in dict.fromkeys(targets):
            try:
                store, got_sites, got_steps = open_store(kind, str(tgt))
                seen.append(sum(1 for s in got_sites for st in got_steps
                                if np.array_equal(read_frame(kind, store, st, s), ref[(st, s)])))
            except Exception as exc:  # a broken store is a finding, not a crash of the benchmark
                seen.append(f"{type(exc).__name__}: {exc}")
        out[case] = {"exit_codes": codes, "frames_expected_per_store": len(ref),
                     "frames_read_back_equal": seen, "wall_s": round(wall, 3)}
    return out


# -- driver -----------------------------------------------------------------------------------
def capture(backend, request, kind: str, folder: Path) -> dict[str, Any]:
    """Run ``request`` streaming every frame into a ``kind`` store at ``folder``; time the writes."""
    import engine.probe.recorder as recorder

    steps = list(range(request.steps))
    made: list[TimedWriter] = []

    def factory(path: Path) -> TimedWriter:
        made.append(TimedWriter(make_writer(kind, Path(path), steps)))
        return made[-1]

    original = recorder.FrameStoreWriter
    recorder.FrameStoreWriter = factory
    try:
        t = time.perf_counter()
        result = backend.generate(_replace(request, stream_dir=str(folder)))
        run_s = time.perf_counter() - t
    finally:
        recorder.FrameStoreWriter = original
    assert result.frames_dir is not None and not result.frames, "the run did not stream every frame"
    per_step = [made[0].per_step[s] for s in sorted(made[0].per_step)]
    return {"run_s": run_s, "write_per_step_median_s": statistics.median(per_step),
            "write_per_step_max_s": max(per_step), "write_total_s": sum(per_step),
            "close_s": made[0].close_s, "run_per_step_s": run_s / request.steps}


def _replace(request, **kw):
    import dataclasses

    return dataclasses.replace(request, **kw)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--read":
        print(json.dumps(read_timings(sys.argv[2], sys.argv[3])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--write-part":
        from engine.types import EngineError

        try:
            write_part(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]), float(sys.argv[6]))
        except EngineError as exc:  # the .npy store refuses a second writer (its claim)
            print(exc, file=sys.stderr)
            sys.exit(2)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--sites", choices=("cross", "all"), default="all")
    ap.add_argument("--prompt", default="warm bass and soft piano with a slow drum groove")
    ap.add_argument("--stores", default="npy," + ",".join(ZARR_CODECS))
    ap.add_argument("--no-concurrency", action="store_true")
    ap.add_argument("--keep", default=None, help="keep the stores in this folder")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if any(k != "npy" for k in args.stores.split(",")):
        try:
            import zarr  # noqa: F401
        except ImportError:
            sys.exit("zarr is not installed: pip install zarr==3.1.6 (not a project dependency), or pass --stores npy")

    from engine.backends.registry import load_backend
    from engine.types import GenerationRequest

    backend = load_backend(args.model)
    sites = tuple(s.name for s in backend.sites() if args.sites == "all" or s.kind == "cross")
    request = GenerationRequest(prompt=args.prompt, steps=args.steps, duration=args.duration, guidance=3.5,
                                seed=7, sites=sites, per_head=True, memory_budget_mb=1e-6)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-frame-store-"))
    work.mkdir(parents=True, exist_ok=True)
    kinds = args.stores.split(",")
    if kinds[0] != "npy":
        kinds = ["npy"] + [k for k in kinds if k != "npy"]
    report: dict[str, Any] = {"model": args.model, "steps": args.steps, "duration_s": args.duration,
                              "sites": len(sites), "per_head": True, "stores": {}}
    try:
        for kind in kinds:
            folder = work / kind
            shutil.rmtree(folder, ignore_errors=True)
            entry = capture(backend, request, kind, folder)
            entry.update(disk_usage(folder))
            if kind != "npy":
                entry["equal_to_npy"] = frames_equal(kind, folder, work / "npy")
            out = subprocess.run([sys.executable, __file__, "--read", kind, str(folder)],
                                 capture_output=True, text=True, check=True)
            entry["read"] = json.loads(out.stdout)
            report["stores"][kind] = entry
            print(kind, json.dumps(entry), file=sys.stderr, flush=True)
        report["capture_mb"] = report["stores"]["npy"]["bytes_mb"]
        if not args.no_concurrency:
            report["concurrency"] = {k: concurrent_writes(k, work / "npy", work) for k in ("npy", "zarr-blosc")
                                     if k in kinds}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
