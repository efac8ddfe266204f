"""The headless steering/patching commands end to end on the tiny AudioLDM2, and the evaluation maths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from engine.interventions.commands import (
    AblateOptions,
    CAAOptions,
    PatchOptions,
    SteerOptions,
    run_ablate,
    run_caa,
    run_patch,
    run_steer,
)
from engine.interventions.prompt_sets import counterfactual_sets, find_concept, steering_set
from engine.interventions.scorers import BandTemplateScorer, template_for
from engine.interventions.steer_eval import smoothness
from engine.types import EngineError

TINY = dict(model="tiny:audioldm2", steps=2, duration=1.0)


def test_patch_command_writes_eq9_impacts(tmp_path):
    path = run_patch(PatchOptions(concept="drums", out=str(tmp_path), prompt_set="embedded", max_pairs=1,
                                  layers="0,1,3", scorer="band-template", **TINY))
    data = json.loads(path.read_text())
    assert data["scorer"] == "band-template" and [r["layer"] for r in data["layers"]] == [0, 1, 3]
    t, s = data["sim_target_mean"], data["sim_source_mean"]
    assert t != s  # the tiny model's two prompts score differently
    for row in data["layers"]:
        assert row["impact"] == pytest.approx((row["sim_patched_mean"] - s) / (t - s))


def test_caa_steer_eval_and_ablate_commands(tmp_path):
    vec = run_caa(CAAOptions(concept="drums", out=str(tmp_path / "drums.safetensors"), positive=["drums and bass"],
                             negative=["piano and bass"], layers="0,1,2", **TINY))
    out = run_steer(SteerOptions(vectors=str(vec), prompt="bass", out=str(tmp_path / "steer"), alpha=20.0, **TINY))
    a, sr = sf.read(out / "steered.wav")
    b, _ = sf.read(out / "unsteered.wav")
    assert sr == 16000 and a.shape == b.shape
    ev = run_steer(SteerOptions(vectors=str(vec), prompt="bass", out=str(tmp_path / "eval"), eval_alphas="-20,0,20",
                                functional="1", **TINY))
    rows = {r["layer_set"]: r for r in json.loads((ev / "steer_eval.json").read_text())["rows"]}
    assert set(rows) == {"functional", "all", "all_but_functional"}
    assert rows["all_but_functional"]["sites"] == [s for s in rows["all"]["sites"] if s not in rows["functional"]["sites"]]
    for r in rows.values():
        assert r["delta_alignment"] == pytest.approx(r["alignment_mean"][-1] - r["alignment_mean"][0])
        assert r["preservation_mel_db"] >= 0 and "fad" not in r
        assert r["scorer_frechet_distance"] >= 0 and r["scorer_perceptual_distance"] >= 0  # the instrument scorer's
        assert np.allclose(np.mean(r["alignment_per_run"], axis=0), r["alignment_mean"])
    abl = run_ablate(AblateOptions(prompt="drums", out=str(tmp_path / "abl"), layers="0,1", per_layer=True, **TINY))
    runs = json.loads((abl / "ablate.json").read_text())["runs"]
    assert [r["layers"] for r in runs] == [[0], [1]]
    with pytest.raises(EngineError, match="unknown ablation"):
        run_ablate(AblateOptions(prompt="drums", out=str(tmp_path / "x"), mode="half", **TINY))
    with pytest.raises(EngineError, match="out of range"):
        run_steer(SteerOptions(vectors=str(vec), prompt="bass", out=str(tmp_path / "y"), alpha=1e6, **TINY))


def test_smoothness_and_band_scorer_against_references():
    curves = np.array([[0.0, 1.0, 3.0, 6.0], [0.0, 0.0, 0.0, 0.0]])
    assert smoothness(curves) == pytest.approx((np.std([1.0, 2.0, 3.0]) + 0.0) / 2)
    sr = 16000
    t = np.arange(sr) / sr
    low = np.sin(2 * np.pi * 80 * t)  # a bass-register tone
    scorer = BandTemplateScorer()
    assert scorer.similarity(low, sr, "bass") > scorer.similarity(low, sr, "flute")
    with pytest.raises(EngineError, match="instrument concepts"):
        template_for("happy music")


def test_shipped_prompt_sets():
    sets = counterfactual_sets()
    assert {"instruments", "vocals", "tempo", "mood", "genres", "embedded"} <= set(sets)
    for items in sets.values():
        for c in items:
            assert c.pairs and all(a != b for a, b in c.pairs)
    s = steering_set("piano")
    assert len(s.positive) == 50 == len(set(s.positive)) and len(s.evaluation) == 14
    assert find_concept("drums", "embedded").template == "Drums"
    with pytest.raises(EngineError, match="no counterfactual"):
        find_concept("kazoo")
