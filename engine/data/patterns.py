"""Generated multi-stem arrangements (pretty_midi): bass lines, drum grooves, comping, melodies.

Every arrangement is 4/4 in a random key, tempo (70–160 BPM) and chord progression, with 2–5 stems
drawn so that the six main Slakh classes come up evenly. Per-stem activity masks over the bars
(staggered entries, alternating solos, random subsets) make windows where a single stem plays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pretty_midi

from engine.data.classes import DRUMS, MAIN_CLASSES, class_programs

EXTRA_CLASSES: tuple[str, ...] = (
    "Brass", "Reed", "Pipe", "Synth Lead", "Synth Pad", "Chromatic Percussion",
)
CHORD_CLASSES = ("Piano", "Guitar", "Organ", "Strings", "Synth Pad")
MELODY_CLASSES = ("Brass", "Reed", "Pipe", "Synth Lead", "Chromatic Percussion")

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS_MAJOR = ((0, 4, 5, 3), (1, 4, 0, 0), (0, 3, 0, 4), (0, 5, 3, 4), (0, 3, 4, 3),
                      (5, 3, 0, 4), (0, 0, 3, 3, 0, 0, 4, 3))
PROGRESSIONS_MINOR = ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 0, 4), (0, 5, 3, 4))

# GM percussion keys
KICK, RIM, SNARE, CLAP, CL_HAT, PED_HAT, OP_HAT = 36, 37, 38, 39, 42, 44, 46
TOM_LO, TOM_MID, TOM_HI, TOM_HI2, CRASH, RIDE = 45, 47, 48, 50, 49, 51
DRUM_STYLES = ("rock", "four_on_floor", "funk", "half_time", "shuffle", "bossa", "breakbeat")

# Programs per class that sound right in the role they get (all inside the class's GM family).
ROLE_PROGRAMS: dict[str, tuple[int, ...]] = {
    "Guitar": (24, 25, 26, 27, 28, 29, 30),
    "Strings": (40, 41, 42, 44, 48, 49, 50, 51),
    "Synth Pad": (88, 89, 90, 91, 92, 94, 95),
}


@dataclass
class Part:
    """One stem of an arrangement: a pretty_midi instrument and its class."""

    inst_class: str
    instrument: pretty_midi.Instrument
    role: str
    active_bars: list[bool] = field(default_factory=list)


@dataclass
class Arrangement:
    """A whole generated track: tempo, key, bar length and its parts (one per stem)."""

    tempo: float
    key_root: int
    mode: str
    bar_s: float
    n_bars: int
    parts: list[Part]
    layout: str

    def to_midi(self) -> pretty_midi.PrettyMIDI:
        pm = pretty_midi.PrettyMIDI(initial_tempo=self.tempo)
        pm.instruments.extend(p.instrument for p in self.parts)
        return pm


def choose_classes(rng: np.random.Generator, n_stems: int) -> list[str]:
    """``n_stems`` distinct classes: mostly the six main ones, sometimes one extra class."""
    n_main = n_stems
    if n_stems >= 3 and rng.random() < 0.35:
        n_main = n_stems - 1
    classes = list(rng.choice(MAIN_CLASSES, size=min(n_main, len(MAIN_CLASSES)), replace=False))
    if n_main < n_stems:
        classes.append(str(rng.choice(EXTRA_CLASSES)))
    return [str(c) for c in classes]


def _pick_program(rng: np.random.Generator, inst_class: str) -> int:
    progs = ROLE_PROGRAMS.get(inst_class) or tuple(class_programs(inst_class))
    return int(rng.choice(progs))


def activity_masks(rng: np.random.Generator, n_parts: int, n_bars: int, layout: str,
                   bar_s: float = 2.0) -> list[list[bool]]:
    """Per-part bar masks; every bar has an active part, every part some active bars.

    Segments last about 4–7 s, so windows of 4–6 s where one stem plays alone are common.
    """
    masks = np.ones((n_parts, n_bars), dtype=bool)

    def seg_bars() -> int:
        return max(1, int(np.ceil(rng.uniform(4.0, 7.0) / bar_s)))

    if layout == "staggered":  # parts enter one after another
        step = max(int(np.ceil(4.0 / bar_s)), n_bars // (n_parts + 1))
        for i in range(1, n_parts):
            masks[i, : max(0, min(i * step, n_bars - 2))] = False
    elif layout == "alternating":  # parts take turns (sometimes in pairs)
        b, turn, order = 0, 0, rng.permutation(n_parts)
        while b < n_bars:
            seg = seg_bars()
            on = [int(order[turn % n_parts])]
            if rng.random() < 0.25:
                on.append(int(rng.integers(n_parts)))
            masks[:, b : b + seg] = False
            masks[on, b : b + seg] = True
            b, turn = b + seg, turn + 1
    elif layout == "random":  # segments with random non-empty subsets
        b = 0
        while b < n_bars:
            seg = seg_bars()
            on = rng.random(n_parts) < 0.5
            if not on.any():
                on[int(rng.integers(n_parts))] = True
            masks[:, b : b + seg] = on[:, None]
            b += seg
    for i in np.flatnonzero(~masks.any(axis=1)):  # a part that never plays gets two bars
        b = int(rng.integers(0, max(1, n_bars - 1)))
        masks[i, b : b + 2] = True
    return [list(map(bool, m)) for m in masks]


def _chord_pitches(key_root: int, scale: tuple[int, ...], degree: int, seventh: bool) -> list[int]:
    """Pitch classes (as offsets, possibly > 12) of a diatonic triad or seventh chord."""
    idx = [degree, degree + 2, degree + 4] + ([degree + 6] if seventh else [])
    return [key_root + scale[i % 7] + 12 * (i // 7) for i in idx]


def _fit(pitch: int, low: int, high: int) -> int:
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return pitch


def _vel(rng: np.random.Generator, base: int, spread: int = 10) -> int:
    return int(np.clip(base + rng.integers(-spread, spread + 1), 20, 127))


class NoteWriter:
    """Adds notes on a bar/beat grid, clipped to the track length and the part's active bars."""

    def __init__(self, inst: pretty_midi.Instrument, bar_s: float, duration: float,
                 active: list[bool]) -> None:
        self.inst, self.bar_s, self.duration, self.active = inst, bar_s, duration, active

    def add(self, bar: int, beat: float, length_beats: float, pitch: int, velocity: int) -> None:
        if not self.active[bar]:
            return
        beat_s = self.bar_s / 4.0
        start = bar * self.bar_s + beat * beat_s
        next_on = bar + 1 < len(self.active) and self.active[bar + 1]
        limit = self.duration if next_on else min((bar + 1) * self.bar_s, self.duration)
        end = min(start + length_beats * beat_s, limit)
        if end - start < 0.02 or not 0 <= pitch <= 127:
            return
        self.inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=int(pitch),
                                                start=float(start), end=float(end)))


