"""engine.paths: the user cache and data folders follow XDG (platformdirs), $AIBA_CACHE_DIR wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import paths
from engine.backends import registry


@pytest.fixture
def xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """XDG folders under tmp_path, HOME elsewhere, no AIBA_CACHE_DIR."""
    monkeypatch.delenv(paths.ENV_CACHE_DIR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path


def test_cache_dir_follows_xdg_cache_home(xdg: Path) -> None:
    assert paths.cache_dir() == xdg / "xdg-cache" / "aiba-studio"
    assert registry.cache_dir() == xdg / "xdg-cache" / "aiba-studio"


def test_cache_dir_defaults_to_home_dot_cache(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert paths.cache_dir() == xdg / "home" / ".cache" / "aiba-studio"


def test_aiba_cache_dir_overrides_xdg(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.ENV_CACHE_DIR, str(xdg / "mine"))
    assert paths.cache_dir() == xdg / "mine"
    assert registry.cache_dir() == xdg / "mine"


def test_data_home_follows_xdg_data_home(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.data_home() == xdg / "xdg-data"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert paths.data_home() == xdg / "home" / ".local" / "share"
