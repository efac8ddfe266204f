"""Slakh2100's instrument classes: one General MIDI program → class table for renderer and reader.

Slakh groups the 128 GM programs in families of eight. The six classes of the AIBA paper are
``MAIN_CLASSES``; the Strings family also takes the string ensembles (48–51), as Slakh does.
"""

from __future__ import annotations

import pretty_midi

from engine.types import EngineError

MAIN_CLASSES: tuple[str, ...] = ("Bass", "Drums", "Guitar", "Piano", "Strings", "Organ")

# (first program, last program, class), inclusive ranges, 0-based GM program numbers.
PROGRAM_CLASS_TABLE: tuple[tuple[int, int, str], ...] = (
    (0, 7, "Piano"),
    (8, 15, "Chromatic Percussion"),
    (16, 23, "Organ"),
    (24, 31, "Guitar"),
    (32, 39, "Bass"),
    (40, 51, "Strings"),
    (52, 55, "Strings (continued)"),
    (56, 63, "Brass"),
    (64, 71, "Reed"),
    (72, 79, "Pipe"),
    (80, 87, "Synth Lead"),
    (88, 95, "Synth Pad"),
    (96, 103, "Synth Effects"),
    (104, 111, "Ethnic"),
    (112, 119, "Percussive"),
    (120, 127, "Sound Effects"),
)

DRUMS = "Drums"

ALL_CLASSES: tuple[str, ...] = tuple(dict.fromkeys([c for _, _, c in PROGRAM_CLASS_TABLE] + [DRUMS]))


def program_class(program: int, is_drum: bool = False) -> str:
    """Slakh class of a GM program (0–127); every drum track is ``"Drums"``."""
    if is_drum:
        return DRUMS
    program = int(program)
    for first, last, name in PROGRAM_CLASS_TABLE:
        if first <= program <= last:
            return name
    raise EngineError(f"MIDI program {program} is outside 0-127; use a General MIDI program number")


def class_programs(inst_class: str) -> list[int]:
    """GM programs of one class (empty for ``"Drums"``, which is a drum channel, not a program)."""
    if inst_class == DRUMS:
        return []
    progs = [p for first, last, name in PROGRAM_CLASS_TABLE if name == inst_class
             for p in range(first, last + 1)]
    if not progs:
        raise EngineError(f"unknown instrument class {inst_class!r}; use one of {', '.join(ALL_CLASSES)}")
    return progs


def program_name(program: int, is_drum: bool = False) -> str:
    """General MIDI name of a program (``"Drums"`` for a drum track), as in Slakh's metadata."""
    if is_drum:
        return "Drums"
    return pretty_midi.program_to_instrument_name(int(program))


def canonical_class(inst_class: str) -> str:
    """The class name used here for a Slakh ``inst_class`` value.

    ``"X (continued)"`` folds into ``"X"`` (Slakh splits its Strings family into ``Strings`` and
    ``Strings (continued)``); names differing from :data:`ALL_CLASSES` only in case or spacing take
    its spelling (Slakh writes both ``Sound Effects`` and ``Sound effects``); others are unchanged.
    """
    name = " ".join(str(inst_class).split())
    if name.lower().endswith("(continued)"):
        name = name[: -len("(continued)")].rstrip()
    return next((c for c in ALL_CLASSES if c.lower() == name.lower()), name)
