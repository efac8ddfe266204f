"""Causal-freezing sweep, the compute-matched comparison and the ``convergence`` / ``analyze --lsac``
commands, on the tiny Stable Audio and AudioLDM2 pipelines."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

import main
from engine.convergence.compare import attention_saving, call_flops, matched_steps, paired_stats
from engine.convergence.diagnostics import SiteShape
from engine.convergence.freeze import default_freeze_steps, freeze_sweep, write_sweep
from engine.convergence.lsac import LSAC, with_lsac
from engine.convergence.quality import waveform_distance
from engine.types import EngineError, GenerationRequest


def _req(**kw) -> GenerationRequest:
    base = {"prompt": "A hammer hitting", "steps": 3, "duration": 0.1, "guidance": 3.0, "seed": 4,
            "capture": False}
    return GenerationRequest(**{**base, **kw})


def test_freeze_sweep_heatmaps_and_files(sao, tmp_path):
    sites = ["transformer_blocks.0.attn1", "transformer_blocks.1.attn2"]
    sweep = freeze_sweep(sao, _req(), sites, freeze_steps=[0, 2])
    mel, wave = sweep.metrics["mel_distance"], sweep.metrics["wave_distance"]
    assert mel.shape == (2, 2) and sweep.freeze_steps == [0, 2]
    # freezing at the last step changes nothing; freezing from step 0 moves the output
    assert np.all(mel[:, 1] <= 1e-6) and np.all(wave[:, 1] <= 1e-6)
    assert wave[0, 0] > 1e-4
    # the waveform distance is ‖a − b‖ / ‖b‖, recomputed here from the two runs
    full = sao.generate(_req(capture=True))
    frozen = sao.generate(with_lsac(_req(capture=True), LSAC({sites[0]: 0})))
    n = min(full.audio.size, frozen.audio.size)
    ref = np.linalg.norm(frozen.audio[:n] - full.audio[:n]) / np.linalg.norm(full.audio[:n])
    assert waveform_distance(frozen, full) == pytest.approx(ref, rel=1e-6)
    assert wave[0, 0] == pytest.approx(ref, rel=1e-5)
    npz, table, png = write_sweep(sweep, tmp_path)
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 4 and {r["freeze_step"] for r in rows} == {"0", "2"}
    assert png.stat().st_size > 1000 and np.load(npz)["mel_distance"].shape == (2, 2)
    with pytest.raises(EngineError, match="freeze steps must lie"):
        freeze_sweep(sao, _req(), sites, freeze_steps=[3])
    with pytest.raises(EngineError, match="unknown site"):
        freeze_sweep(sao, _req(), ["transformer_blocks.7.attn1"])
    assert default_freeze_steps(16) == [2, 4, 8, 12]


def test_flop_counts_and_matched_steps_by_hand():
    s = SiteShape(batch=2, queries=10, keys=6, d_query=8, d_context=4, heads=4, kv_heads=2,
                  head_dim=2, d_out=8)
    f = call_flops(s)
    q_proj = 2 * 2 * 10 * 8 * 8  # to_q: 8 -> 4 heads x 2
    kv_proj = 2 * 2 * 6 * 4 * 4  # to_k (and to_v): 4 -> 2 kv heads x 2
    qk = 2 * 2 * 4 * 10 * 6 * 2
    soft = 5 * 2 * 4 * 10 * 6
    out = 2 * 2 * 10 * 8 * 8
    assert f["total"] == q_proj + 2 * kv_proj + 2 * qk + soft + out
    assert f["skipped"] == q_proj + kv_proj + qk + soft
    shapes = {"a": s, "b": s}
    # site a cached from step 1 of 4: reuses at steps 2 and 3
    assert attention_saving({"a": 1}, shapes, 4) == pytest.approx(2 * f["skipped"] / (4 * 2 * f["total"]))
    assert matched_steps(16, 0.25) == 12 and matched_steps(4, 0.99) == 1
    with pytest.raises(EngineError, match="no measured shape"):
        attention_saving({"c": 1}, shapes, 4)


def test_paired_statistics_agree_with_scipy_and_hand_values():
    a = np.array([0.1, 0.2, 0.15, 0.3, 0.25])
    b = np.array([0.5, 0.4, 0.6, 0.55, 0.7])
    out = paired_stats(a, b)
    d = a - b
    assert out["cohen_d"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert out["ttest_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["wilcoxon_p"] == pytest.approx(0.0625)  # all 5 differences negative: 2 / 2**5
    assert np.isnan(paired_stats(a, a)["wilcoxon_p"])


def test_convergence_command_and_analyze_lsac(tmp_path, capsys):
    out = tmp_path / "conv"
    args = ["convergence", "--model", "tiny:audioldm2", "--prompt", "a hammer", "--steps", "4",
            "--duration", "0.32", "--compare", "a hammer|a bell", "--seeds", "0,1",
            "--presets", "aggressive", "--out", str(out)]
    assert main.main(args) == 0
    names = {p.name for p in out.iterdir()}
    assert {"convergence.json", "convergence.csv", "convergence.png", "lsac_compare.csv",
            "lsac_compare.md", "summary.json"} <= names
    summary = json.loads((out / "lsac_compare.json").read_text())["summary"]["aggressive"]
    assert summary["pairs"] == 4 and summary["lsac_steps"] == 4 and summary["naive_steps"] < 4
    profile = json.loads((out / "convergence.json").read_text())
    assert len(profile["sites"]) == 24 and len(profile["entropy"]) == 4
    run = tmp_path / "run"
    assert main.main(["analyze", "--model", "tiny:audioldm2", "--prompt", "a hammer", "--steps", "4",
                      "--duration", "0.32", "--no-figures", "--lsac", "balanced",
                      "--lsac-profile", str(out / "convergence.json"), "--lsac-dtype", "bfloat16",
                      "--out", str(run)]) == 0
    lsac = json.loads((run / "run.json").read_text())["recipe"]["interventions"][0]
    assert lsac["type"] == "lsac" and lsac["preset"] == "balanced" and lsac["reused_calls"] > 0
    assert lsac["cache_dtype"] == "bfloat16"
    assert all(k == "self" for s, k in zip(profile["sites"], profile["kinds"], strict=True) if s in lsac["plan"])
    run_x = tmp_path / "run_cross"
    assert main.main(["analyze", "--model", "tiny:audioldm2", "--prompt", "a hammer", "--steps", "4",
                      "--duration", "0.32", "--no-figures", "--lsac", "balanced", "--lsac-kinds", "self,cross",
                      "--lsac-profile", str(out / "convergence.json"), "--out", str(run_x)]) == 0
    crossed = json.loads((run_x / "run.json").read_text())["recipe"]["interventions"][0]["plan"]
    assert any(k == "cross" for s, k in zip(profile["sites"], profile["kinds"], strict=True) if s in crossed)
    # a freeze sweep beside the profile sets the freeze steps: every site tolerable at step 1
    from engine.convergence.freeze import METRICS, FreezeSweep, write_sweep

    n = len(profile["sites"])
    write_sweep(FreezeSweep(sites=profile["sites"], kinds=profile["kinds"], freeze_steps=[1, 2], steps=4,
                            metrics={m: np.zeros((n, 2)) for m in METRICS}), out)
    run2 = tmp_path / "run2"
    assert main.main(["analyze", "--model", "tiny:audioldm2", "--prompt", "a hammer", "--steps", "4",
                      "--duration", "0.32", "--no-figures", "--lsac", "balanced",
                      "--lsac-profile", str(out / "convergence.json"), "--out", str(run2)]) == 0
    swept = json.loads((run2 / "run.json").read_text())["recipe"]["interventions"][0]
    self_sites = {s for s, k in zip(profile["sites"], profile["kinds"], strict=True) if k == "self"}
    assert swept["preset"] == "balanced (sweep)" and swept["plan"] == {s: 1 for s in self_sites}
    capsys.readouterr()
    assert main.main(["convergence", "--model", "tiny:audioldm2", "--prompt", "x", "--steps", "4",
                      "--presets", "turbo", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown LSAC preset" in capsys.readouterr().err
    assert main.main(["convergence", "--model", "tiny:audioldm2", "--prompt", "x", "--steps", "1",
                      "--out", str(tmp_path / "bad2")]) == 2
    assert "at least 2" in capsys.readouterr().err
