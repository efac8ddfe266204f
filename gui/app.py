"""Application entry points: ``run(argv)`` opens the workstation, ``self_test()`` checks it works."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PySide6.QtGui import QIcon

NO_DISPLAY = "no display: use `python main.py analyze ...` (headless), or set DISPLAY / QT_QPA_PLATFORM"
SELF_TEST_STEPS = 6
SELF_TEST_DURATION = 0.5
SELF_TEST_TIMEOUT_S = 600


def has_display() -> bool:
    """True when Qt can open a window (a platform plugin is named, or X11 / Wayland is there)."""
    return any(os.environ.get(k) for k in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"))


def app_icon() -> QIcon:
    """The shipped scalable icon (``resources/icons/aiba-studio.svg``) as a QIcon."""
    from PySide6.QtGui import QIcon

    from engine.desktop_install import icon_source

    return QIcon(str(icon_source()))


def make_app(argv: Sequence[str]):
    """The QApplication with the organisation and application names QSettings uses, the shipped
    icon and the desktop file name (so taskbars match ``aiba-studio.desktop``)."""
    import pyqtgraph as pg
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from engine.paths import APP_NAME
    from gui.settings import APP, ORG

    app = QApplication.instance() or QApplication(list(argv))
    app.setOrganizationName(ORG)
    app.setApplicationName(APP)
    app.setWindowIcon(app_icon())
    QGuiApplication.setDesktopFileName(APP_NAME)
    pg.setConfigOptions(antialias=False, useOpenGL=False)
    return app


def _install_excepthook(window) -> None:
    """Unexpected exceptions in slots go to the log dock and a non-modal message, not an abort."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(text)
        try:
            window.show_error(f"internal error: {exc_type.__name__}: {exc}")
        except Exception:  # the window is gone: fall back to the default hook
            previous(exc_type, exc, tb)

    sys.excepthook = hook


def run(argv: Sequence[str]) -> int:
    """Open the workstation window and run the event loop; the exit code of the app."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", dest="gui_model", default="embedded")
    args, _ = parser.parse_known_args(list(argv[1:]))
    if not has_display():
        print(NO_DISPLAY, file=sys.stderr)
        return 2
    app = make_app(argv)
    from gui.main_window import MainWindow

    window = MainWindow(model=args.gui_model)
    window.setWindowIcon(app.windowIcon())
    _install_excepthook(window)
    app.aboutToQuit.connect(window.shutdown)
    window.show()
    return int(app.exec())


def _digest(array) -> str:
    return hashlib.sha1(array.tobytes()).hexdigest() if array is not None else ""


def _screenshot(app, window):
    """On a real display, what the screen shows of the window; offscreen, the window rendered."""
    if app.platformName() in ("xcb", "wayland"):
        return app.primaryScreen().grabWindow(window.winId())
    return window.grab()


def start_self_test_run(window, model: str) -> int | None:
    """Put the self-test's recipe in the Run panel (so the screenshot shows it) and generate it."""
    from engine.types import GenerationRequest

    request = GenerationRequest(
        prompt="bass and drums", steps=SELF_TEST_STEPS, duration=SELF_TEST_DURATION, per_head=True
    )
    window.run_dock.set_request(model, "cpu", request)
    return window.generate(model, "cpu", request)


def self_test(screenshot: str | None, model: str = "embedded") -> int:
    """Open the window, run a short generation, check the live views; 0 on success.

    Runs offscreen when there is no display. Prints what it checked; the reason on failure.
    """
    if not has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    app = make_app([sys.argv[0]])
    from PySide6.QtCore import QCoreApplication, QEvent, QEventLoop, QTimer

    from gui.audio_output import NullOutput
    from gui.main_window import MainWindow

    window = MainWindow(model=model, output=NullOutput())
    window.setWindowIcon(app.windowIcon())
    window.show()
    window.resize(1500, 950)  # screenshots at one size, whatever the (offscreen) screen's size
    shown: list[tuple[int, str]] = []
    outcome: dict[str, str] = {}
    loop = QEventLoop()

    def on_step(info) -> None:
        # the step the heatmap shows (following live it can be one ahead of ``info.step``);
        # two step signals showing the same step are one repaint
        step = window.workspace.selection.step
        if not shown or shown[-1][0] != step:
            shown.append((step, _digest(window.heatmap.image_array)))

    def on_end(kind: str, message: str = "") -> None:
        outcome.setdefault("kind", kind)
        outcome.setdefault("message", message)
        loop.quit()

    window.bridge.stepDone.connect(on_step)
    window.bridge.runFinished.connect(lambda _r: on_end("done"))
    window.bridge.runFailed.connect(lambda _i, m: on_end("failed", m))
    window.bridge.runCancelled.connect(lambda _i: on_end("cancelled"))
    t0 = time.perf_counter()
    if start_self_test_run(window, model) is None:
        print("self-test FAILED: the run could not start", file=sys.stderr)
        window.shutdown()
        return 1
    # a timer the self-test owns and stops: a bare QTimer.singleShot would stay pending after it
    # returns and call on_end minutes later, inside whatever runs next (the test suite)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(lambda: on_end("timeout"))
    deadline.start(SELF_TEST_TIMEOUT_S * 1000)
    loop.exec()
    deadline.stop()
    elapsed = time.perf_counter() - t0
    problems = []
    if outcome.get("kind") != "done":
        problems.append(f"the run ended as {outcome.get('kind')}: {outcome.get('message', '')}")
    if len(shown) < 2:
        problems.append(f"the heatmap showed only {len(shown)} live step(s)")
    for (s0, d0), (s1, d1) in zip(shown, shown[1:], strict=False):
        if d1 == d0 or not d1:
            problems.append(f"the heatmap did not change between steps {s0 + 1} and {s1 + 1}")
    run = window.workspace.current
    if run is None or run.result is None or len(run.result.audio) == 0:
        problems.append("no audio came back")
    elif window.player.output.duration <= 0:
        problems.append("the player did not load the audio")
    if window.windowIcon().pixmap(32, 32).isNull():
        problems.append("the window icon does not render (is Qt's SVG icon plugin missing?)")
    for _ in range(5):
        app.processEvents()
    if screenshot and not _screenshot(app, window).save(screenshot):
        problems.append(f"could not write the screenshot {screenshot}")
    window.shutdown()
    window.deleteLater()  # now, not when some later event loop starts (the next test's, in-process)
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    if problems:
        print("self-test FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(
        f"self-test passed on the {app.platformName()} platform: {model}, {SELF_TEST_STEPS} steps in {elapsed:.1f} s; heatmap changed at "
        f"each of {len(shown)} live repaints (steps {[s + 1 for s, _ in shown]}); audio "
        f"{len(run.result.audio) / run.result.sample_rate:.2f} s" + (f"; screenshot {screenshot}" if screenshot else "")
    )
    return 0
