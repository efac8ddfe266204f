"""Listening while steering, through the real window (offscreen, silent output): slider move →
first preview sound, move → refined sound, and a prefetched α → sound.

The window, its engine thread and the steer-and-listen controller are the application's own; the
model is loaded and warmed up, the unsteered run A is in the history and playing (loop off, so
new audio comes in place at the next block instead of at the loop boundary; the silent output's
clock is held, so playback never reaches the clip's end: a listener who keeps listening). Per repeat, at a fresh
α: the slider is pressed and moved (t0), the preview clip reaches the player (first sound), the
slider is released and the full, captured steered run B reaches the player (refined sound); then,
once the idle engine has prefetched the α grid around it, a move onto a rendered α reaches the
player (prefetched sound), and its release shows the kept result as run B against A (prefetched
release → run: no generation). "Reaches the player" is ``PlayerDock.play_clip`` having handed the clip
to the output: a sound card adds one block (~10 ms at 16 kHz with PortAudio's default latency).

``OMP_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen python bench/bench_steer_listen.py [--model embedded]
[--steps 25] [--duration 4] [--repeats 5]`` prints one JSON object (seconds, medians and all values).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_FIRST_SOUND_S = 0.5


def _wait(app, predicate, timeout_s: float = 600.0) -> float:
    """Process events until ``predicate()``; returns the perf_counter time it became true."""
    end = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > end:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.001)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--per-head", action="store_true", help="record every head (the Run panel's default)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    import torch
    from PySide6.QtCore import QStandardPaths

    torch.set_num_threads(args.threads)
    QStandardPaths.setTestModeEnabled(True)
    from engine.backends.registry import load_backend
    from engine.interventions.caa import random_directions
    from engine.types import GenerationRequest
    from gui.app import make_app
    from gui.audio_output import NullOutput
    from gui.docks.steering_dock import ALPHA_SCALE
    from gui.main_window import MainWindow
    from gui.steer_listen_state import prefetch_grid, preview_steps

    app = make_app([sys.argv[0]])
    probe = load_backend(args.model, device="cpu")  # only for the sites' widths
    sv = random_directions(probe, concept="bench")
    family, model_id = probe.family, probe.model_id
    del probe

    window = MainWindow(model=args.model, output=NullOutput(lambda: 0.0))
    window.show()
    rd = window.run_dock
    rd.prompt.setPlainText("bass and drums")
    rd.steps.setText(str(args.steps))
    rd.duration.setText(str(args.duration))
    rd.per_head.setChecked(args.per_head)
    row = window.steering.add_vectors(sv, "bench")
    listen, player, bridge = window.listen, window.player, window.bridge
    player.loop.setChecked(False)
    played: list[tuple[float, object]] = []
    shown: list[tuple[float, object]] = []
    listen.clipPlayed.connect(lambda clip: played.append((time.perf_counter(), clip)))
    listen.abShown.connect(lambda pair: shown.append((time.perf_counter(), pair)))

    window.generate_from_panel()  # A: the unsteered run (loads and warms up the model)
    _wait(app, lambda: bool(window.workspace.history) and window.workspace.history[-1].status == "done")
    player.toggle_play()

    first, refined_from_move, refined_from_release, prefetched, adopted = [], [], [], [], []
    alpha = 0.0
    for i in range(args.repeats):
        alpha = 3.0 + 7.0 * i + 0.5  # a fresh α each time: never in the cache
        n_played, n_shown = len(played), len(shown)
        row.slider.setSliderDown(True)
        t0 = time.perf_counter()
        row.slider.setValue(round(alpha * ALPHA_SCALE))
        t1 = _wait(app, lambda n=n_played: len(played) > n)
        assert played[-1][1].kind == "preview"
        t2 = time.perf_counter()
        row.slider.setSliderDown(False)
        _wait(app, lambda n=n_shown: len(shown) > n)
        t3 = shown[-1][0]
        first.append(t1 - t0)
        refined_from_move.append(t3 - t0)
        refined_from_release.append(t3 - t2)
        grid = set(prefetch_grid(alpha))
        _wait(app, lambda g=grid: g <= set(listen.cached_alphas()) and bridge.idle)
        n_played = len(played)
        row.slider.setSliderDown(True)
        t4 = time.perf_counter()
        row.slider.setValue(round((alpha + 1.0) * ALPHA_SCALE))
        t5 = _wait(app, lambda n=n_played: len(played) > n)
        assert played[-1][1].kind == "prefetch" and bridge.idle
        prefetched.append(t5 - t4)
        n_shown, n_runs = len(shown), len(window.workspace.history)
        t6 = time.perf_counter()
        row.slider.setSliderDown(False)  # onto the prefetched α: its kept result becomes run B
        _wait(app, lambda n=n_shown: len(shown) > n)
        adopted.append(shown[-1][0] - t6)
        assert bridge.current_run_id is None and len(window.workspace.history) == n_runs + 1  # no generation

    window.shutdown()
    quick = preview_steps(GenerationRequest(prompt="x", steps=args.steps))
    med = statistics.median
    result = {
        "model": model_id, "family": family, "steps": args.steps, "preview_steps": quick,
        "duration_s": args.duration, "threads": args.threads, "repeats": args.repeats, "per_head": args.per_head,
        "move_to_first_preview_sound_s": med(first), "move_to_refined_sound_s": med(refined_from_move),
        "release_to_refined_sound_s": med(refined_from_release), "prefetched_move_to_sound_s": med(prefetched),
        "prefetched_release_to_run_s": med(adopted),
        "all": {"first": first, "refined_from_move": refined_from_move,
                "refined_from_release": refined_from_release, "prefetched": prefetched, "adopted": adopted},
        "goal_first_sound_s": GOAL_FIRST_SOUND_S, "meets_goal": med(first) <= GOAL_FIRST_SOUND_S,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