def _bass(rng, w: NoteWriter, chords: list[list[int]], n_bars: int) -> None:
    style = rng.choice(["root8", "root_fifth", "walking", "octave", "syncopated"])
    base = int(rng.integers(80, 111))
    for bar in range(n_bars):
        root = _fit(chords[bar][0], 33, 47)
        fifth = root + 7
        nxt = _fit(chords[(bar + 1) % n_bars][0], 33, 47)
        if style == "root8":
            for i in range(8):
                w.add(bar, i * 0.5, 0.45, root, _vel(rng, base - (0 if i % 2 == 0 else 12)))
        elif style == "root_fifth":
            w.add(bar, 0, 1.9, root, _vel(rng, base))
            w.add(bar, 2, 1.9, fifth if rng.random() < 0.7 else root + 12, _vel(rng, base - 8))
        elif style == "walking":
            third = _fit(chords[bar][1], root, root + 11)
            approach = nxt - 1 if rng.random() < 0.5 else nxt + 1
            for i, p in enumerate((root, third, fifth, approach)):
                w.add(bar, i, 0.95, p, _vel(rng, base - 4 * (i % 2)))
        elif style == "octave":
            for i in range(8):
                w.add(bar, i * 0.5, 0.4, root + (12 if i % 2 else 0), _vel(rng, base))
        else:  # syncopated
            for beat, length, p in ((0, 1.4, root), (1.5, 0.4, root), (2.5, 0.9, fifth),
                                    (3.5, 0.45, root + 12)):
                w.add(bar, beat, length, p, _vel(rng, base))


