"""The engine never imports Qt: import every engine module in a fresh interpreter and check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, json, pkgutil, sys
import engine
names = sorted(m.name for m in pkgutil.walk_packages(engine.__path__, "engine."))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # report, do not hide
        failed[name] = f"{type(exc).__name__}: {exc}"
qt = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "PySide2", "shiboken6", "pyqtgraph"))
print(json.dumps({"modules": names, "qt": qt, "failed": failed}))
"""


def test_engine_imports_no_qt():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "",
                                                       "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "engine.backends.registry" in report["modules"]
    assert "engine.probe.recorder" in report["modules"]
    assert report["failed"] == {}
    assert report["qt"] == []
