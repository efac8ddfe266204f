"""Per-user settings (QSettings): preferences, recent files and the versioned dock layout."""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import asdict, dataclass, fields
from typing import Any

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QMainWindow

from engine.types import EngineError

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
    session_layout: bool = False  # opening a session also applies the dock layout saved with it

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
            default = getattr(prefs, f.name)
            if isinstance(default, bool):  # QSettings may hand back "true"/"false" strings
                raw = str(raw).lower() in ("true", "1") if isinstance(raw, str) else bool(raw)
            setattr(prefs, f.name, type(default)(raw))
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


def session_layout(window: QMainWindow) -> dict[str, Any]:
    """The dock layout as a session keeps it (JSON-ready): the layout version and Qt's state, base64."""
    state = bytes(window.saveState(LAYOUT_VERSION).data())
    return {"version": LAYOUT_VERSION, "state": base64.b64encode(state).decode("ascii")}


def read_session_layout(value: Any, name: str) -> QByteArray | None:
    """The dock state of a session's saved layout; None when it has none or one of another layout
    version (the window's docks changed since). A damaged one raises EngineError naming ``name``."""
    if value is None:
        return None
    try:
        if not isinstance(value, dict) or not isinstance(value.get("state"), str):
            raise TypeError("it is not a version and a state")
        if int(value.get("version", -1)) != LAYOUT_VERSION:
            return None
        return QByteArray(base64.b64decode(value["state"].encode("ascii"), validate=True))
    except (TypeError, ValueError, binascii.Error) as exc:
        raise EngineError(f"{name}: the saved dock layout is damaged ({exc}): save the session again") from exc
