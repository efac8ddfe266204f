"""GUI test fixtures: isolated QSettings / app data, a real engine window shared per module."""

from __future__ import annotations

import os

import pytest
from PySide6.QtCore import QCoreApplication, QSettings, QStandardPaths

from gui.settings import APP, ORG

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
        window.shutdown()
        assert window.bridge._thread.isFinished()
        window.deleteLater()
        QSettings(ORG, APP).clear()
