"""Fail a test that leaves Qt threads or timers running behind it.

A ``QThread`` still running, a ``QTimer`` still active or a ``QTimer.singleShot`` still pending
after a test's teardown keeps calling into objects of a finished test: at best a stray repaint, at
worst a segfault or an abort ("QThread: Destroyed while thread is still running") in some later,
unrelated test. :func:`qt_leak_check` (per test) and :func:`qt_module_leak_check` (per test module,
for module-scoped windows) are autouse fixtures, and :func:`pytest_runtest_teardown` extends
pytest-qt's ``qt_log_level_fail`` to the teardown (all imported into ``tests/gui/conftest.py``).

How objects are attributed to a scope: from the first watch on, ``QThread.start``,
``QTimer.__init__``, ``QTimer.start`` and ``QTimer.singleShot`` are wrapped and report to every
open watch. A timer made in the scope must be stopped (or deleted) by its end; a single-shot timer
*started* in the scope (a debounce of a shared window, say) must have fired or been stopped, or
it would fire inside the next test; repeating timers of longer-lived objects are their state. A test's
watch opens before its function-scoped fixtures are set up and closes after they are torn down
(autouse fixtures come first in their scope), so module-scoped fixtures (the shared engine window)
belong to the module's watch. Threads and timers made by Qt's C++ code are not seen; threads of
``QThreadPool.globalInstance()`` are counted. Weak references only: a leak check must not keep an
object alive that would otherwise have been deleted (and stopped) with its parent.
"""

from __future__ import annotations

import re
import sys
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import shiboken6
from PySide6.QtCore import QObject, QThread, QThreadPool, QTimer, QtMsgType, qInstallMessageHandler

_HERE = __file__
_IMMINENT_S = 0.25  # single shots due this soon get a chance to fire before they count as leaks


