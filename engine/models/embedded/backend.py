"""Where the shipped embedded model lives, and ``load_embedded_backend`` for the registry."""

from __future__ import annotations

import os
from pathlib import Path

from engine.models.embedded import DEFAULT_MODEL_DIR_NAME
from engine.paths import resources_dir
from engine.types import EngineError

ENV_MODEL_DIR = "AIBA_EMBEDDED_MODEL_DIR"


def default_model_dir() -> Path:
    """``$AIBA_EMBEDDED_MODEL_DIR``, else ``resources/models/aiba-slakh-tiny`` of the install
    (the PyInstaller bundle root when frozen, the repository root otherwise)."""
    if os.environ.get(ENV_MODEL_DIR):
        return Path(os.environ[ENV_MODEL_DIR])
    return resources_dir() / "models" / DEFAULT_MODEL_DIR_NAME


def load_embedded_backend(device: str = "cpu", dtype: str = "float32", folder: str | Path | None = None):
    """The embedded model as an :class:`engine.backends.embedded.EmbeddedBackend`."""
    from engine.backends.embedded import EmbeddedBackend
    from engine.models.embedded.pipeline import MODEL_CONFIG_FILE, EmbeddedPipeline

    path = Path(folder) if folder is not None else default_model_dir()
    if not (path / MODEL_CONFIG_FILE).is_file():
        raise EngineError(f"the embedded model is missing from {path}; run "
                          f"`python main.py train-default --out {path}` to make it")
    return EmbeddedBackend(EmbeddedPipeline.from_pretrained(path), "embedded", device, dtype)
