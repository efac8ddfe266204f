"""A hub id that is not in the local Hugging Face cache fails at once: before torch, diffusers or
transformers are imported, with `hf download` and `snapshot_download` named (in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from engine.backends.registry import load_backend
from engine.types import EngineError
try:
    load_backend(sys.argv[1])
except EngineError as exc:
    message = str(exc)
else:
    message = None
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(json.dumps({"seconds": time.perf_counter() - t0, "message": message, "heavy": heavy}))
"""


def _probe(model_id: str, hub: Path) -> dict:
    env = dict(os.environ, HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="0", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", PROBE, model_id], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model_id", ["cvssp/audioldm2-music", "stabilityai/stable-audio-open-1.0",
                                      "someone/not-a-pipeline"])
def test_missing_hub_id_fails_before_heavy_imports(tmp_path: Path, model_id: str) -> None:
    hub = tmp_path / "hub"
    out = _probe(model_id, hub)
    message = out["message"]
    assert message is not None and "\n" not in message
    assert model_id in message
    assert str(hub / ("models--" + model_id.replace("/", "--"))) in message
    assert f"`hf download {model_id}`" in message
    assert f"huggingface_hub.snapshot_download({model_id!r})" in message
    assert "huggingface-cli" not in message
    assert out["heavy"] == [], f"imported {out['heavy']} before the missing-model message"
    assert out["seconds"] < 1.5, out["seconds"]  # ~0.1-0.3 s here; the old path took 13-50 s


def test_cached_snapshot_passes_the_fast_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    from engine.backends.registry import hub_snapshot_cached, require_hub_cache

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    model_id = "cvssp/audioldm2"
    assert not hub_snapshot_cached(model_id)
    snapshot = tmp_path / "models--cvssp--audioldm2" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    assert not hub_snapshot_cached(model_id)  # a snapshot without model_index.json is not a pipeline
    (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDM2Pipeline"}))
    assert hub_snapshot_cached(model_id)
    require_hub_cache(model_id)  # no error
