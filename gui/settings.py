"""Per-user settings (QSettings): preferences, recent files and the versioned dock layout."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QMainWindow

ORG, APP = "AIBA", "AIBA Studio"
LAYOUT_VERSION = 4  # 4: docks in scroll areas, Steering beside the heatmap (fits 1366x768)
MAX_RECENT = 10


@dataclass
class Preferences:
    """User preferences; stored under ``prefs/<field>``."""

    device: str = "cpu"
    audio_output: str = "auto"  # auto, sounddevice, null
    colormap: str = "viridis"
    memory_budget_mb: float = 2048.0
    autosave_minutes: float = 5.0

    def validate(self) -> list[str]:
        errors = []
        if self.audio_output not in ("auto", "sounddevice", "null"):
            errors.append(f"audio output {self.audio_output!r}: choose auto, sounddevice or null")
        if not 16.0 <= self.memory_budget_mb <= 1_000_000.0:
            errors.append("memory budget must be between 16 MB and 1 TB")
        if not 0.0 <= self.autosave_minutes <= 1440.0:
            errors.append("autosave interval must be between 0 (off) and 1440 minutes")
        return errors


def settings() -> QSettings:
    return QSettings(ORG, APP)


def load_preferences() -> Preferences:
    s = settings()
    prefs = Preferences()
    for f in fields(Preferences):
        raw = s.value(f"prefs/{f.name}")
        if raw is None:
            continue
        with contextlib.suppress(TypeError, ValueError):  # a damaged value keeps the default
            setattr(prefs, f.name, type(getattr(prefs, f.name))(raw))
    return prefs if not prefs.validate() else Preferences()


def save_preferences(prefs: Preferences) -> None:
    s = settings()
    for key, value in asdict(prefs).items():
        s.setValue(f"prefs/{key}", value)
    s.sync()


def recent_files() -> list[str]:
    value = settings().value("recent/files", [])
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in (value or [])][:MAX_RECENT]


def add_recent(path: str) -> list[str]:
    files = [path] + [p for p in recent_files() if p != path]
    s = settings()
    s.setValue("recent/files", files[:MAX_RECENT])
    s.sync()
    return files[:MAX_RECENT]


def save_layout(window: QMainWindow) -> None:
    s = settings()
    s.setValue("layout/version", LAYOUT_VERSION)
    s.setValue("layout/state", window.saveState(LAYOUT_VERSION))
    s.setValue("layout/geometry", window.saveGeometry())
    s.sync()


def restore_layout(window: QMainWindow) -> bool:
    """Restore the saved dock layout; False (and nothing changed) when absent or of another version."""
    s = settings()
    try:
        version = int(s.value("layout/version", -1))
    except (TypeError, ValueError):
        return False
    state, geometry = s.value("layout/state"), s.value("layout/geometry")
    if version != LAYOUT_VERSION or not isinstance(state, QByteArray):
        return False
    if isinstance(geometry, QByteArray):
        window.restoreGeometry(geometry)
    return bool(window.restoreState(state, LAYOUT_VERSION))