def _origin() -> str:
    """``file:line`` of the code that made the call (the first frame outside this module)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename == _HERE:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _describe(obj: QObject) -> str:
    """Class and objectName of ``obj`` and of its parents: ``QTimer < PlayerDock 'dock_player'``."""
    parts = []
    node: QObject | None = obj
    while node is not None and len(parts) < 4:
        name = node.objectName()
        parts.append(type(node).__name__ + (f" {name!r}" if name else ""))
        node = node.parent()
    return " < ".join(parts)


@dataclass
class _Shot:
    """One ``QTimer.singleShot`` call: when it is due, whether it fired, its context object."""

    due: float
    origin: str
    context: weakref.ref | None
    fired: bool = False
    cancelled: bool = False

    def pending(self) -> bool:
        if self.fired or self.cancelled:
            return False
        if self.context is not None:  # Qt drops the call when its context object is deleted
            ctx = self.context()
            return ctx is not None and shiboken6.isValid(ctx)
        return True


def _active(refs: list[tuple[weakref.ref, str]]) -> list[tuple[QTimer, str]]:
    out, seen = [], set()
    for ref, origin in refs:
        t = ref()
        if t is not None and id(t) not in seen and shiboken6.isValid(t) and t.isActive():
            seen.add(id(t))
            out.append((t, origin))
    return out


@dataclass
class _Watch:
    """What was started or created while one scope (a test, a module) was open."""

    label: str
    threads: list[tuple[weakref.ref, str]] = field(default_factory=list)
    timers: list[tuple[weakref.ref, str]] = field(default_factory=list)
    armed: list[tuple[weakref.ref, str]] = field(default_factory=list)  # single-shot QTimers started
    shots: list[_Shot] = field(default_factory=list)
    pool_busy: int = 0

    def running_threads(self) -> list[tuple[QThread, str]]:
        out = []
        for ref, origin in self.threads:
            th = ref()
            if th is not None and shiboken6.isValid(th) and th.isRunning():
                out.append((th, origin))
        return out

    def active_timers(self) -> list[tuple[QTimer, str]]:
        return _active(self.timers)

    def armed_timers(self) -> list[tuple[QTimer, str]]:
        """Single-shot timers started in this scope (whoever made them) that have not fired."""
        made = {id(t) for t, _ in self.active_timers()}
        return [(t, o) for t, o in _active(self.armed) if t.isSingleShot() and id(t) not in made]

    def pending_shots(self) -> list[_Shot]:
        return [s for s in self.shots if s.pending()]


_open: list[_Watch] = []
_in_single_shot: list[_Shot] = []
_installed = False


def _install() -> None:
    """Wrap ``QThread.start``, ``QTimer.__init__`` and ``QTimer.singleShot`` (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    start, init, single_shot, timer_start = QThread.start, QTimer.__init__, QTimer.singleShot, QTimer.start

    def thread_start(self: QThread, *args: Any) -> None:
        origin = _origin()
        for watch in _open:
            watch.threads.append((weakref.ref(self), origin))
        start(self, *args)

    def timer_init(self: QTimer, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if _in_single_shot:  # PySide's own timer behind a single shot: followed as the shot
            return
        origin = _origin()
        for watch in _open:
            watch.timers.append((weakref.ref(self), origin))

    def armed_start(self: QTimer, *args: Any) -> None:
        timer_start(self, *args)
        if self.isSingleShot() and not _in_single_shot:
            origin = _origin()
            for watch in _open:
                watch.armed.append((weakref.ref(self), origin))

    def timer_single_shot(msec: Any, *rest: Any) -> None:
        functor = rest[-1] if rest else None
        if not _open or not callable(functor):  # (msec, receiver, "member") cannot be followed
            single_shot(msec, *rest)
            return
        ms = msec.total_seconds() * 1000 if hasattr(msec, "total_seconds") else float(msec)
        context = next((a for a in rest[:-1] if isinstance(a, QObject)), None)
        shot = _Shot(time.monotonic() + ms / 1000, _origin(),
                     weakref.ref(context) if context is not None else None)

        def fire() -> None:
            if shot.cancelled:
                return
            shot.fired = True
            functor()

        for watch in _open:
            watch.shots.append(shot)
        _in_single_shot.append(shot)
        try:
            single_shot(msec, *rest[:-1], fire)
        finally:
            _in_single_shot.pop()

    QThread.start = thread_start
    QTimer.__init__ = timer_init
    QTimer.start = armed_start
    QTimer.singleShot = staticmethod(timer_single_shot)


def _let_imminent_shots_fire(shots: list[_Shot]) -> None:
    """Run the event loop briefly when the pending single shots are all due within moments."""
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtTest import QTest

    if not shots or QCoreApplication.instance() is None:
        return
    now = time.monotonic()
    if max(s.due for s in shots) - now > _IMMINENT_S:
        return
    deadline = now + 2 * _IMMINENT_S
    while any(s.pending() for s in shots) and time.monotonic() < deadline:
        QTest.qWait(10)


def _let_imminent_timers_fire(armed: list[tuple[QTimer, str]]) -> None:
    """The same for single-shot QTimers (a 0 ms deferred call started at the test's last line)."""
    from PySide6.QtTest import QTest

    if not armed or max(t.remainingTime() for t, _ in armed) > _IMMINENT_S * 1000:
        return
    deadline = time.monotonic() + 2 * _IMMINENT_S
    while time.monotonic() < deadline and any(shiboken6.isValid(t) and t.isActive() for t, _ in armed):
        QTest.qWait(10)


def _report(watch: _Watch) -> list[str]:
    """The leaks of a closed watch, one line each; stops what it finds so later tests run clean."""
    problems = []
    for th, origin in watch.running_threads():
        problems.append(f"QThread still running: {_describe(th)}, started at {origin} "
                        "(quit() it and wait() for it in the code that owns it, or in the fixture)")
        th.quit()
        th.wait(10_000)
    for t, origin in watch.active_timers():
        problems.append(f"QTimer still active: {_describe(t)} (interval {t.interval()} ms), created at "
                        f"{origin} (stop it when its owner shuts down)")
        t.stop()
    armed = watch.armed_timers()
    _let_imminent_timers_fire(armed)
    for t, origin in ((t, o) for t, o in armed if shiboken6.isValid(t) and t.isActive()):
        problems.append(f"single-shot QTimer started by this test still pending: {_describe(t)} (due in "
                        f"{t.remainingTime()} ms), started at {origin} (it would fire in a later test: "
                        "wait for what it triggers, or stop it)")
        t.stop()
    shots = watch.pending_shots()
    _let_imminent_shots_fire(shots)
    for shot in (s for s in shots if s.pending()):
        left = shot.due - time.monotonic()
        problems.append(f"QTimer.singleShot still pending (due in {left:.1f} s), called at {shot.origin} "
                        "(use a QTimer you can stop, or give the call a context object that dies with it)")
        shot.cancelled = True
    pool = QThreadPool.globalInstance()
    if pool.activeThreadCount() > watch.pool_busy:
        problems.append(f"{pool.activeThreadCount()} QThreadPool runnable(s) still running "
                        "(waitForDone() before the test ends)")
        pool.waitForDone(10_000)
    return problems


@contextmanager
def watching(label: str) -> Iterator[_Watch]:
    """Follow the Qt threads and timers made inside the block; fail when some outlive it."""
    _install()
    watch = _Watch(label, pool_busy=QThreadPool.globalInstance().activeThreadCount())
    _open.append(watch)
    try:
        yield watch
    finally:
        _open.remove(watch)
    problems = _report(watch)
    if problems:
        pytest.fail(f"{label} leaked Qt objects that keep running:\n  " + "\n  ".join(problems), pytrace=False)


_FAIL_TYPES = {
    "CRITICAL": (QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg),
    "WARNING": (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg),
    "DEBUG": (QtMsgType.QtDebugMsg, QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg),
    "INFO": tuple(QtMsgType),
}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """pytest-qt applies ``qt_log_level_fail`` up to the test's call only; a Qt warning while the
    fixtures are torn down (a window shutting down, a thread ending) fails the test here, with the
    same level and ``qt_log_ignore`` patterns."""
    fail_types = _FAIL_TYPES.get(str(item.config.getini("qt_log_level_fail")).upper(), ())
    ignore = [re.compile(p) for p in item.config.getini("qt_log_ignore")]
    caught: list[tuple[QtMsgType, str]] = []

    def handler(msg_type: QtMsgType, _context: object, message: str) -> None:
        caught.append((msg_type, message))
        sys.stderr.write(f"{msg_type.name}: {message}\n")

    previous = qInstallMessageHandler(handler)
    try:
        result = yield
    finally:
        qInstallMessageHandler(previous)
    bad = [f"{t.name}: {m}" for t, m in caught if t in fail_types and not any(r.search(m) for r in ignore)]
    if bad:
        pytest.fail("Qt messages during teardown:\n  " + "\n  ".join(bad), pytrace=False)
    return result


@pytest.fixture(autouse=True)
def qt_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when it leaves a QThread running, a QTimer active or a single shot pending."""
    with watching(f"test {request.node.name}"):
        yield


@pytest.fixture(scope="module", autouse=True)
def qt_module_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """The same for module-scoped fixtures (a shared window), checked after the module's teardown."""
    with watching(f"module {request.module.__name__}"):
        yield
