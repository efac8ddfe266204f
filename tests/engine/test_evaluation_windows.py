"""Choosing the stem window before generating: hand-made activity patterns and a real eval run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.evaluation import EvalOptions, run_eval
from engine.evaluation.tables import read_jsonl
from engine.evaluation.windows import choose_window, frame_activity
from engine.types import EngineError
from tests.engine.test_evaluation_runner import SR, CountingBackend, _tone, _track


def _gated(on: list[tuple[float, float]], seconds: float) -> np.ndarray:
    """A 330 Hz tone at -10 dBFS inside the ``on`` intervals (s), digital silence elsewhere."""
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for a, b in on:
        sel = (t >= a) & (t < b)
        x[sel] = 0.45 * np.sin(2 * np.pi * 330.0 * t[sel])
    return x


def test_frame_activity_matches_rms_by_hand():
    x = _gated([(0.2, 0.5)], 1.0)
    # frames of 0.1 s: RMS of a 0.45 sine is 0.318 (-10 dBFS) in frames 2, 3, 4, zero elsewhere
    assert frame_activity(x, SR).tolist() == [False, False, True, True, True] + [False] * 5
    assert not frame_activity(0.001 * x, SR).any()  # -70 dBFS: below the -45 dBFS threshold


def test_first_window_with_the_best_share_is_chosen():
    x = _gated([(1.5, 6.0)], 6.0)
    w = choose_window(x, SR, 2.0)  # starts 0, 0.5, ..., 4.0; full share first at 1.5 s
    assert w.start_s == pytest.approx(1.5) and w.active_share == pytest.approx(1.0)
    # a part that never fills a window: the best share wins (first among near-ties)
    y = _gated([(0.0, 0.3), (3.0, 4.2)], 6.0)  # 0.3 s early, 1.2 s later
    w = choose_window(y, SR, 2.0)
    assert w.start_s == pytest.approx(2.5) and w.active_share == pytest.approx(0.6)
    # fixed window: only the offset window is tried
    with pytest.raises(EngineError, match=r"at most 15% of the 2 s window at 0 s"):
        choose_window(y, SR, 2.0, search=False)
    with pytest.raises(EngineError, match=r"at most 0% of any 2 s window"):
        choose_window(np.zeros(6 * SR), SR, 2.0)
    with pytest.raises(EngineError, match="min-active"):
        choose_window(x, SR, 2.0, min_active=0.0)


@pytest.fixture(scope="module")
def late_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("late")
    late_guitar = np.concatenate([np.zeros(int(1.5 * SR)), _tone(196.0, 1.5)])
    _track(root, "Track00007", {"S00": ("Guitar", 25, False, late_guitar),
                                "S01": ("Strings", 48, False, np.zeros(3 * SR))})
    return root


@pytest.fixture(scope="module")
def backend():
    from engine.backends.embedded import EmbeddedBackend
    from engine.models.embedded.pipeline import EmbeddedPipeline

    return CountingBackend(EmbeddedBackend(EmbeddedPipeline.build(seed=3)))


def _opts(root: Path, out: Path, **kw) -> EvalOptions:
    return EvalOptions(dataset=str(root), out=str(out), classes=["Guitar", "Strings"], steps=2,
                       duration=1.0, grid=(32, 16), figures=False, per_head=False, **kw)


def test_silent_items_are_refused_before_generating(late_dataset, backend, tmp_path):
    backend.calls = 0
    out = run_eval(_opts(late_dataset, tmp_path / "a"), backend=backend)
    assert backend.calls == 2  # two Guitar templates; the silent Strings stem costs nothing
    items = read_jsonl(out / "items.jsonl")
    assert [it["class"] for it in items] == ["Guitar", "Guitar"]
    assert all(it["window_start_s"] == pytest.approx(1.5) for it in items)  # where it plays
    assert all(it["window_active_share"] == pytest.approx(1.0) for it in items)
    assert all(it["scores"]["stem"]["tp"] + it["scores"]["stem"]["fn"] > 0 for it in items)
    errors = read_jsonl(out / "errors.jsonl")
    assert len(errors) == 2 and all("Strings in Track00007 sounds in at most 0%" in e["error"]
                                    for e in errors)
    backend.calls = 0
    run_eval(_opts(late_dataset, tmp_path / "a"), backend=backend)  # resume: retries refused again
    assert backend.calls == 0 and len(read_jsonl(out / "items.jsonl")) == 2


def test_fixed_window_refuses_a_late_part(late_dataset, backend, tmp_path):
    backend.calls = 0
    out = tmp_path / "b"
    with pytest.raises(EngineError, match="no item could be scored: all 4 items failed"):
        run_eval(_opts(late_dataset, out, window="fixed"), backend=backend)  # nothing scored: exit 2
    assert backend.calls == 0 and read_jsonl(out / "items.jsonl") == []
    guitar = [e for e in read_jsonl(out / "errors.jsonl") if "/Guitar/" in e["id"]]
    assert len(guitar) == 2 and all("at most 0% of the 1 s window at 0 s" in e["error"] for e in guitar)
    with pytest.raises(EngineError, match="--window"):
        run_eval(_opts(late_dataset, tmp_path / "c", window="loudest"), backend=backend)
