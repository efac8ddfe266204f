"""End to end under Xvfb: a real X11 window runs a generation, and the X server shows it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from engine.paths import cache_dir

ROOT = Path(__file__).resolve().parents[2]


def _free_display() -> int:
    for n in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number between :90 and :139")


def test_self_test_in_a_real_x11_window(tmp_path):
    xvfb = shutil.which("Xvfb")
    assert xvfb, "Xvfb is missing: install the xvfb package (installer/setup.sh does)"
    display = _free_display()
    server = subprocess.Popen([xvfb, f":{display}", "-screen", "0", "1500x950x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{display}").exists():
            assert server.poll() is None, "Xvfb exited at start"
            assert time.monotonic() < deadline, "Xvfb did not start in 20 s"
            time.sleep(0.1)
        shot = tmp_path / "window.png"
        env = dict(os.environ, DISPLAY=f":{display}", QT_QPA_PLATFORM="xcb", OMP_NUM_THREADS="1",
                   HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
                   AIBA_CACHE_DIR=str(cache_dir()))  # the real cache: HOME is redirected
        proc = subprocess.run([sys.executable, "main.py", "--self-test", "--screenshot", str(shot)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "xcb" in proc.stdout or "xcb" in proc.stderr, "the self-test did not run on the X11 platform"
        from PySide6.QtGui import QImage

        image = QImage(str(shot))
        assert not image.isNull() and image.width() > 400 and image.height() > 300
        ptr = image.convertToFormat(QImage.Format.Format_RGB32).constBits()
        pixels = np.frombuffer(ptr, dtype=np.uint8).reshape(image.height(), image.width(), 4)
        # a grab of an unexposed window is uniformly black; a drawn one has text, plots and colour maps
        assert pixels[..., :3].std() > 10
        assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 200
    finally:
        server.terminate()
        server.wait(timeout=10)
