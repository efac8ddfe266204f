"""Head selection on a real per-head eval run, and the evaluation's map and ground-truth pieces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from engine.analysis.melscale import grid_hz
from engine.evaluation import EvalOptions, run_eval, run_head_selection
from engine.evaluation.ground_truth import stem_ground_truth, time_aggregated_mask
from engine.evaluation.maps import received_attention_map
from engine.evaluation.prompts import load_templates
from engine.evaluation.tables import read_jsonl, safe_name
from engine.types import EngineError
from tests.engine.test_evaluation_runner import SR, _noise_hits, _tone, _track

GRID = (32, 16)
K = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from engine.backends.embedded import EmbeddedBackend
    from engine.models.embedded.pipeline import EmbeddedPipeline

    root = tmp_path_factory.mktemp("slakh")
    _track(root, "Track00001", {"S00": ("Bass", 33, False, _tone(55.0)),
                                "S01": ("Drums", 0, True, _noise_hits())})
    _track(root, "Track00002", {"S00": ("Bass", 33, False, _tone(73.0))})
    backend = EmbeddedBackend(EmbeddedPipeline.build(seed=5))
    out = run_eval(EvalOptions(dataset=str(root), out=str(tmp_path_factory.mktemp("e") / "out"),
                               classes=["Bass", "Drums"], steps=2, duration=1.0, grid=GRID,
                               head_k=K, figures=False), backend=backend)
    return out, backend


def _ratios(out: Path, item_id: str) -> dict[str, np.ndarray]:
    with np.load(out / "heads" / f"{safe_name(item_id)}.npz") as d:
        return {k[6:]: d[k] for k in d.files if k.startswith("ratio/")}


def _head_maps(out: Path, item_id: str) -> dict[str, np.ndarray]:
    with np.load(out / "heads" / f"{safe_name(item_id)}.npz") as d:
        return {k[4:]: d[k].astype(np.float64) for k in d.files if k.startswith("map/")}


def _top(scores: dict[str, np.ndarray], k: int, largest: bool = True) -> set[tuple[str, int]]:
    flat = [(s, h, v) for s, vals in scores.items() for h, v in enumerate(vals)]
    flat.sort(key=lambda x: -x[2] if largest else x[2])
    return {(s, h) for s, h, _ in flat[:k]}


def _chosen(mask: dict[str, list[bool]]) -> set[tuple[str, int]]:
    return {(s, h) for s, m in mask.items() for h, keep in enumerate(m) if keep}


def test_masks_have_the_request_format_and_shape(run):
    out, backend = run
    cross = {s.name: s.heads for s in backend.sites() if s.kind == "cross"}
    files = sorted((out / "heads" / "masks").glob("*.json"))
    assert {f.name for f in files} == {f"{c}_{v}{K}.json" for c in ("Bass", "Drums")
                                       for v in ("labelfree_top", "labelfree_bottom",
                                                 "ORACLE_region_top")}
    for f in files:
        mask = json.loads(f.read_text())
        assert {s: len(m) for s, m in mask.items()} == cross
        assert all(isinstance(v, bool) for m in mask.values() for v in m)
        assert sum(map(sum, mask.values())) == K


def test_label_free_top_k_are_the_k_highest_scores(run):
    out, _ = run
    items = read_jsonl(out / "items.jsonl")
    sel = [it["id"] for it in items if it["class"] == "Bass" and it["track"] == "Track00001"]
    runs = [_ratios(out, i) for i in sel]
    assert len(runs) == 2  # the two templates of the selection track
    scores = {s: np.mean([r[s] for r in runs], axis=0) - np.std([r[s] for r in runs], axis=0)
              for s in runs[0]}
    top = json.loads((out / "heads" / "masks" / f"Bass_labelfree_top{K}.json").read_text())
    bottom = json.loads((out / "heads" / "masks" / f"Bass_labelfree_bottom{K}.json").read_text())
    assert _chosen(top) == _top(scores, K)
    assert _chosen(bottom) == _top(scores, K, largest=False)
    assert not _chosen(top) & _chosen(bottom)


def test_oracle_top_k_are_the_heads_with_highest_ap(run):
    out, _ = run
    items = read_jsonl(out / "items.jsonl")
    sel = [it["id"] for it in items if it["class"] == "Bass" and it["track"] == "Track00001"]
    per_item = []
    for i in sel:
        gt = np.load(out / "maps" / f"{safe_name(i)}.npz")["gt_region"]
        per_item.append({s: np.array([average_precision_score(gt.ravel(), m.ravel()) for m in hm])
                         for s, hm in _head_maps(out, i).items()})
    oracle = {s: np.mean([p[s] for p in per_item], axis=0) for s in per_item[0]}
    mask = json.loads((out / "heads" / "masks" / f"Bass_ORACLE_region_top{K}.json").read_text())
    assert _chosen(mask) == _top(oracle, K)


def test_comparison_and_weakening_start_from_all_heads(run):
    out, _ = run
    items = read_jsonl(out / "items.jsonl")
    evl = [it["id"] for it in items if it["class"] == "Bass" and it["track"] == "Track00002"]
    aps = []
    for i in evl:
        hm = _head_maps(out, i)
        all_heads = np.mean([m.mean(axis=0) for m in hm.values()], axis=0)
        gt = np.load(out / "maps" / f"{safe_name(i)}.npz")["gt_region"]
        aps.append(average_precision_score(gt.ravel(), all_heads.ravel()))
    with open(out / "heads_comparison_region.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    row = next(r for r in rows if r["Instrument"] == "Bass" and r["Heads kept"].startswith("all"))
    assert float(row["AP"]) == pytest.approx(np.mean(aps), abs=1e-9)
    assert {r["Heads kept"] for r in rows if r["Instrument"] == "Bass"} == {
        "all heads (DAAM-style)", "label-free top-k", "label-free bottom-k", "ORACLE top-k"}
    with open(out / "weakening_region.csv", newline="") as fh:
        weak = [r for r in csv.DictReader(fh) if r["Instrument"] == "Bass"]
    starts = {r["order"]: float(r["ap"]) for r in weak if r["removed"] == "0"}
    assert set(starts) == {"label-free order", "reverse label-free order", "ORACLE order"}
    assert all(v == pytest.approx(np.mean(aps), abs=1e-9) for v in starts.values())
    n_heads = sum(len(v) for v in _ratios(out, evl[0]).values())
    assert max(int(r["removed"]) for r in weak) == n_heads - 1


def test_another_ground_truth_writes_beside_the_first(run):
    out, _ = run
    before = {p.name: p.read_bytes() for p in out.glob("*_region.*")}
    before.update({p.name: p.read_bytes() for p in (out / "heads" / "masks").glob("*.json")})
    assert "heads_comparison_region.csv" in before and "weakening_region.csv" in before
    run_head_selection(out, k=K, gt="stem", figures=False)
    for name, data in before.items():
        path = out / name if (out / name).is_file() else out / "heads" / "masks" / name
        assert path.read_bytes() == data  # nothing of the region run was overwritten
    with open(out / "heads_comparison_stem.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    items = read_jsonl(out / "items.jsonl")
    evl = [it["id"] for it in items if it["class"] == "Bass" and it["track"] == "Track00002"]
    base = np.mean([np.load(out / "maps" / f"{safe_name(i)}.npz")["gt_stem"].mean() for i in evl])
    row = next(r for r in rows if r["Instrument"] == "Bass" and r["Heads kept"].startswith("all"))
    assert float(row["Base rate"]) == pytest.approx(base, abs=1e-12)
    assert (out / "heads" / "masks" / f"Bass_ORACLE_stem_top{K}.json").is_file()


def test_received_attention_matches_torch_resize():
    rng = np.random.default_rng(0)
    a = rng.random((2, 12, 12))
    a /= a.sum(axis=2, keepdims=True)
    got = received_attention_map(a, (4, 3), GRID)
    p = torch.from_numpy(a.mean(axis=(0, 1)).reshape(1, 1, 4, 3))
    ref = F.interpolate(p, size=GRID, mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-12)
    with pytest.raises(EngineError, match="self-attention"):
        received_attention_map(a[:, :, :5], (4, 3), GRID)


def test_time_aggregated_mask_hand_case():
    active = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], bool)
    # frames with activity: 0, 1, 3; bin shares 3/3, 1/3, 0, 1/3
    assert time_aggregated_mask(active, 0.5).tolist() == [True, False, False, False]
    assert time_aggregated_mask(active, 0.3).tolist() == [True, True, False, True]
    assert not time_aggregated_mask(np.zeros((3, 2), bool)).any()


def test_stem_ground_truth_of_a_low_tone_sits_in_low_bins():
    from engine.models.embedded.melspec import MelConfig

    spec = MelConfig().mel_spec()
    mask, profile = stem_ground_truth(_tone(55.0, harmonics=1), SR, spec, GRID, 2.0)
    hz = grid_hz(spec, GRID[1])
    assert mask.shape == GRID and (mask == mask[0]).all()  # broadcast over time
    on = hz[mask[0]]
    assert on.size >= 1 and on.max() < 300.0
    assert int(np.argmax(profile)) == int(np.argmin(np.abs(hz - 55.0)))
    with pytest.raises(EngineError, match="silent"):
        stem_ground_truth(np.zeros(SR), SR, spec, GRID, 1.0)


def test_templates_file_is_checked(tmp_path):
    default = load_templates()
    assert default["Bass"].prompts == ("bass", "a bass playing")
    bad = tmp_path / "t.yaml"
    bad.write_text("classes:\n  Bass: {word: bass, templates: ['no placeholder']}\n")
    with pytest.raises(EngineError, match=r"\{inst\}"):
        load_templates(bad)