def drum_groove(rng, w: NoteWriter, n_bars: int) -> None:
    style = str(rng.choice(DRUM_STYLES))
    base = int(rng.integers(85, 116))
    hat = RIDE if rng.random() < 0.2 else CL_HAT
    for bar in range(n_bars):
        hits: list[tuple[float, int, int]] = []  # (beat, key, velocity offset)
        if style == "rock":
            hits += [(0, KICK, 0), (2, KICK, 0), (2.5, KICK, -15), (1, SNARE, 0), (3, SNARE, 0)]
            hits += [(i * 0.5, hat, -20 if i % 2 else -10) for i in range(8)]
        elif style == "four_on_floor":
            hits += [(b, KICK, 0) for b in range(4)] + [(1, CLAP, -5), (3, CLAP, -5)]
            hits += [(b + 0.5, OP_HAT, -20) for b in range(4)]
        elif style == "funk":
            hits += [(0, KICK, 0), (0.75, KICK, -15), (2.5, KICK, -5), (1, SNARE, 0), (3, SNARE, 0),
                     (1.75, SNARE, -40), (3.25, SNARE, -40)]
            hits += [(i * 0.25, CL_HAT, -25 if i % 2 else -12) for i in range(16)]
        elif style == "half_time":
            hits += [(0, KICK, 0), (1.5, KICK, -10), (2, SNARE, 0)]
            hits += [(i * 0.5, hat, -20) for i in range(8)]
        elif style == "shuffle":
            hits += [(0, KICK, 0), (2, KICK, -5), (1, SNARE, 0), (3, SNARE, 0)]
            for b in range(4):
                hits += [(b, hat, -15), (b + 2 / 3, hat, -28)]
        elif style == "bossa":
            hits += [(0, KICK, -5), (1.5, KICK, -10), (2, KICK, -5), (3.5, KICK, -10)]
            hits += [(t, RIM, -10) for t in (0, 0.75, 1.5, 2.5, 3.25)]
            hits += [(i * 0.5, CL_HAT, -30) for i in range(8)]
        else:  # breakbeat
            hits += [(0, KICK, 0), (1.5, KICK, -5), (2.25, KICK, -10), (1, SNARE, 0), (3, SNARE, 0),
                     (2.75, SNARE, -25)]
            hits += [(i * 0.5, CL_HAT, -15) for i in range(8)] + [(3.5, OP_HAT, -15)]
        if bar % 4 == 0 and rng.random() < 0.6:
            hits.append((0, CRASH, -5))
        if bar % 4 == 3 and rng.random() < 0.5:  # tom fill over the last beat
            hits = [h for h in hits if h[0] < 3]
            for i, key in enumerate((TOM_HI2, TOM_HI, TOM_MID, TOM_LO)):
                hits.append((3 + i * 0.25, key, -5))
        for beat, key, off in hits:
            w.add(bar, beat, 0.25, key, _vel(rng, base + off, 6))


def _comp(rng, w: NoteWriter, inst_class: str, chords: list[list[int]], n_bars: int) -> None:
    styles = {"Piano": ["block", "arpeggio", "offbeat", "half"],
              "Guitar": ["strum", "arpeggio", "offbeat"],
              "Organ": ["sustain", "half", "block"],
              "Strings": ["sustain", "half", "pulse"],
              "Synth Pad": ["sustain", "half"]}[inst_class]
    style = str(rng.choice(styles))
    base = int(rng.integers(65, 101))
    low = 52 if inst_class != "Strings" else 48
    for bar in range(n_bars):
        voicing = sorted(_fit(p, low, low + 16) for p in chords[bar])
        if style == "sustain":
            for p in voicing:
                w.add(bar, 0, 4.0, p, _vel(rng, base - 10, 4))
        elif style == "half":
            for b in (0, 2):
                for p in voicing:
                    w.add(bar, b, 1.9, p, _vel(rng, base))
        elif style == "block":
            for b in (0, 1, 2, 3):
                for p in voicing:
                    w.add(bar, b, 0.8, p, _vel(rng, base - (0 if b % 2 == 0 else 10)))
        elif style == "offbeat":
            for b in (0.5, 1.5, 2.5, 3.5):
                for p in voicing:
                    w.add(bar, b, 0.35, p, _vel(rng, base))
        elif style == "pulse":
            for i in range(8):
                for p in voicing:
                    w.add(bar, i * 0.5, 0.45, p, _vel(rng, base - 8, 4))
        elif style == "strum":
            for b, length in ((0, 1.5), (1.5, 1.0), (2.5, 0.5), (3, 1.0)):
                for j, p in enumerate(voicing):
                    w.add(bar, b + j * 0.04, length - j * 0.04, p, _vel(rng, base - 3 * j))
        else:  # arpeggio
            seq = voicing + [voicing[0] + 12] + voicing[1:][::-1]
            for i in range(8):
                w.add(bar, i * 0.5, 0.5, seq[i % len(seq)], _vel(rng, base))


