"""Arrangements from real multi-voice scores of music21's bundled corpus (offline).

A piece (Bach chorales, Monteverdi madrigals, Palestrina masses, Trecento songs, string quartets)
is cut to a window, transposed, and its voices are given instruments by register: the lowest
voice becomes Bass, Strings, Organ or Piano; the highest a melody instrument; inner voices
comping instruments. Sometimes a drum groove is added. Activity masks make solo bars.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pretty_midi

from engine.data.classes import DRUMS
from engine.data.patterns import (
    Arrangement,
    NoteWriter,
    Part,
    activity_masks,
    drum_groove,
)
from engine.types import EngineError

# composer → share of draws; parse times on this box (idle): bach ~0.1 s, madrigals, masses,
# Trecento songs and Mozart quartets 0.2–0.6 s (Beethoven and Haydn quartets, 1–16 s, are left out)
COMPOSERS: tuple[tuple[str, float], ...] = (
    ("bach", 0.6), ("monteverdi", 0.12), ("palestrina", 0.12), ("trecento", 0.1), ("mozart", 0.06),
)
SCORE_SUFFIXES = (".mxl", ".xml", ".krn")

# (class, programs) choices per register; classes in one track are distinct
LOW_CHOICES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Bass", (32, 33, 34, 35)), ("Strings", (42, 43, 48)), ("Organ", (19, 20)), ("Piano", (0, 1)),
)
MID_CHOICES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Piano", (0, 1, 4)), ("Guitar", (24, 25, 26, 27)), ("Organ", (16, 17, 19)),
    ("Strings", (41, 48, 49)), ("Synth Pad", (88, 89, 91)), ("Brass", (57, 60)), ("Reed", (70, 71)),
)
HIGH_CHOICES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Strings", (40, 48)), ("Reed", (65, 68, 71)), ("Brass", (56, 60)), ("Pipe", (73, 74)),
    ("Synth Lead", (80, 81)), ("Piano", (0,)), ("Guitar", (24, 25)), ("Organ", (16, 19)),
)
MAIN_WEIGHT = 3.0  # the six main classes are drawn 3x as often as the others
BASS_WEIGHT = 6.0  # the lowest voice becomes Bass about half of the time


@functools.lru_cache(maxsize=1)
def corpus_pieces() -> dict[str, tuple[str, ...]]:
    """Score paths of each composer in music21's corpus, sorted (stable across runs)."""
    from music21 import corpus

    out: dict[str, tuple[str, ...]] = {}
    for composer, _ in COMPOSERS:
        paths = sorted(str(p) for p in corpus.getComposer(composer) if Path(p).suffix in SCORE_SUFFIXES)
        if paths:
            out[composer] = tuple(paths)
    if not out:
        raise EngineError("music21's corpus has no scores; reinstall music21 (pip install music21)")
    return out


@functools.lru_cache(maxsize=64)
def _voices(path: str) -> tuple[tuple[tuple[float, float, tuple[int, ...]], ...], ...]:
    """Per voice: (offset, length, MIDI pitches) in quarter notes, ties merged."""
    from music21 import corpus

    with warnings.catch_warnings():  # music21 warns about odd measures in some corpus files
        warnings.simplefilter("ignore")
        score = corpus.parse(path)
    voices = []
    for part in score.parts:
        events = []
        for n in part.flatten().stripTies().notes:
            pitches = tuple(int(p.midi) for p in n.pitches)
            length = float(n.quarterLength)
            if pitches and length > 0:
                events.append((float(n.offset), length, pitches))
        if events:
            voices.append(tuple(events))
    return tuple(voices)


def _pick(rng: np.random.Generator, choices, taken: set[str]) -> tuple[str, int]:
    from engine.data.classes import MAIN_CLASSES

    free = [(c, progs) for c, progs in choices if c not in taken]
    w = np.array([BASS_WEIGHT if c == "Bass" else MAIN_WEIGHT if c in MAIN_CLASSES else 1.0
                  for c, _ in free])
    cls, progs = free[int(rng.choice(len(free), p=w / w.sum()))]
    return cls, int(rng.choice(progs))


def _draw_piece(rng: np.random.Generator) -> tuple[str, tuple]:
    pieces = corpus_pieces()
    names = [c for c, _ in COMPOSERS if c in pieces]
    w = np.array([dict(COMPOSERS)[c] for c in names])
    last_error = ""
    for _ in range(8):
        composer = names[int(rng.choice(len(names), p=w / w.sum()))]
        path = pieces[composer][int(rng.integers(len(pieces[composer])))]
        try:
            voices = _voices(path)
        except Exception as exc:  # noqa: BLE001 - a corpus file music21 cannot parse: draw another
            last_error = f"{Path(path).name}: {exc}"
            continue
        if len(voices) >= 2:
            return path, voices
    raise EngineError(f"no usable multi-voice score drawn from music21's corpus ({last_error}); "
                      "check the music21 installation")


