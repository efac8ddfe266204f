"""The user's menu entry and icon for a pip install (what ``installer/install-linux.sh`` does
for the bundle): ``install_desktop_entry`` writes them under ``$XDG_DATA_HOME``,
``uninstall_desktop_entry`` removes them and leaves nothing behind.

Importable without Qt or torch. The entry declares no MIME types, so no ``mimeinfo.cache`` is
written (``update-desktop-database`` is not needed).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from engine.paths import APP_NAME, data_home, resources_dir
from engine.types import EngineError

ENTRY_NAME = f"{APP_NAME}.desktop"
ICON_NAME = f"{APP_NAME}.svg"
_RESERVED = set(' \t\n"\'\\><~|&;$*?#()`')


def entry_template() -> Path:
    """The shipped desktop entry (``resources/desktop/aiba-studio.desktop``)."""
    return resources_dir() / "desktop" / ENTRY_NAME


def icon_source() -> Path:
    """The shipped scalable icon (``resources/icons/aiba-studio.svg``)."""
    return resources_dir() / "icons" / ICON_NAME


def installed_paths(home: Path | None = None) -> tuple[Path, Path]:
    """Where the entry and the icon go: ``applications/`` and ``icons/hicolor/scalable/apps/``."""
    home = data_home() if home is None else Path(home)
    return home / "applications" / ENTRY_NAME, home / "icons" / "hicolor" / "scalable" / "apps" / ICON_NAME


def default_launcher() -> Path:
    """The ``aiba-studio`` launcher of this install: the bundle's executable when frozen, else the
    console script beside this Python, else the one on ``PATH``."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).resolve()
    beside = Path(sys.executable).parent / APP_NAME
    if beside.is_file():
        return beside
    found = shutil.which(APP_NAME)
    if found:
        return Path(found)
    raise EngineError(f"no {APP_NAME} launcher beside {sys.executable} or on PATH; "
                      "install the package (pip install .) or pass the launcher path")


def _escape_string(value: str) -> str:
    """A desktop-entry string value: backslash and control characters escaped."""
    return (value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
            .replace("\r", "\\r"))


def exec_argument(path: str) -> str:
    """``path`` as one argument of an ``Exec`` key (quoted when it holds reserved characters,
    ``%`` doubled), already escaped as a string value."""
    arg = path.replace("%", "%%")
    if any(c in _RESERVED for c in path):
        inner = "".join("\\" + c if c in '"`$\\' else c for c in arg)
        arg = f'"{inner}"'
    return _escape_string(arg)


def entry_text(launcher: Path) -> str:
    """The shipped entry with ``Exec`` and ``TryExec`` pointing at ``launcher`` (absolute), so
    the menu works without the launcher's folder on ``PATH``."""
    lines = []
    for line in entry_template().read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + exec_argument(str(launcher))
        elif line.startswith("TryExec="):
            line = "TryExec=" + _escape_string(str(launcher))
        lines.append(line)
    return "\n".join(lines) + "\n"


def install_desktop_entry(launcher: Path | None = None, home: Path | None = None) -> list[Path]:
    """Write the menu entry and the hicolor icon for this user; returns the two files written."""
    launcher = (default_launcher() if launcher is None else Path(launcher)).absolute()
    entry, icon = installed_paths(home)
    text = entry_text(launcher)
    for path in (entry, icon):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_name(entry.name + ".new")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(entry)
    shutil.copyfile(icon_source(), icon)
    return [entry, icon]


def uninstall_desktop_entry(home: Path | None = None) -> list[Path]:
    """Remove the entry and the icon, then the folders that became empty (up to the data root);
    returns the files removed."""
    root = data_home() if home is None else Path(home)
    removed = []
    for path in installed_paths(root):
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
        folder = path.parent
        while folder != root and root in folder.parents and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    return removed
