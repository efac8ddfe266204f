"""`analyze` end to end on the newer tiny families: the folder the GUI opens, with each context."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.analyze import AnalyzeOptions, analyze

CONTEXTS = {"ace_step": ["", "_lyrics"], "stable_audio_3": [""], "longcat": [""]}


@pytest.mark.parametrize("family", list(CONTEXTS))
def test_analyze_writes_maps_for_every_context(family, tmp_path):
    out = analyze(AnalyzeOptions(model=f"tiny:{family}", prompt="funky bass and drums", steps=2, duration=0.5,
                                 guidance=3.0, out=str(tmp_path / family), figures=False))
    data = np.load(out / "attention.npz")
    for suffix in CONTEXTS[family]:
        tokens = list(data[f"tokens{suffix}"])
        assert data[f"aggregate{suffix}"].shape == (len(tokens), 128, 64)
        assert np.isfinite(data[f"aggregate{suffix}"]).all() and data[f"aggregate{suffix}"].max() > 0
    assert "Ġbass" in list(data["tokens"]) or "▁bass" in list(data["tokens"])
    assert not any(k.startswith("aggregate_") and k[len("aggregate"):] not in CONTEXTS[family] for k in data.files)
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"]["family"] == family and (out / "audio.wav").stat().st_size > 44