def _onsets(events, window) -> list[tuple[float, float, tuple[int, ...]]]:
    """Events of a voice that start inside the window, with offsets relative to its start."""
    start_q, need_q, total_q, n_bars = window
    reps = max(1, int(np.ceil((start_q + need_q) / total_q)))
    out = []
    for r in range(reps):
        for off, length, pitches in events:
            q = off + r * total_q - start_q
            if 0 <= q < need_q and int(q // 4) < n_bars:
                out.append((q, length, pitches))
    return out


def _note_bars(events, window) -> set[int]:
    """Bars (of 4 quarters) of the window in which a voice starts a note."""
    return {int(q // 4) for q, _, _ in _onsets(events, window)}


def _pick_start(rng: np.random.Generator, voices, total_q: float, need_q: float,
                n_bars: int) -> float:
    """A window start (multiple of 4 quarters) where the chosen voices leave few silent bars."""
    if total_q <= need_q:
        return 0.0
    starts = 4.0 * np.arange(int((total_q - need_q) // 4) + 1)
    coverage = []
    for st in starts:
        window = (float(st), need_q, total_q, n_bars)
        bars = set().union(*(_note_bars(v, window) for v in voices))
        coverage.append(len(bars) / n_bars)
    coverage = np.array(coverage)
    good = np.flatnonzero(coverage >= min(0.95, coverage.max()))
    return float(starts[good[int(rng.integers(len(good)))]])


def _write_voice(rng: np.random.Generator, w: NoteWriter, events, window, shift: int,
                 base: int) -> None:
    """Write one voice's notes inside the window (looping a piece shorter than the window)."""
    for q, length, pitches in _onsets(events, window):
        bar = int(q // 4)
        vel = int(np.clip(base + rng.integers(-8, 9), 30, 127))
        for p in pitches:
            w.add(bar, q - 4 * bar, length * 0.97, p + shift, vel)


def corpus_arrangement(rng: np.random.Generator, duration_s: float) -> tuple[Arrangement, str]:
    """An arrangement of a random corpus piece cut to ``duration_s``; returns it and the piece name."""
    path, voices = _draw_piece(rng)
    tempo = float(rng.integers(60, 121))
    q_s = 60.0 / tempo
    bar_s = 4 * q_s
    n_bars = max(1, int(np.ceil(duration_s / bar_s)))
    need_q = duration_s / q_s
    total_q = max(e[0] + e[1] for v in voices for e in v)
    transpose = int(rng.integers(-5, 6))

    # voices ordered low → high by mean pitch; keep 2–5 of them (plus maybe drums, at most 5 stems)
    order = sorted(range(len(voices)), key=lambda i: np.mean([p for e in voices[i] for p in e[2]]))
    n_keep = int(rng.integers(2, min(5, len(order)) + 1))
    keep = sorted(rng.choice(len(order), size=n_keep, replace=False))
    if 0 not in keep and rng.random() < 0.7:  # usually keep the bass voice
        keep[0] = 0
    chosen = [order[k] for k in sorted(set(keep))]
    add_drums = len(chosen) < 5 and rng.random() < 0.4
    start_q = _pick_start(rng, [voices[v] for v in chosen], total_q, need_q, n_bars)
    window = (start_q, need_q, total_q, n_bars)

    taken: set[str] = set()
    specs: list[tuple[str, int, int]] = []  # (class, program, voice index or -1 for drums)
    for rank, vi in enumerate(chosen):
        if rank == 0:
            choices = LOW_CHOICES
        elif rank == len(chosen) - 1:
            choices = HIGH_CHOICES
        else:
            choices = MID_CHOICES
        cls, prog = _pick(rng, choices, taken)
        taken.add(cls)
        specs.append((cls, prog, vi))
    if add_drums:
        specs.append((DRUMS, 0, -1))

    layout = str(rng.choice(["full", "staggered", "alternating", "random"]))
    masks = activity_masks(rng, len(specs), n_bars, layout, bar_s)
    sounding = [set(range(n_bars)) if vi < 0 else _note_bars(voices[vi], window)
                for _, _, vi in specs]
    for b in range(n_bars):  # a bar whose active parts all rest gets a part that plays there
        if not any(m[b] and b in snd for m, snd in zip(masks, sounding, strict=True)):
            cands = [i for i, snd in enumerate(sounding) if b in snd]
            if cands:
                masks[cands[int(rng.integers(len(cands)))]][b] = True
    parts: list[Part] = []
    for (cls, prog, vi), active in zip(specs, masks, strict=True):
        inst = pretty_midi.Instrument(program=prog, is_drum=cls == DRUMS, name=cls)
        w = NoteWriter(inst, bar_s, duration_s, active)
        if vi < 0:
            drum_groove(rng, w, n_bars)
            parts.append(Part(cls, inst, "drums", active))
            continue
        shift = transpose
        mean = float(np.mean([p for e in voices[vi] for p in e[2]]))
        if cls == "Bass":  # bass an octave (or two) down into the bass register
            while mean + shift > 50:
                shift -= 12
        base = int(rng.integers(70, 106))
        _write_voice(rng, w, voices[vi], window, shift, base)
        if not inst.notes:  # the voice rests through its active bars: let it play throughout
            active[:] = [True] * n_bars
            _write_voice(rng, w, voices[vi], window, shift, base)
        if not inst.notes:
            continue
        role = "bass" if vi == chosen[0] else ("melody" if vi == chosen[-1] else "chords")
        parts.append(Part(cls, inst, role, active))
    if len(parts) < 2:
        return corpus_arrangement(rng, duration_s)
    name = Path(path).as_posix().rsplit("/corpus/", 1)[-1]  # e.g. bach/bwv66.6.mxl
    return Arrangement(tempo, transpose % 12, "score", bar_s, n_bars, parts, layout), name
