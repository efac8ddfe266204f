"""The installer's parts that run without a built bundle: runtime hook, smoke-test checks, desktop entry."""

from __future__ import annotations

import configparser
import ctypes
import ctypes.util
import importlib.util
import runpy
import shutil
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "installer"


def _smoke():
    spec = importlib.util.spec_from_file_location("aiba_smoke_test", INSTALLER / "smoke_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _system_portaudio() -> Path:
    name = ctypes.util.find_library("portaudio")
    assert name, "libportaudio2 must be installed (installer/setup.sh installs it)"
    for folder in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib", "/lib"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise AssertionError(f"{name} not found in the usual library folders")


def test_runtime_hook_finds_bundled_portaudio_first(tmp_path, monkeypatch):
    import sounddevice  # loads the system PortAudio before the hook is installed

    bundled = tmp_path / "libportaudio.so.2"
    shutil.copy(_system_portaudio(), bundled)
    original = ctypes.util.find_library
    expected_m = original("m")
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", original)  # restored after the test
    runpy.run_path(str(INSTALLER / "rthooks" / "pyi_rth_aiba_libs.py"))
    assert ctypes.util.find_library("portaudio") == str(bundled)
    assert ctypes.util.find_library("m") == expected_m  # not in the bundle: the system's answer
    loaded = _smoke().portaudio_version(Path(ctypes.util.find_library("portaudio")))
    assert loaded == sounddevice.get_portaudio_version()[1]  # the same library the system serves


def test_screenshot_check_tells_blank_from_real(tmp_path):
    from matplotlib.image import imsave

    smoke = _smoke()
    flat = tmp_path / "flat.png"
    imsave(flat, np.full((400, 600, 3), 0.9))
    assert "blank" in smoke.screenshot_problem(flat)
    small = tmp_path / "small.png"
    imsave(small, np.random.default_rng(0).random((100, 100, 3)))
    assert "only 100x100" in smoke.screenshot_problem(small)
    busy = tmp_path / "busy.png"
    imsave(busy, np.random.default_rng(1).random((400, 600, 3)))
    assert smoke.screenshot_problem(busy) is None
    assert "no screenshot" in smoke.screenshot_problem(tmp_path / "missing.png")


def test_compare_maps_accepts_equal_and_names_the_differing_array():
    smoke = _smoke()
    rng = np.random.default_rng(0)
    a = {"aggregate": rng.random((3, 32, 16)).astype(np.float32), "tokens": np.array(["bass", "drums"])}
    smoke.compare_maps(a, {k: v.copy() for k, v in a.items()})
    b = {k: v.copy() for k, v in a.items()}
    b["aggregate"][1, 2, 3] += 0.01
    with pytest.raises(smoke.SmokeFailure, match=r"aggregate: .* up to 0\.01"):
        smoke.compare_maps(a, b)
    c = dict(a, tokens=np.array(["bass", "piano"]))
    with pytest.raises(smoke.SmokeFailure, match="tokens"):
        smoke.compare_maps(a, c)
    with pytest.raises(smoke.SmokeFailure, match="keys differ"):
        smoke.compare_maps(a, {"aggregate": a["aggregate"]})


def test_desktop_entry_matches_the_entry_point_and_icon():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(ROOT / "resources" / "desktop" / "aiba-studio.desktop")
    desk = entry["Desktop Entry"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert desk["Type"] == "Application"
    assert desk["Exec"].split()[0] in scripts
    assert desk["Categories"].endswith(";")
    icon = ROOT / "resources" / "icons" / f"{desk['Icon']}.svg"
    root = ET.parse(icon).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox") == "0 0 256 256"


def test_installer_extra_is_declared():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("pyinstaller>=") for req in extras["installer"])
