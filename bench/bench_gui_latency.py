"""GUI responsiveness during a real generation.

* Event-loop stall: a 5 ms QTimer probe in the GUI thread; a stall is a gap between two
  timeouts beyond the 5 ms period (the longest is what a user feels as a freeze).
* Step-to-screen latency: from the engine thread emitting a frame (time taken in that thread)
  to the live heatmap showing the map of that (step, site) (``HeatmapDock.mapChanged``).
* The GUI thread's own CPU time across each gap (``time.thread_time``): a stall with little CPU
  is the thread waiting (for the GIL, or for a core on a busy machine), one with a lot is work
  the GUI thread did.
* ``--time-slots``: the longest and total GUI-thread CPU time (``time.thread_time``: work, not
  waiting for a core or the GIL) of the GUI's handlers of a run's signals (frames, steps, start,
  end) and of pyqtgraph's repaints, per handler (wrapped before the window is built).
* ``--stall-stacks``: a sampler thread reads the GUI thread's Python stack every 2 ms while the
  event loop has not ticked for 20 ms and prints the most frequent stacks of the stalls (what
  runs in the GUI thread at that moment).
* Full (generation-2) garbage collections during the run and the longest one: each holds the GIL,
  so it freezes the GUI for its whole length (``--no-freeze`` leaves the heap unfrozen after the
  load, as before ``gui.engine_thread.settle_heap``, to compare).

Usage: ``OMP_NUM_THREADS=1 python bench/bench_gui_latency.py [--model tiny:audioldm2] [--steps 25]``
(offscreen when there is no display).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

PROBE_MS = 5


def time_slots() -> dict[str, list[float]]:
    """Wrap the GUI's handlers of a run's signals (and pyqtgraph's paint) to take each call's
    GUI-thread CPU time (ms)."""
    import pyqtgraph as pg

    from gui.docks.heads_dock import HeadsDock
    from gui.docks.heatmap_dock import HeatmapDock
    from gui.docks.metrics_dock import MetricsDock
    from gui.docks.overview_dock import OverviewDock
    from gui.docks.player_dock import PlayerDock
    from gui.main_window import MainWindow

    times: dict[str, list[float]] = {}
    targets = [(MainWindow, "_on_frames"), (MainWindow, "_on_step"), (MainWindow, "_on_run_started"),
               (MainWindow, "_on_finished"), (HeatmapDock, "refresh"), (HeatmapDock, "_sync_lists"),
               (OverviewDock, "rebuild"), (OverviewDock, "_fill"), (HeadsDock, "rebuild"), (HeadsDock, "_on_frames"),
               (MetricsDock, "refresh"), (PlayerDock, "_on_current"), (pg.GraphicsView, "paintEvent")]
    for cls, name in targets:
        def wrap(fn, label=f"{cls.__name__}.{name}"):
            def timed(*a, **k):
                t0 = time.thread_time()
                try:
                    return fn(*a, **k)
                finally:
                    times.setdefault(label, []).append(1000 * (time.thread_time() - t0))
            timed.__name__ = fn.__name__
            return timed
        setattr(cls, name, wrap(getattr(cls, name)))
    return times


class StallSampler:
    """Samples the GUI (main) thread's Python stack from another thread while the event-loop
    probe has not ticked for ``STALL_S``; ``report`` prints the commonest stacks and clears."""

    STALL_S, EVERY_S = 0.020, 0.002

    def __init__(self, ticks: list[float]) -> None:
        import threading
        from collections import Counter

        self.ticks, self.counts, self.main = ticks, Counter(), threading.main_thread().ident
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import threading
        import traceback

        while True:
            time.sleep(self.EVERY_S)
            if not self.ticks or time.perf_counter() - self.ticks[-1] < self.STALL_S:
                continue
            frames = sys._current_frames()
            for ident, frame in frames.items():  # the GUI thread, and what the others run meanwhile
                if ident == threading.get_ident():
                    continue
                who = "GUI" if ident == self.main else "other"
                stack = traceback.extract_stack(frame)[-14 if who == "GUI" else -6:]
                self.counts[f"  [{who} thread]\n" + "\n".join(
                    f"    {Path(f.filename).name}:{f.lineno} {f.name}" for f in stack)] += 1

    def report(self, top: int = 8) -> None:
        total = sum(self.counts.values())
        print(f"  stall samples (every {1000 * self.EVERY_S:.0f} ms while the loop is > {1000 * self.STALL_S:.0f} ms late): {total}")
        for stack, n in self.counts.most_common(top):
            print(f"  {n} samples ({n / max(total, 1):.0%}):\n{stack}")
        self.counts.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny:audioldm2")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=1, help="runs in the same window (the first is the worst)")
    parser.add_argument("--no-freeze", action="store_true", help="do not freeze the GC heap after loading")
    parser.add_argument("--stall-stacks", action="store_true", help="sample the GUI thread's stack during stalls")
    parser.add_argument("--time-slots", action="store_true", help="time the GUI's handlers of a run's signals")
    args = parser.parse_args(argv)
    import gc

    import torch
    from PySide6.QtCore import QEventLoop, QStandardPaths, Qt, QTimer

    from engine.types import GenerationRequest
    from gui.app import make_app
    from gui.audio_output import NullOutput
    from gui.main_window import MainWindow

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    slot_times = time_slots() if args.time_slots else None
    if args.no_freeze:  # the GUI before settle_heap: nothing frozen after the load
        import gui.engine_thread

        gui.engine_thread.settle_heap = lambda collect: 0
    QStandardPaths.setTestModeEnabled(True)
    app = make_app([sys.argv[0]])
    window = MainWindow(model=args.model, output=NullOutput())
    window.show()
    loop = QEventLoop()

    # load first so the measurement covers denoising, not model loading
    window.bridge.modelLoaded.connect(loop.quit)
    window.bridge.modelFailed.connect(lambda m: (print("load failed:", m), loop.quit()))
    window.bridge.load(args.model, args.device)
    loop.exec()
    collections: list[float] = []
    gc_start: dict[str, float] = {}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start["t"] = time.perf_counter()
        elif info["generation"] == 2:
            collections.append(time.perf_counter() - gc_start["t"])

    gc.callbacks.append(on_gc)

    emitted: dict[tuple[int, str], float] = {}
    latencies: list[float] = []
    ticks: list[float] = []
    cpu: list[float] = []  # the GUI thread's CPU time at each tick

    def on_frame_in_engine_thread(frame) -> None:  # DirectConnection: runs in the engine thread
        emitted.setdefault((frame.step, frame.site), time.perf_counter())

    window.bridge._worker.frame.connect(on_frame_in_engine_thread, Qt.ConnectionType.DirectConnection)

    def on_map() -> None:
        sel = window.workspace.selection
        t0 = emitted.get((sel.step, sel.site))
        if t0 is not None and window.bridge.busy:
            latencies.append(time.perf_counter() - t0)

    window.heatmap.mapChanged.connect(on_map)
    probe = QTimer()
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(lambda: (ticks.append(time.perf_counter()), cpu.append(time.thread_time())))
    done: dict[str, str] = {}
    window.bridge.runFinished.connect(lambda r: (done.setdefault("end", "done"), loop.quit()))
    window.bridge.runFailed.connect(lambda i, m: (done.setdefault("end", m), loop.quit()))
    request = GenerationRequest(prompt="bass and drums", steps=args.steps, duration=args.duration, per_head=True)
    sampler = StallSampler(ticks) if args.stall_stacks else None
    for run in range(args.runs):
        ticks.clear()
        cpu.clear()
        latencies.clear()
        collections.clear()
        emitted.clear()
        done.clear()
        probe.start()
        t_start = time.perf_counter()
        window.generate(args.model, args.device, request)
        loop.exec()
        elapsed = time.perf_counter() - t_start
        probe.stop()
        if sampler is not None:
            sampler.report()
        if slot_times is not None:
            print("  GUI handlers, CPU (longest / total ms, calls): " + "; ".join(
                f"{name} {max(v):.0f}/{sum(v):.0f} ({len(v)})" for name, v in
                sorted(slot_times.items(), key=lambda kv: -max(kv[1]))[:8]))
            slot_times.clear()
        if done.get("end") != "done":
            print("run failed:", done.get("end"))
            window.shutdown()
            return 1
        gaps = np.diff(np.asarray(ticks)) * 1000.0
        lat = np.asarray(latencies) * 1000.0
        print(f"run {run + 1}: model {args.model} on {args.device}, {args.steps} steps, {args.duration} s clip, "
              f"run {elapsed:.2f} s")
        print(f"  event-loop probe ({PROBE_MS} ms): {len(ticks)} ticks; gap p50 {np.percentile(gaps, 50):.1f} ms, "
              f"p99 {np.percentile(gaps, 99):.1f} ms, longest {gaps.max():.1f} ms (stall {gaps.max() - PROBE_MS:.1f} ms, "
              f"ending {ticks[int(gaps.argmax()) + 1] - t_start:.2f} s into the run)")
        busy = np.diff(np.asarray(cpu)) * 1000.0
        worst = np.argsort(-gaps)[:3]
        print("  longest gaps (GUI-thread CPU during the gap): " + ", ".join(
            f"{gaps[i]:.0f} ms ({busy[i]:.0f} ms CPU)" for i in worst) + f"; load average {os.getloadavg()[0]:.1f}")
        if lat.size:
            print(f"  step-to-screen latency: {lat.size} live maps of {args.steps} steps; mean {lat.mean():.1f} ms, "
                  f"p95 {np.percentile(lat, 95):.1f} ms, max {lat.max():.1f} ms")
        else:
            print("  step-to-screen latency: no live map was shown")
        print(f"  full GC collections: {len(collections)}, longest "
              f"{1000 * max(collections, default=0.0):.1f} ms (heap frozen: {gc.get_freeze_count()} objects)")
    gc.callbacks.remove(on_gc)
    window.shutdown()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
