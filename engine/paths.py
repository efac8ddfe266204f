"""Where AIBA Studio's files are: shipped resources (models, prompt sets, icons), the user cache
and the user data root (XDG, through platformdirs)."""

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


APP_NAME = "aiba-studio"
ENV_CACHE_DIR = "AIBA_CACHE_DIR"


def cache_dir() -> Path:
    """The user's cache folder for generated models: ``$AIBA_CACHE_DIR``, else platformdirs'
    user cache folder (``$XDG_CACHE_HOME/aiba-studio``, by default ``~/.cache/aiba-studio``)."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path(APP_NAME, appauthor=False)


def data_home() -> Path:
    """The user's data root (``$XDG_DATA_HOME``, by default ``~/.local/share``): where desktop
    entries (``applications/``) and icons (``icons/hicolor/``) go."""
    from platformdirs import user_data_path

    return user_data_path()
