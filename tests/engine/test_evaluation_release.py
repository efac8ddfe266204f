"""``eval`` on hand-made tracks in the Slakh2100 release form, short tracks, NaN maps and a
time-only model (Stable Audio: maps flat in frequency)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from engine.data.slakh import SlakhDataset
from engine.evaluation import EvalOptions, run_eval
from engine.evaluation.ground_truth import FREQUENCY_KINDS, GroundTruth, class_audio
from engine.evaluation.runner import safe_name
from engine.evaluation.scoring import score_map
from engine.evaluation.tables import read_jsonl
from engine.evaluation.windows import choose_window
from engine.types import EngineError
from tests.engine.slakh_release import ReleaseStem, noise_hits, sine, write_track

SR = 44100  # the release's rate; the eval resamples to each model's rate
GRID = (32, 16)


def _stems(seconds: float) -> dict[str, ReleaseStem]:
    return {
        "S00": ReleaseStem("Bass", 33, "Electric Bass (finger)", "scarbee_jay_bass_both.nkm",
                           sine(55.0, seconds, SR, harmonics=4)),
        "S01": ReleaseStem("Drums", 128, "Drums", "session_kit_full.nkm", noise_hits(seconds, SR),
                           is_drum=True),
        "S02": ReleaseStem("Sound Effects", 103, "FX 8 (sci-fi)", "None", None),
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rel") / "slakh2100_flac_redux"
    write_track(root / "test" / "Track01876", _stems(2.0), SR)
    write_track(root / "test" / "Track01877", {"S00": _stems(0.6)["S00"]}, SR)  # shorter than 1 s
    write_track(root / "test" / "Track01878", _stems(2.0), SR, audio_dir="Track01876/stems")
    return root


@pytest.fixture(scope="module")
def embedded():
    from engine.backends.embedded import EmbeddedBackend
    from engine.models.embedded.pipeline import EmbeddedPipeline

    return EmbeddedBackend(EmbeddedPipeline.build(seed=3))


def _opts(root: Path, out: Path, **kw) -> EvalOptions:
    base = {"dataset": str(root), "out": str(out), "steps": 2, "duration": 1.0, "grid": GRID,
            "figures": False, "per_head": False, "classes": ["Bass", "Drums"]}
    return EvalOptions(**{**base, **kw})


def test_eval_scores_a_release_form_track(release, embedded, tmp_path):
    out = run_eval(_opts(release, tmp_path / "e"), backend=embedded)
    items = read_jsonl(out / "items.jsonl")
    assert sorted((it["track"], it["class"]) for it in items) == [
        ("Track01876", "Bass"), ("Track01876", "Bass"), ("Track01876", "Drums"), ("Track01876", "Drums")]
    for it in items:
        assert it["window_start_s"] + 1.0 <= 2.0 + 1e-9  # inside the audio
        s = it["scores"]["region"]
        assert not s["time_only"] and s["tp"] + s["fp"] + s["fn"] + s["tn"] == GRID[0] * GRID[1]
        data = np.load(out / "maps" / f"{safe_name(it['id'])}.npz")
        ref = average_precision_score(data["gt_region"].ravel(), data["map"].ravel())
        assert s["ap"] == pytest.approx(ref, abs=1e-9)  # independent AP on the saved map and mask
        assert data["gt_stem"].any()  # the real stem audio was found and is active
    errors = read_jsonl(out / "errors.jsonl")
    by_id = {e["id"]: e["error"] for e in errors}
    assert "names track folder Track01876" in by_id["Track01878"]
    short = [e for e in errors if e["id"].startswith("test/Track01877/Bass/")]
    assert len(short) == 2 and all("0.60 s long, too short for a 1 s window" in e["error"] for e in short)
    report = json.loads((out / "report.json").read_text())
    assert report["items"] == 4 and report["errors"] == 3
    assert (out / "table1_region.csv").is_file() and "Track01876" not in report["error_ids"]


def test_no_usable_track_says_why(release, embedded, tmp_path):
    root = tmp_path / "slakh2100_flac_redux"
    (root / "test").mkdir(parents=True)
    (root / "test" / "Track01878").symlink_to(release / "test" / "Track01878")
    with pytest.raises(EngineError) as exc:
        run_eval(_opts(root, tmp_path / "o"), backend=embedded)
    msg = str(exc.value)
    assert "\n" not in msg and "0 usable, 1 skipped" in msg
    assert "Track01878: malformed metadata.yaml (audio_dir 'Track01876/stems' names track folder" in msg


def test_short_windows_are_refused_not_padded(release):
    x = sine(110.0, 2.0, 16000)
    assert choose_window(x, 16000, 2.0).start_s == 0.0  # exactly fits
    with pytest.raises(EngineError, match=r"2.00 s long, too short for a 1 s window from 1.5 s"):
        choose_window(x, 16000, 1.0, offset=1.5, search=False)  # used to be scored past the end
    with pytest.raises(EngineError, match="too short"):
        choose_window(x, 16000, 2.5)
    track = SlakhDataset(release / "test")[0]
    assert class_audio(track, "Bass", 16000, 1.0, 1.0).shape == (16000,)
    with pytest.raises(EngineError, match=r"stem S00 of Track01876 ends at 2.00 s, before the window"):
        class_audio(track, "Bass", 16000, 1.5, 1.0)


def _gt() -> GroundTruth:
    region = np.zeros(GRID, bool)
    region[:, :4] = True  # low bins, constant in time
    output = np.zeros(GRID, bool)
    output[8:16, :] = True  # time-aligned: frames 8-15 active
    masks = {"region": region, "output": output}
    return GroundTruth(masks, {k: v[0].astype(float) for k, v in masks.items()})


def test_score_map_refuses_nonfinite_maps():
    g = np.random.default_rng(0).random(GRID)
    g[3, 5] = np.nan
    with pytest.raises(EngineError, match="1 NaN/inf value"):
        score_map(g, _gt())
    g[3, 5] = np.inf
    with pytest.raises(EngineError, match="not scored"):
        score_map(g, _gt())


def test_time_only_map_keeps_time_scores_only():
    t = np.zeros(GRID[0])
    t[4:12] = 1.0  # on in frames 4-11; output active in 8-15
    g = np.repeat(t[:, None], GRID[1], axis=1)
    s = score_map(g, _gt())  # flat in frequency: detected from the map
    region = s["region"]
    assert region["time_only"] and all(region[k] is None for k in
                                       ("iou", "ap", "pointing", "pearson", "precision", "tp", "tn"))
    out = s["output"]
    assert out["pointing"] is None and out["pearson"] is None and out["spearman"] is None
    # by hand: prediction = frames 4-11 x 16 bins, mask = frames 8-15 x 16 bins
    assert (out["tp"], out["fp"], out["fn"]) == (4 * 16, 4 * 16, 4 * 16)
    assert out["iou"] == pytest.approx(64 / 192) and out["precision"] == pytest.approx(0.5)
    ref = average_precision_score(_gt().masks["output"].ravel(), g.ravel())
    assert out["ap"] == pytest.approx(ref)
    # the same map from a frequency-resolving model (time_only=False) is scored normally
    assert score_map(g, _gt(), time_only=False)["region"]["iou"] is not None


def test_eval_with_a_time_only_model(release, sao, tmp_path):
    out = run_eval(_opts(release, tmp_path / "sao", duration=0.25, classes=["Bass"]), backend=sao)
    items = read_jsonl(out / "items.jsonl")
    assert len(items) == 4  # Track01876 and the 0.6 s Track01877 (long enough for 0.25 s)
    for it in items:
        for kind in FREQUENCY_KINDS:
            s = it["scores"][kind]
            assert s["time_only"] and s["tp"] is None and s["pointing"] is None and s["iou"] is None
        o = it["scores"]["output"]
        assert o["pointing"] is None and o["pearson"] is None and o["tp"] is not None
        assert o["iou"] is not None and o["ap"] is not None
    for kind in FREQUENCY_KINDS:
        assert not (out / f"table1_{kind}.csv").exists() and not (out / f"profiles_{kind}.csv").exists()
        assert "No table: none of the 4 items" in (out / f"table1_{kind}.md").read_text()
    assert (out / "table1_output.csv").is_file()
    report = json.loads((out / "report.json").read_text())
    assert set(report["table1"]) == {"output"}
