"""``python main.py --self-test``: the in-process check the lead's entry point calls."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage

from gui import app
from tests.gui.conftest import TEST_MODEL


def _windows() -> set[int]:
    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow

    return {id(w) for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)}


def test_self_test_runs_a_generation_and_saves_a_screenshot(isolated_settings, tmp_path, capsys):
    shot = tmp_path / "shot.png"
    before = _windows()
    assert app.self_test(str(shot), model=TEST_MODEL) == 0
    assert _windows() <= before  # its window is deleted when it returns, not in a later event loop
    out = capsys.readouterr().out
    assert "self-test passed" in out and "heatmap changed at each of" in out
    img = QImage(str(shot))
    assert img.width() >= 800 and img.height() >= 600
    bits = img.convertToFormat(QImage.Format.Format_RGB32).constBits()
    assert len(np.unique(np.frombuffer(bits, dtype=np.uint32, count=img.width() * img.height()))) > 100


def test_self_test_reports_a_model_that_cannot_load(isolated_settings, capsys):
    before = _windows()
    assert app.self_test(None, model="nobody/no-such-model") == 1
    assert _windows() <= before
    err = capsys.readouterr().err
    assert "self-test FAILED" in err and "nobody/no-such-model" in err


def test_run_refuses_cleanly_without_a_display(monkeypatch, capsys):
    for var in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    assert app.run(["main.py"]) == 2
    assert "no display: use `python main.py analyze ...` (headless)" in capsys.readouterr().err
