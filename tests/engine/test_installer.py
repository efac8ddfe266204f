"""The installer's parts that run without a built bundle: runtime hook, smoke-test checks, desktop entry."""

from __future__ import annotations

import configparser
import ctypes
import ctypes.util
import importlib.util
import re
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


def _spec_parts(*names: str) -> dict:
    """The spec's top-level assignments and functions called ``names``, run in order (without
    PyInstaller's Analysis): the real exclusion rules, checked without building a bundle."""
    import ast
    import os

    tree = ast.parse((INSTALLER / "aiba_studio.spec").read_text())
    nodes = [n for n in tree.body
             if (isinstance(n, ast.FunctionDef) and n.name in names)
             or (isinstance(n, ast.Assign) and any(getattr(t, "id", "") in names for t in n.targets))]
    assert len(nodes) == len(names), f"the spec defines {[getattr(n, 'name', '') for n in nodes]}"
    scope = {"ROOT": ROOT, "sys": sys, "os": os, "Path": Path}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "aiba_studio.spec", "exec"), scope)
    return scope


def test_spec_keeps_the_model_families_the_pipelines_import():
    import ast

    import diffusers
    import transformers

    from engine.backends.registry import FAMILY_BY_CLASS

    kept = _spec_parts("TRANSFORMERS_KEPT", "DIFFUSERS_PIPELINES_KEPT")
    pipelines = {getattr(diffusers, n).__module__.split(".")[2] for n in [*FAMILY_BY_CLASS, "DiffusionPipeline"]}
    assert pipelines - kept["DIFFUSERS_PIPELINES_KEPT"] == set()
    site = Path(diffusers.__file__).parent / "pipelines"
    sources = [*sorted((ROOT / "engine").rglob("*.py")),
               *(p for name in FAMILY_BY_CLASS
                 for p in sorted((site / getattr(diffusers, name).__module__.split(".")[2]).glob("*.py")))]
    names = {alias.name for path in sources for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.ImportFrom) and node.module == "transformers" for alias in node.names}
    assert {"ClapModel", "VitsModel", "T5EncoderModel", "SpeechT5HifiGan"} <= names
    families = {getattr(transformers, n).__module__.split(".")[2] for n in names
                if getattr(transformers, n).__module__.startswith("transformers.models.")}
    assert families - kept["TRANSFORMERS_KEPT"] == set()
    # closed: a kept family's modules import (``from ..family``) only kept families; modular_*.py
    # are transformers' code-generation sources, never imported
    models = Path(transformers.__file__).parent / "models"
    imported = {other for family in kept["TRANSFORMERS_KEPT"] for py in (models / family).glob("*.py")
                if not py.name.startswith("modular_")
                for other in re.findall(r"^\s*from \.\.(\w+)", py.read_text(), re.M)}
    assert imported
    assert {f for f in imported if (models / f).is_dir()} - kept["TRANSFORMERS_KEPT"] == set()


def test_spec_drops_no_file_the_app_loads():
    import music21
    import torch
    from music21 import corpus

    from engine.data.corpus import COMPOSERS

    rules = _spec_parts("DROPPED_TREES", "DROPPED_FILES", "_corpus_kept", "CORPUS_KEPT", "KEPT_FILES",
                        "_dropped")
    dropped = rules["_dropped"]
    for rel in _smoke().REQUIRED:
        assert not dropped(rel), rel
    assert (Path(torch.__file__).parent / "bin" / "torch_shm_manager").is_file()  # import torch needs it
    assert not dropped("torch/bin/torch_shm_manager") and dropped("torch/bin/test_api")
    lib = Path(torch.__file__).parent / "lib"
    loaded = {Path(line.split()[-1]).name for line in Path("/proc/self/maps").read_text().splitlines()
              if line.split()[-1].startswith(str(lib))}
    assert "libtorch_cpu.so" in loaded
    assert [name for name in loaded if dropped(f"torch/lib/{name}")] == []
    site = Path(music21.__file__).resolve().parents[1]
    for composer, _ in COMPOSERS:
        paths = corpus.getComposer(composer)
        assert paths and not [p for p in paths if dropped(Path(p).resolve().relative_to(site).as_posix())]
    other = corpus.getComposer("beethoven")[0]
    assert dropped(Path(other).resolve().relative_to(site).as_posix())  # a score no draw can pick
    assert not dropped("music21/corpus/corpora.py")
    scl = Path(music21.__file__).resolve().parent / "scale" / "scala" / "scl"
    modules = [p.relative_to(site).as_posix() for p in scl.glob("*.py")]  # imported by music21.scale
    assert modules and not [m for m in modules if dropped(m)]
    assert dropped(next(scl.glob("*.scl")).relative_to(site).as_posix())
    assert dropped("torch/test/test_api") and dropped("PySide6/Qt/translations/qt_de.qm")


def test_contents_check_names_what_the_bundle_lacks(tmp_path):
    from engine.data.corpus import COMPOSERS

    smoke = _smoke()
    for rel in smoke.REQUIRED:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * 10)
    for composer, _ in COMPOSERS:
        (tmp_path / "music21" / "corpus" / composer).mkdir(parents=True)
        (tmp_path / "music21" / "corpus" / composer / "piece.mxl").write_bytes(b"x")
    assert smoke.contents_problem(tmp_path) is None
    assert smoke.bundle_size(tmp_path) == (10 * len(smoke.REQUIRED) + len(COMPOSERS),
                                           len(smoke.REQUIRED) + len(COMPOSERS))
    (tmp_path / "PySide6/Qt/plugins/iconengines/libqsvgicon.so").unlink()
    (tmp_path / "music21" / "corpus" / COMPOSERS[0][0] / "piece.mxl").rename(tmp_path / "x.txt")
    problem = smoke.contents_problem(tmp_path)
    assert "libqsvgicon.so" in problem and f"music21/corpus/{COMPOSERS[0][0]}/" in problem
