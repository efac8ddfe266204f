"""Screenshots of the main window during and after a run, for the docs.

``OMP_NUM_THREADS=1 python -m gui.screenshots --model embedded --out docs/img`` writes
``main-window-during-run.png`` (grabbed at the middle denoising step) and
``main-window-after-run.png`` (aggregate view, metrics tab, play cursor at 40 %). Runs offscreen
when there is no display; user settings are not touched (Qt test mode).
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
    window.shutdown()
    print(f"wrote {during} (step {grabbed[0] + 1 if grabbed else '?'}) and {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
