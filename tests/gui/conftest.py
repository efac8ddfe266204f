"""GUI test fixtures: isolated QSettings / app data, a real engine window shared per module, and
the Qt leak checks (:mod:`tests.gui.qt_leaks`) every GUI test runs under."""

from __future__ import annotations

import gc
import os

import pytest
import shiboken6
from PySide6.QtCore import QCoreApplication, QEvent, QSettings, QStandardPaths

from gui.settings import APP, ORG
from tests.gui.qt_leaks import (  # noqa: F401 (autouse fixtures and a hook, registered by name)
    pytest_runtest_teardown,
    qt_leak_check,
    qt_module_leak_check,
)

TEST_MODEL = "tiny:audioldm2"  # a real diffusers AudioLDM2 pipeline built from configs


def _isolate(home: str, mp: pytest.MonkeyPatch) -> None:
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        mp.setenv(var, os.path.join(home, var.lower()))
    QStandardPaths.setTestModeEnabled(True)
    QCoreApplication.setOrganizationName(ORG)
    QCoreApplication.setApplicationName(APP)
    QSettings(ORG, APP).clear()


@pytest.fixture
def isolated_settings(qapp, tmp_path, monkeypatch):
    """Fresh, private QSettings and app-data folders for one test."""
    _isolate(str(tmp_path), monkeypatch)
    yield
    QSettings(ORG, APP).clear()


def dispose(qapp, window) -> None:
    """Shut a window down and destroy it now (joins its engine thread; no late deletes).

    ``deleteLater`` outside an event loop waits for the next one to start, which would be some
    later test's ``waitSignal``: that test would delete this window (and release its model) in
    the middle of its own run. The deferred delete is sent here instead, and checked.
    """
    window.shutdown()
    assert window.bridge._thread.isFinished()
    window.close()
    window.deleteLater()
    qapp.processEvents()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert not shiboken6.isValid(window), "the window survived its deferred delete"
    gc.collect()


@pytest.fixture
def make_window(qapp):
    """``make_window(**kw)`` → a shown MainWindow (null audio); all are disposed at teardown."""
    from gui.audio_output import NullOutput
    from gui.main_window import MainWindow

    made = []

    def make(**kw):
        kw.setdefault("output", NullOutput())
        window = MainWindow(**kw)
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        dispose(qapp, window)


@pytest.fixture(scope="module")
def engine_window(qapp, tmp_path_factory):
    """One MainWindow with a real engine per test module; the engine thread is joined after."""
    from gui.audio_output import NullOutput
    from gui.main_window import MainWindow

    clock = {"t": 0.0}
    with pytest.MonkeyPatch.context() as mp:
        _isolate(str(tmp_path_factory.mktemp("home")), mp)
        window = MainWindow(model=TEST_MODEL, output=NullOutput(lambda: clock["t"]))
        window.test_clock = clock
        window.show()
        yield window
        dispose(qapp, window)
        QSettings(ORG, APP).clear()
