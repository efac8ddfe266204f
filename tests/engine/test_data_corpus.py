"""Arrangements from music21's corpus: notes come from the score, stems are valid, no silent bars."""

from __future__ import annotations

import numpy as np
import yaml
from music21 import corpus

from engine.data.classes import MAIN_CLASSES, program_class
from engine.data.corpus import corpus_arrangement
from engine.data.render import render_dataset
from engine.data.slakh import SlakhDataset


def _score_pitch_classes(name: str) -> set[int]:
    """Pitch classes of every note of the piece, read with music21 directly."""
    return {int(p.midi) % 12 for n in corpus.parse(name).flatten().notes for p in n.pitches}


def test_arrangements_use_the_score_and_fill_every_bar():
    seen: set[str] = set()
    for i in range(4):
        arr, name = corpus_arrangement(np.random.default_rng([11, i]), 12.0)
        assert 2 <= len(arr.parts) <= 5
        classes = [p.inst_class for p in arr.parts]
        assert len(set(classes)) == len(classes)
        seen.update(classes)
        allowed = {(pc + arr.key_root) % 12 for pc in _score_pitch_classes(name)}
        sounding = np.zeros(arr.n_bars, dtype=bool)
        for part in arr.parts:
            inst = part.instrument
            assert inst.notes
            assert part.inst_class == program_class(inst.program, inst.is_drum)
            if not inst.is_drum:
                assert {n.pitch % 12 for n in inst.notes} <= allowed, name
            for n in inst.notes:
                assert 0 <= n.start < n.end <= 12.0 + 1e-9
                sounding[int(n.start // arr.bar_s): int(np.ceil(n.end / arr.bar_s))] = True
        # every bar that starts inside the track has a note
        full = [b for b in range(arr.n_bars) if b * arr.bar_s < 12.0 - 0.25]
        assert sounding[full].all(), (name, np.flatnonzero(~sounding))
    assert len(seen & set(MAIN_CLASSES)) >= 4


def test_same_rng_gives_the_same_arrangement():
    a, na = corpus_arrangement(np.random.default_rng(3), 8.0)
    b, nb = corpus_arrangement(np.random.default_rng(3), 8.0)
    assert na == nb
    notes = lambda arr: [[(n.start, n.end, n.pitch, n.velocity) for n in p.instrument.notes]  # noqa: E731
                         for p in arr.parts]
    assert notes(a) == notes(b)


def test_render_corpus_track_and_read_back(tmp_path):
    paths = render_dataset(tmp_path, 1, seed=2, duration_s=4.0, source="corpus")
    meta = yaml.safe_load((paths[0] / "metadata.yaml").read_text())
    assert meta["source"].startswith("music21:")
    ds = SlakhDataset(tmp_path)
    assert len(ds) == 1 and ds.scan_report == []
    track = ds[0]
    assert track.classes() == sorted({s["inst_class"] for s in meta["stems"].values()})
    mix = track.load_mix()
    assert mix.shape == (64000,)
    np.testing.assert_allclose(mix, np.sum([s.load() for s in track.stems], axis=0),
                               atol=(len(track.stems) + 1) / 32768)
