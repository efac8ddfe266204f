"""pyproject.toml's ranges and installer/constraints.txt (the tested set) agree with each other and
with the running environment; the licence metadata is an SPDX expression with its file."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CONSTRAINTS = ROOT / "installer" / "constraints.txt"


def _pins() -> dict[str, Version]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    extras = PROJECT["optional-dependencies"]
    return reqs + [Requirement(r) for extra in ("test", "cluster") for r in extras[extra]]


def test_every_dependency_is_pinned_inside_its_range() -> None:
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} has no pin in {CONSTRAINTS.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} not in {req}"
    assert "aiba-studio" not in pins


def test_ranges_not_pins_and_the_known_bad_pyside_excluded() -> None:
    reqs = {canonicalize_name(r.name): r.specifier for r in _requirements()}
    for name in ("torch", "diffusers", "transformers", "pyqtgraph", "pyside6-essentials"):
        assert not any(s.operator == "==" for s in reqs[name]), f"{name} is pinned exactly"
    assert not reqs["pyside6-essentials"].contains("6.12.0")  # aborts at exit with matplotlib
    assert reqs["pyside6-essentials"].contains("6.11.3")
    assert "platformdirs" in reqs and "hypothesis" in reqs


def test_torch_is_the_cpu_build_and_setup_uses_the_constraints() -> None:
    assert _pins()["torch"] == Version("2.13.0+cpu")
    assert "-c installer/constraints.txt" in (ROOT / "installer" / "setup.sh").read_text()


def test_installed_direct_dependencies_match_the_constraints() -> None:
    pins = _pins()
    for req in _requirements():
        installed = Version(metadata.version(req.name))
        assert installed == pins[canonicalize_name(req.name)], (
            f"{req.name} {installed} is installed but {CONSTRAINTS.name} says {pins[canonicalize_name(req.name)]}; "
            "regenerate it after testing the new set")


def test_license_is_spdx_with_its_file() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "AIBA Studio contributors" in text
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # PEP 639
    assert PROJECT["authors"] and PROJECT["urls"]
