"""Where AIBA Studio's shipped resources are: models, prompt sets, icons."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_RESOURCES_DIR = "AIBA_RESOURCES_DIR"


def resources_dir() -> Path:
    """``$AIBA_RESOURCES_DIR``, else ``resources/`` of the install: the PyInstaller bundle root when
    frozen; beside the ``engine`` package otherwise (the repository, or site-packages, where the
    wheel installs ``resources`` as a data package)."""
    if os.environ.get(ENV_RESOURCES_DIR):
        return Path(os.environ[ENV_RESOURCES_DIR])
    frozen = getattr(sys, "_MEIPASS", None)
    root = Path(frozen) if frozen else Path(__file__).resolve().parents[1]
    return root / "resources"
