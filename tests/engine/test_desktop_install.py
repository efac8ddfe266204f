"""The desktop entry passes desktop-file-validate; the pip route's install/uninstall of the entry
and icon (engine.desktop_install) and installer/install-linux.sh leave nothing behind."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine import desktop_install

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "resources" / "desktop" / "aiba-studio.desktop"
ICON = ROOT / "resources" / "icons" / "aiba-studio.svg"


def _validate(path: Path) -> str:
    """desktop-file-validate's complaints (errors, warnings and hints); '' when clean."""
    tool = shutil.which("desktop-file-validate")
    assert tool, "desktop-file-utils must be installed (installer/setup.sh and .ci/run install it)"
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    report = (proc.stdout + proc.stderr).strip()
    return report or ("" if proc.returncode == 0 else f"exit status {proc.returncode}")


def _keys(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if "=" in line)


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*"))


def test_shipped_entry_is_valid_with_one_main_category() -> None:
    assert _validate(ENTRY) == ""  # also no "more than one main category" hint
    keys = _keys(ENTRY)
    assert keys["Categories"] == "AudioVideo;Audio;"
    assert keys["Icon"] == ICON.stem
    assert desktop_install.entry_template() == ENTRY
    assert desktop_install.icon_source() == ICON


def test_exec_argument_quotes_reserved_characters() -> None:
    assert desktop_install.exec_argument("/opt/aiba/bin/aiba-studio") == "/opt/aiba/bin/aiba-studio"
    assert desktop_install.exec_argument("/my apps/aiba-studio") == '"/my apps/aiba-studio"'
    assert desktop_install.exec_argument("/a$b/x") == '"/a\\\\$b/x"'  # \$ in the quote, escaped again
    assert desktop_install.exec_argument("/100%/x") == "/100%%/x"


INSTALL_PROBE = r"""
import json, sys
from pathlib import Path
from engine.desktop_install import install_desktop_entry
written = install_desktop_entry(Path(sys.argv[1]))
heavy = sorted(m for m in ("torch", "PySide6", "diffusers") if m in sys.modules)
print(json.dumps({"written": [str(p) for p in written], "heavy": heavy}))
"""


def test_install_and_uninstall_under_a_temporary_xdg_data_home(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "applications").mkdir(parents=True)
    other = data / "applications" / "other.desktop"
    other.write_text("[Desktop Entry]\nType=Application\nName=Other\nExec=true\n")
    launcher = tmp_path / "my apps" / "aiba-studio"
    env = dict(os.environ, XDG_DATA_HOME=str(data), HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-c", INSTALL_PROBE, str(launcher)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [], f"installing the menu entry imported {out['heavy']}"
    entry = data / "applications" / "aiba-studio.desktop"
    icon = data / "icons" / "hicolor" / "scalable" / "apps" / "aiba-studio.svg"
    assert out["written"] == [str(entry), str(icon)]
    assert _validate(entry) == ""
    keys = _keys(entry)
    assert shlex.split(keys["Exec"]) == [str(launcher)]
    assert keys["TryExec"] == str(launcher)
    assert keys["Name"] == "AIBA Studio" and keys["Icon"] == "aiba-studio"
    assert icon.read_bytes() == ICON.read_bytes()
    assert not (data / "applications" / "mimeinfo.cache").exists()

    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    assert desktop_install.uninstall_desktop_entry() == [entry, icon]
    assert _files_under(data) == [data / "applications", other]  # the icon folders went too
    assert desktop_install.uninstall_desktop_entry() == []  # again: nothing to do, no error


def _fake_checkout(tmp_path: Path) -> Path:
    """The files install-linux.sh reads, with a stand-in bundle launcher."""
    repo = tmp_path / "repo"
    (repo / "installer").mkdir(parents=True)
    shutil.copy(ROOT / "installer" / "install-linux.sh", repo / "installer")
    shutil.copytree(ROOT / "resources" / "desktop", repo / "resources" / "desktop")
    shutil.copytree(ROOT / "resources" / "icons", repo / "resources" / "icons")
    launcher = repo / "dist" / "aiba-studio" / "aiba-studio"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\necho aiba-studio-stand-in \"$@\"\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    return repo


def test_install_linux_sh_uninstall_leaves_nothing(tmp_path: Path) -> None:
    repo = _fake_checkout(tmp_path)
    prefix = tmp_path / "pre fix"
    script = repo / "installer" / "install-linux.sh"
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    run = subprocess.run(["bash", str(script), "--prefix", str(prefix)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    entry = prefix / "share" / "applications" / "aiba-studio.desktop"
    icon = prefix / "share" / "icons" / "hicolor" / "scalable" / "apps" / "aiba-studio.svg"
    assert _validate(entry) == ""
    exec_argv = shlex.split(_keys(entry)["Exec"])
    assert exec_argv == [str(prefix / "lib" / "aiba-studio" / "aiba-studio")]
    assert subprocess.run(exec_argv + ["--help"], capture_output=True, text=True).stdout.startswith(
        "aiba-studio-stand-in")
    assert icon.read_bytes() == ICON.read_bytes()
    assert (prefix / "bin" / "aiba-studio").resolve() == Path(exec_argv[0]).resolve()
    assert not (entry.parent / "mimeinfo.cache").exists()  # the entry has no MimeType to index
    (entry.parent / "mimeinfo.cache").write_text("[MIME Cache]\n")  # as an earlier version left it

    run = subprocess.run(["bash", str(script), "--prefix", str(prefix), "--uninstall"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert _files_under(prefix) == []