def _melody(rng, w: NoteWriter, key_root: int, scale: tuple[int, ...], chords: list[list[int]],
            n_bars: int) -> None:
    low, high = 62, 86
    pool = [p for p in range(low, high + 1) if (p - key_root) % 12 in scale]
    base = int(rng.integers(75, 111))
    # a two-bar rhythm motif, (beat, length) pairs, reused with new pitches
    grids = [(0, 1), (1, 0.5), (1.5, 0.5), (2, 1.5), (4, 0.5), (4.5, 0.5), (5, 1), (6, 2)]
    motif = [g for g in grids if rng.random() < 0.8] or grids[:2]
    idx = int(rng.integers(len(pool) // 3, 2 * len(pool) // 3))
    for bar in range(0, n_bars, 2):
        for beat, length in motif:
            b = bar + int(beat // 4)
            if b >= n_bars:
                break
            idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(pool) - 1))
            pitch = pool[idx]
            if beat % 4 == 0:  # chord tone on the downbeat
                tones = [_fit(p, low, high) for p in chords[b]]
                pitch = min(tones, key=lambda t: abs(t - pitch))
            w.add(b, beat % 4, length * 0.95, pitch, _vel(rng, base))


def generate_arrangement(rng: np.random.Generator, duration_s: float,
                         n_stems: int | None = None) -> Arrangement:
    """A random arrangement of ``n_stems`` (2–5, random when None) stems covering ``duration_s``."""
    tempo = float(rng.integers(70, 161))
    bar_s = 4 * 60.0 / tempo
    n_bars = max(1, int(np.ceil(duration_s / bar_s)))
    mode = "major" if rng.random() < 0.6 else "minor"
    scale = MAJOR if mode == "major" else MINOR
    key_root = int(rng.integers(0, 12))
    progs = PROGRESSIONS_MAJOR if mode == "major" else PROGRESSIONS_MINOR
    prog = progs[int(rng.integers(len(progs)))]
    seventh = rng.random() < 0.3
    chords = [_chord_pitches(key_root, scale, prog[b % len(prog)], seventh) for b in range(n_bars)]

    n = int(n_stems) if n_stems is not None else int(rng.integers(2, 6))
    classes = choose_classes(rng, n)
    layout = str(rng.choice(["full", "staggered", "alternating", "random"], p=[0.25, 0.25, 0.25, 0.25]))
    masks = activity_masks(rng, len(classes), n_bars, layout, bar_s)

    has_chords = False
    parts: list[Part] = []
    for cls, active in zip(classes, masks, strict=True):
        is_drum = cls == DRUMS
        program = 0 if is_drum else _pick_program(rng, cls)
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum, name=cls)
        w = NoteWriter(inst, bar_s, duration_s, active)
        if is_drum:
            role = "drums"
            drum_groove(rng, w, n_bars)
        elif cls == "Bass":
            role = "bass"
            _bass(rng, w, chords, n_bars)
        elif cls in CHORD_CLASSES and not (has_chords and cls != "Synth Pad" and rng.random() < 0.3):
            role = "chords"
            has_chords = True
            _comp(rng, w, cls, chords, n_bars)
        else:
            role = "melody"
            _melody(rng, w, key_root, scale, chords, n_bars)
        parts.append(Part(cls, inst, role, active))
    return Arrangement(tempo, key_root, mode, bar_s, n_bars, parts, layout)
