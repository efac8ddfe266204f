"""Screenshots of the main window during and after a run, for the docs.

``OMP_NUM_THREADS=1 python -m gui.screenshots --model embedded --out docs/img`` writes
``main-window-during-run.png`` (grabbed at the middle denoising step) and
``main-window-after-run.png`` (aggregate view, metrics tab, play cursor at 40 %), then the
window at laptop and desktop sizes, ``window-1366x768.png`` and ``window-1920x1080.png``. With
``--steering-preview`` it writes ``steering-preview.png`` instead: the Steering dock (floating)
while a dragged α slider's preview plays, CAA vectors from the embedded prompt set's first
concept. Runs offscreen when there is no display; user settings are not touched (Qt test mode).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--prompt", default="bass and drums")
    parser.add_argument("--steering-preview", action="store_true", help="only the steering-preview.png shot")
    parser.add_argument("--window-sizes", default="1366x768,1920x1080",
                        help="after the run, the whole window at these sizes: window-WxH.png")
    args = parser.parse_args(argv)
    from gui.app import has_display, make_app

    if not has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QEventLoop, QStandardPaths

    QStandardPaths.setTestModeEnabled(True)
    app = make_app([sys.argv[0]])
    from gui.audio_output import NullOutput
    from gui.main_window import MainWindow

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    window = MainWindow(model=args.model, output=NullOutput())
    window.show()
    window.resize(1500, 950)  # screenshots at one size, whatever the (offscreen) screen's size
    loop = QEventLoop()
    ended: dict[str, str] = {}
    during = out / "main-window-during-run.png"
    grabbed: list[int] = []

    def on_step(info) -> None:
        if info.step >= args.steps // 2 and not grabbed:
            grabbed.append(info.step)
            window.grab().save(str(during))

    window.bridge.stepDone.connect(on_step)
    window.bridge.runFinished.connect(lambda _r: (ended.setdefault("end", "done"), loop.quit()))
    window.bridge.runFailed.connect(lambda _i, m: (ended.setdefault("end", m), loop.quit()))
    window.run_dock.prompt.setPlainText(args.prompt)
    window.run_dock.steps.setText(str(args.steps))
    window.run_dock.duration.setText(str(args.duration))
    if args.steering_preview:
        return steering_preview(app, window, out / "steering-preview.png")
    window.generate_from_panel()
    loop.exec()
    if ended.get("end") != "done":
        print(f"run failed: {ended.get('end')}", file=sys.stderr)
        window.shutdown()
        return 1
    run = window.workspace.current
    tokens = run.tokens_for(window.workspace.selection.site or "")
    window.workspace.select(mode="aggregate", tokens=(1,) if len(tokens) > 1 else None, follow_live=False)
    window.metrics.raise_()
    window.player.seek(run.duration() * 0.4)
    for _ in range(10):
        app.processEvents()
    after = out / "main-window-after-run.png"
    window.grab().save(str(after))
    window.overview.raise_()  # the laptop shots: the default tabs (Layer x step overview in front)
    sizes = []
    for size in args.window_sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        window.resize(w, h)
        for _ in range(20):
            app.processEvents()
        sizes.append(out / f"window-{w}x{h}.png")
        window.grab().save(str(sizes[-1]))
    window.shutdown()
    print(f"wrote {during} (step {grabbed[0] + 1 if grabbed else '?'}), {after}, " + ", ".join(map(str, sizes)))
    return 0


def steering_preview(app, window, path: Path) -> int:
    """Compute CAA vectors, play the unsteered run, drag the α slider and grab the Steering dock
    when the preview plays."""
    import time

    def wait(predicate, timeout_s: float = 900.0) -> None:
        end = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > end:
                raise TimeoutError("the window did not get there in time")
            app.processEvents()
            time.sleep(0.005)

    dock = window.steering
    dock.fill_from.setCurrentIndex(dock.fill_from.findText("embedded: drums"))
    dock.job.run_button.click()
    wait(lambda: bool(dock.rows) or not dock.job.running)
    if not dock.rows:
        print(f"CAA failed: {dock.job.message.text()}", file=sys.stderr)
        window.shutdown()
        return 1
    window.steering.auto.setChecked(False)
    window.generate_from_panel()
    wait(lambda: bool(window.workspace.history) and window.workspace.history[-1].status == "done")
    window.player.toggle_play()
    window.steering.auto.setChecked(True)
    dock.setFloating(True)
    dock.resize(560, 640)
    slider = dock.rows[0].slider
    slider.setSliderDown(True)
    slider.setValue(40)  # α = 4.0
    wait(lambda: window.listen.last_clip is not None and window.listen.last_clip.kind == "preview")
    for _ in range(10):
        app.processEvents()
    dock.grab().save(str(path))
    slider.setSliderDown(False)
    window.shutdown()
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
