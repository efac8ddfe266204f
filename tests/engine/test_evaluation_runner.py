"""``run_eval`` end to end on a fabricated Slakh-format dataset with an untrained embedded model.

The tables are recomputed independently (scikit-learn on the saved maps and masks), resuming is
checked by counting ``generate`` calls, and bad tracks / items are collected, not fatal.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from engine.evaluation import EvalOptions, run_eval
from engine.evaluation.tables import read_jsonl, safe_name
from engine.types import EngineError

SR = 16000
GRID = (32, 16)
TAU = 0.5


def _tone(f0: float, seconds: float = 2.0, harmonics: int = 4) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return 0.2 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1))


def _noise_hits(seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.zeros(int(SR * seconds))
    for start in range(0, x.size - 800, SR // 4):
        x[start:start + 800] += 0.5 * rng.standard_normal(800) * np.exp(-np.arange(800) / 150)
    return x


def _track(root: Path, name: str, stems: dict[str, tuple[str, int, bool, np.ndarray | None]]) -> None:
    folder = root / name
    (folder / "stems").mkdir(parents=True)
    meta = {"audio_dir": "stems", "stems": {}}
    for sid, (cls, prog, drum, audio) in stems.items():
        path = folder / "stems" / f"{sid}.wav"
        if audio is None:
            path.write_bytes(b"this is not a wav file")  # found by the reader, fails when read
        else:
            sf.write(path, audio.astype(np.float32), SR)
        meta["stems"][sid] = {"inst_class": cls, "program_num": prog, "is_drum": drum}
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slakh")
    _track(root, "Track00001", {"S00": ("Bass", 33, False, _tone(55.0)),
                                "S01": ("Drums", 0, True, _noise_hits())})
    _track(root, "Track00002", {"S00": ("Piano", 0, False, _tone(440.0, harmonics=6)),
                                "S01": ("Bass", 33, False, _tone(82.0))})
    _track(root, "Track00003", {"S00": ("Organ", 16, False, None)})  # unreadable stem
    (root / "Track00004").mkdir()
    (root / "Track00004" / "metadata.yaml").write_text("stems: [unclosed")  # malformed YAML
    return root


class CountingBackend:
    """A real backend whose ``generate`` calls are counted."""

    def __init__(self, backend) -> None:
        self._b = backend
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._b, name)

    def generate(self, *args, **kwargs):
        self.calls += 1
        return self._b.generate(*args, **kwargs)


@pytest.fixture(scope="module")
def backend():
    from engine.backends.embedded import EmbeddedBackend
    from engine.models.embedded.pipeline import EmbeddedPipeline

    return CountingBackend(EmbeddedBackend(EmbeddedPipeline.build(seed=3)))


def _options(dataset: Path, out: Path, **kw) -> EvalOptions:
    base = {"dataset": str(dataset), "out": str(out), "steps": 2, "duration": 1.0, "grid": GRID,
            "tau": TAU, "figures": False}
    return EvalOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def evaluated(dataset, backend, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "out"
    seen = []
    backend.calls = 0
    run_eval(_options(dataset, out, figures=True), progress=lambda d, n: seen.append((d, n)),
             backend=backend)
    assert seen[-1] == (10, 10)  # 5 (track, class) pairs x 2 templates
    assert backend.calls == 8  # the Organ items fail before generating
    return out


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_outputs_and_table_layout(evaluated):
    for name in ("figure2_profiles.png", "figure3_examples.png", "weakening_region.png", "report.json"):
        assert (evaluated / name).stat().st_size > 0
    header, rows = _read_csv(evaluated / "table1_band.csv")
    assert header == ["Metric", "Micro", "Macro", "Posweighted"]
    assert [r[0] for r in rows] == ["Precision", "Recall", "F1", "IoU", "Base rate", "Precision lift"]
    header, rows = _read_csv(evaluated / "table3_stem.csv")
    assert header == ["Instrument", "Precision", "Recall", "F1", "IoU", "Base rate", "Precision lift"]
    for gt in ("band", "fundamental", "region", "stem", "output"):
        assert (evaluated / f"table1_{gt}.csv").is_file() and (evaluated / f"profiles_{gt}.md").is_file()
    assert json.loads((evaluated / "report.json").read_text())["primary_gt"] == "region"
    assert [r[0] for r in rows] == ["Bass", "Drums", "Piano", "Macro-avg"]
    md = (evaluated / "table1_band.md").read_text()
    assert "| Precision |" in md and "| IoU |" in md
    items = read_jsonl(evaluated / "items.jsonl")
    assert len(items) == 8
    assert {(it["track"], it["class"]) for it in items} == {
        ("Track00001", "Bass"), ("Track00001", "Drums"), ("Track00002", "Piano"),
        ("Track00002", "Bass")}
    assert {it["prompt"] for it in items if it["class"] == "Piano"} == {"piano", "a piano playing"}
    assert all(it["seed"] == int(it["track"][-1]) for it in items)  # seed 0 + track number


def test_errors_are_collected_not_fatal(evaluated):
    errors = read_jsonl(evaluated / "errors.jsonl")
    by_id = {e["id"]: e for e in errors}
    assert by_id["Track00004"]["phase"] == "scan" and "malformed" in by_id["Track00004"]["error"]
    organ = [e for e in errors if "/Organ/" in e["id"]]
    assert len(organ) == 2 and all("cannot read audio" in e["error"] for e in organ)
    report = json.loads((evaluated / "report.json").read_text())
    assert report["items"] == 8 and report["errors"] == 3


def _binarise(g: np.ndarray, tau: float) -> np.ndarray:
    lo, hi = g.min(), g.max()
    return np.zeros(g.shape, bool) if hi == lo else (g - lo) / (hi - lo) >= tau


@pytest.mark.parametrize("gt", ["band", "region"])
def test_tables_match_sklearn_on_saved_maps(evaluated, gt):
    items = read_jsonl(evaluated / "items.jsonl")
    preds: dict[str, list[np.ndarray]] = {}
    gts: dict[str, list[np.ndarray]] = {}
    for it in items:
        data = np.load(evaluated / "maps" / f"{safe_name(it['id'])}.npz")
        preds.setdefault(it["class"], []).append(_binarise(data["map"], TAU).ravel())
        gts.setdefault(it["class"], []).append(data[f"gt_{gt}"].ravel())
    per_class = {}
    for c in preds:
        p, r, f, _ = precision_recall_fscore_support(
            np.concatenate(gts[c]), np.concatenate(preds[c]), average="binary", zero_division=0)
        y, yhat = np.concatenate(gts[c]), np.concatenate(preds[c])
        iou = (y & yhat).sum() / (y | yhat).sum()
        per_class[c] = [p, r, f, iou, y.mean(), p / y.mean()]  # chance: base rate, precision lift
    _, rows = _read_csv(evaluated / f"table3_{gt}.csv")
    table3 = {r[0]: [float(v) for v in r[1:]] for r in rows}
    for c, ref in per_class.items():
        np.testing.assert_allclose(table3[c], ref, atol=1e-12)
    np.testing.assert_allclose(table3["Macro-avg"], np.mean(list(per_class.values()), axis=0),
                               atol=1e-12)
    y = np.concatenate([np.concatenate(gts[c]) for c in preds])
    yhat = np.concatenate([np.concatenate(preds[c]) for c in preds])
    p, r, f, _ = precision_recall_fscore_support(y, yhat, average="binary", zero_division=0)
    _, rows = _read_csv(evaluated / f"table1_{gt}.csv")
    micro = [float(r_[1]) for r_ in rows]
    np.testing.assert_allclose(micro, [p, r, f, (y & yhat).sum() / (y | yhat).sum(), y.mean(),
                                       p / y.mean()], atol=1e-12)
    support = np.array([np.concatenate(gts[c]).sum() for c in preds], float)
    posw = [float(r_[3]) for r_ in rows]
    ref = (support[:, None] * np.array(list(per_class.values()))).sum(0) / support.sum()
    np.testing.assert_allclose(posw, ref, atol=1e-12)


def test_profile_table_ap_matches_sklearn(evaluated):
    items = read_jsonl(evaluated / "items.jsonl")
    aps, gains = {}, {}
    for it in items:
        data = np.load(evaluated / "maps" / f"{safe_name(it['id'])}.npz")
        y = data["gt_stem"].ravel()
        ap = average_precision_score(y, data["map"].ravel())
        aps.setdefault(it["class"], []).append(ap)
        gains.setdefault(it["class"], []).append(ap - y.mean())  # AP of a random ranking ≈ base rate
    header, rows = _read_csv(evaluated / "profiles_stem.csv")
    got = {r[0]: float(r[header.index("AP")]) for r in rows}
    got_gain = {r[0]: float(r[header.index("AP - base")]) for r in rows}
    for c, vals in aps.items():
        assert got[c] == pytest.approx(np.mean(vals), abs=1e-9)
        assert got_gain[c] == pytest.approx(np.mean(gains[c]), abs=1e-9)


def test_resume_generates_only_missing_items(evaluated, dataset, backend, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(evaluated, out)
    backend.calls = 0
    run_eval(_options(dataset, out), backend=backend)
    assert backend.calls == 0  # everything scored already; the Organ retries fail before generating
    lines = (out / "items.jsonl").read_text().splitlines()
    # an interruption: the last two records lost, the write of the third torn mid-line
    (out / "items.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:40])
    run_eval(_options(dataset, out), backend=backend)
    assert backend.calls == 3
    items = read_jsonl(out / "items.jsonl")
    assert sorted(it["id"] for it in items) == sorted(json.loads(x)["id"] for x in lines)
    _, new = _read_csv(out / "table1_band.csv")
    _, old = _read_csv(evaluated / "table1_band.csv")
    np.testing.assert_allclose(np.array(new)[:, 1:].astype(float),
                               np.array(old)[:, 1:].astype(float), atol=1e-9)


def test_resume_with_other_settings_is_refused(evaluated, dataset, backend, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(evaluated, out)
    with pytest.raises(EngineError, match="tau"):
        run_eval(_options(dataset, out, tau=0.3), backend=backend)


def test_bad_options_fail_before_loading(dataset, tmp_path):
    with pytest.raises(EngineError, match="--pooling"):
        run_eval(_options(dataset, tmp_path / "o", pooling="median"))
    with pytest.raises(EngineError, match="no prompt templates for class 'Kazoo'"):
        run_eval(_options(dataset, tmp_path / "o", classes=["Kazoo"]))
    assert not (tmp_path / "o").exists()


def test_ablations_run_and_learned_weights_lie_on_the_simplex(dataset, backend, tmp_path):
    out = run_eval(_options(dataset, tmp_path / "abl", classes=["Bass"], cross_only=False,
                            pooling="weighted", aggregator="topk", weighting="learned",
                            fit_tracks=1, per_head=False), backend=backend)
    weights = json.loads((out / "layer_weights.json").read_text())
    w = np.array(list(weights["weights"].values()))
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert any(s.endswith("attn1") for s in weights["weights"])  # self sites take part
    assert weights["items"] == ["-/Track00001/Bass/0", "-/Track00001/Bass/1"]
    items = read_jsonl(out / "items.jsonl")
    assert [it["track"] for it in items] == ["Track00002", "Track00002"]  # fit track held out
