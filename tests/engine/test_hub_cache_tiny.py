"""Every tiny family loads offline from a Hugging Face hub-cache layout
(``models--org--name/snapshots/<rev>/`` under a temporary cache) through ``load_backend(hub id)``."""

from __future__ import annotations

import pytest

from engine.backends.registry import load_backend
from engine.backends.tiny import save_tiny

# ace_step and stable_audio_3 are covered in their own test modules (they share the saved folder)
FAMILIES = {"audioldm2": "aiba/tiny-audioldm2", "stable_audio": "aiba/tiny-stable-audio"}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_family_loads_from_a_hub_cache_layout_offline(family, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    org, name = FAMILIES[family].split("/")
    repo = tmp_path / "hub" / f"models--{org}--{name}"
    save_tiny(family, repo / "snapshots" / "c0ffee")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backend = load_backend(FAMILIES[family])
    assert backend.family == family and backend.revision == "c0ffee" and backend.model_id == FAMILIES[family]
    assert any(s.kind == "cross" for s in backend.sites())
