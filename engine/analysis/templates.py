"""Instrument-band ground truth: knowledge-driven Hz ranges and data-driven masks from stems.

Knowledge-driven templates (:data:`INSTRUMENT_BANDS`), one per Slakh2100 instrument class
(Slakh groups General MIDI programs in blocks of eight: Piano 0–7, Chromatic Percussion 8–15,
Organ 16–23, Guitar 24–31, Bass 32–39, Strings 40–55, Brass 56–63, Reed 64–71, Pipe 72–79,
Synth Lead 80–87, Synth Pad 88–95; Drums are channel 10).

* ``fundamental``: the span of fundamental frequencies over the class's usual instruments, from
  their standard playing ranges in equal temperament (A4 = 440 Hz), as tabulated in
  H. F. Olson, *Music, Physics and Engineering* (2nd ed., Dover 1967, ch. 6) and
  N. H. Fletcher & T. D. Rossing, *The Physics of Musical Instruments* (2nd ed., Springer 1998).
* ``band``: fundamentals plus the harmonics that carry most of the energy. Its upper limit is a
  **convention of this project** (rounded, in the spirit of the usual "instrument frequency range"
  charts used by recording engineers), not a measured quantity. Synth classes have no acoustic
  range at all; their templates are conventions for typical MIDI parts and are marked so.

Masks on a target grid use each bin's centre Hz (:func:`engine.analysis.melscale.grid_hz`): a bin
is in the band when its centre lies inside ``[lo, hi]``. Data-driven ground truth comes from stems
via the model's own mel definition (see :func:`frequency_profile` and :func:`activity_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.mapping import DEFAULT_TARGET, resize
from engine.analysis.melscale import grid_edges_hz, grid_hz, mel_spectrogram
from engine.types import EngineError, MelSpec


@dataclass(frozen=True)
class BandTemplate:
    """A knowledge-driven frequency template for one instrument class (Hz)."""

    name: str
    fundamental: tuple[float, float]
    band: tuple[float, float]
    basis: str  # how the numbers were obtained
    convention: bool = False  # True: no acoustic basis, a project convention


INSTRUMENT_BANDS: dict[str, BandTemplate] = {
    t.name: t
    for t in (
        BandTemplate(
            "Bass",
            (41.2, 392.0),
            (40.0, 1000.0),
            "4-string bass E1–G4 (5-string B0 30.9 Hz rarely used); harmonics to ~1 kHz",
        ),
        BandTemplate(
            "Drums",
            (45.0, 250.0),
            (40.0, 16000.0),
            "kick ~45–100 Hz, toms ~80–250 Hz, snare body ~150–250 Hz; snare wires, "
            "hi-hats and cymbals are noise-like up to ~16 kHz: the kit spans the full band",
        ),
        BandTemplate(
            "Guitar",
            (82.4, 1318.5),
            (80.0, 5000.0),
            "standard tuning E2 to E6 (24th fret); string harmonics to ~5 kHz",
        ),
        BandTemplate(
            "Piano",
            (27.5, 4186.0),
            (27.5, 8000.0),
            "88 keys A0–C8; upper limit of the band is the grid's usual fmax",
        ),
        BandTemplate(
            "Chromatic Percussion",
            (110.0, 4186.0),
            (110.0, 8000.0),
            "marimba A2–C7, vibraphone F3–F6, xylophone F4–C8, celesta C4–C8, "
            "glockenspiel G5–C8 (sounding); bright inharmonic partials",
        ),
        BandTemplate(
            "Organ",
            (65.4, 2093.0),
            (60.0, 6000.0),
            "manual range C2–C7 (pedal 32'/16' stops reach 16–33 Hz, rare in GM parts); "
            "drawbar harmonics to ~6 kHz",
        ),
        BandTemplate(
            "Strings",
            (41.2, 3520.0),
            (40.0, 8000.0),
            "contrabass E1, cello C2, viola C3, violin G3 up to ~A7; bowed-string "
            "harmonics to ~8 kHz",
        ),
        BandTemplate(
            "Brass",
            (36.7, 1046.5),
            (35.0, 5000.0),
            "tuba D1–F4, trombone E2–F5, horn B1–F5, trumpet F#3–C6; bright harmonics to ~5 kHz",
        ),
        BandTemplate(
            "Reed",
            (58.3, 2093.0),
            (55.0, 5000.0),
            "bassoon Bb1–E5, baritone-to-soprano saxophones C2–E6, clarinet E3–C7, "
            "oboe Bb3–A6; reed harmonics to ~5 kHz",
        ),
        BandTemplate(
            "Pipe",
            (261.6, 4186.0),
            (250.0, 8000.0),
            "flute C4–C7, piccolo D5–C8, recorders, pan flute; weak upper harmonics "
            "plus breath noise",
        ),
        BandTemplate(
            "Synth Lead",
            (130.8, 1046.5),
            (130.0, 8000.0),
            "convention: lead lines typically C3–C6 with saw/square harmonics to the "
            "top of the grid",
            convention=True,
        ),
        BandTemplate(
            "Synth Pad",
            (65.4, 1046.5),
            (65.0, 4000.0),
            "convention: sustained chords typically C2–C6, low-pass filtered (harmonics to ~4 kHz)",
            convention=True,
        ),
    )
}

#: AIBA's coarse low / mid / high regions (a convention; boundaries at 250 Hz and 2 kHz).
REGIONS: dict[str, BandTemplate] = {
    "low": BandTemplate("low", (20.0, 250.0), (20.0, 250.0), "convention", convention=True),
    "mid": BandTemplate("mid", (250.0, 2000.0), (250.0, 2000.0), "convention", convention=True),
    "high": BandTemplate(
        "high", (2000.0, 20000.0), (2000.0, 20000.0), "convention", convention=True
    ),
}

#: Knowledge-driven coarse ground truth (a **convention of this project**, after AIBA Sec. 2.2 and
#: its qualitative reading "bass in low bands, guitars/piano in mid-to-high, drums across wide
#: ranges"): the :data:`REGIONS` where each class's fundamentals and main energy lie.
CLASS_REGIONS: dict[str, tuple[str, ...]] = {
    "Bass": ("low",),
    "Drums": ("low", "high"),  # kick/toms/snare body below 250 Hz; hats, cymbals, wires above 2 kHz
    "Guitar": ("mid",),
    "Piano": ("mid",),
    "Chromatic Percussion": ("mid", "high"),
    "Organ": ("mid",),
    "Strings": ("mid",),
    "Brass": ("mid",),
    "Reed": ("mid",),
    "Pipe": ("mid", "high"),
    "Synth Lead": ("mid",),
    "Synth Pad": ("mid",),
}

#: The knowledge-driven ranges a template mask can be built from.
TEMPLATE_RANGES = ("band", "fundamental", "region")

_ALIASES = {
    "guitars": "Guitar",
    "strings (continued)": "Strings",
    "string": "Strings",
    "pianos": "Piano",
    "organs": "Organ",
    "drum": "Drums",
    "basses": "Bass",
    "chromatic percussion": "Chromatic Percussion",
    "synth lead": "Synth Lead",
    "synth pad": "Synth Pad",
}


def band_template(name: str) -> BandTemplate:
    """The template for an instrument class (case-insensitive; Slakh spellings accepted)."""
    key = name.strip().lower()
    for table in (INSTRUMENT_BANDS, REGIONS):
        for k, t in table.items():
            if k.lower() == key:
                return t
    if key in _ALIASES:
        return INSTRUMENT_BANDS[_ALIASES[key]]
    raise EngineError(f"no band template for {name!r}: use one of {', '.join(INSTRUMENT_BANDS)}")


def hz_range_mask(lo: float, hi: float, spec: MelSpec, n_bins: int) -> np.ndarray:
    """``(F,)`` bool: bins whose centre Hz lies in ``[lo, hi]``.

    When the range overlaps the grid but falls between two centres, the bin whose tile holds the
    range's geometric middle is set, so a narrow in-range band never yields an empty mask.
    """
    if not 0 <= lo < hi:
        raise EngineError(f"bad band {lo}–{hi} Hz: need 0 ≤ lo < hi")
    centres = grid_hz(spec, n_bins)
    mask = (centres >= lo) & (centres <= hi)
    edges = grid_edges_hz(spec, n_bins)
    if not mask.any() and hi >= edges[0] and lo <= edges[-1]:
        mid = np.sqrt(max(lo, edges[0], 1e-6) * min(hi, edges[-1]))
        mask[int(np.clip(np.searchsorted(edges, mid) - 1, 0, n_bins - 1))] = True
    return mask


def class_regions(name: str | BandTemplate) -> tuple[str, ...]:
    """The :data:`REGIONS` of an instrument class (:data:`CLASS_REGIONS`; a region names itself)."""
    t = name if isinstance(name, BandTemplate) else band_template(name)
    if t.name in REGIONS:
        return (t.name,)
    if t.name not in CLASS_REGIONS:
        raise EngineError(f"no low/mid/high region for {t.name!r}: use one of {', '.join(CLASS_REGIONS)}")
    return CLASS_REGIONS[t.name]


def band_mask(
    name: str | BandTemplate, spec: MelSpec, n_bins: int = DEFAULT_TARGET[1], which: str = "band"
) -> np.ndarray:
    """``(F,)`` bool mask of an instrument's ``band``, ``fundamental`` or ``region`` on the grid.

    ``region``: the union of the class's low (< 250 Hz) / mid (250 Hz–2 kHz) / high (> 2 kHz)
    regions (:data:`CLASS_REGIONS`); region edges are half-open so the three regions partition
    the grid.
    """
    t = name if isinstance(name, BandTemplate) else band_template(name)
    if which not in TEMPLATE_RANGES:
        raise EngineError(f"unknown template range {which!r}: use one of {', '.join(TEMPLATE_RANGES)}")
    if which == "region":
        centres = grid_hz(spec, n_bins)
        mask = np.zeros(n_bins, dtype=bool)
        for r in class_regions(t):
            lo, hi = REGIONS[r].band
            mask |= (centres >= (0.0 if r == "low" else lo)) & (centres < hi)
        return mask
    lo, hi = t.band if which == "band" else t.fundamental
    return hz_range_mask(lo, hi, spec, n_bins)


def band_tf_mask(
    name: str | BandTemplate,
    spec: MelSpec,
    shape: tuple[int, int] = DEFAULT_TARGET,
    which: str = "band",
) -> np.ndarray:
    """The band mask repeated over time: ``(T, F)`` bool (a template active everywhere in time)."""
    return np.broadcast_to(band_mask(name, spec, shape[1], which), shape).copy()


def _fit_duration(audio: np.ndarray, sample_rate: int, duration: float | None) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0) if x.shape[0] < x.shape[1] else x.mean(axis=1)
    if duration is None:
        return x
    n = int(round(duration * sample_rate))
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


def stem_mel_grid(
    audio: np.ndarray,
    sample_rate: int,
    spec: MelSpec,
    shape: tuple[int, int] = DEFAULT_TARGET,
    duration: float | None = None,
) -> np.ndarray:
    """Mel power of a stem on the ``(T, F)`` grid (area-averaged; ``F`` maps onto the mel axis).

    ``duration`` crops or zero-pads the stem first, so it covers the same seconds as the clip.
    """
    x = _fit_duration(audio, sample_rate, duration)
    mel = mel_spectrogram(x, spec, sample_rate)  # (frames, n_mels)
    return resize(mel, shape, mode="area")


def frequency_profile(
    audio: np.ndarray,
    sample_rate: int,
    spec: MelSpec,
    n_bins: int = DEFAULT_TARGET[1],
    floor_db: float = -60.0,
) -> np.ndarray:
    """Data-driven profile ``(F,)`` summing to 1: mel power → per-frame normalisation → mean.

    Each frame's mel power is divided by its sum; frames more than ``floor_db`` below the loudest
    frame are left out (silence would otherwise add noise-floor shapes). The mean over frames is
    area-mapped from ``n_mels`` onto ``n_bins``.
    """
    mel = mel_spectrogram(_fit_duration(audio, sample_rate, None), spec, sample_rate)
    energy = mel.sum(axis=1)
    if energy.max() <= 0:
        raise EngineError("the stem is silent: no frequency profile can be computed")
    keep = energy >= energy.max() * 10.0 ** (floor_db / 10.0)
    per_frame = mel[keep] / energy[keep, None]
    prof = resize(per_frame.mean(axis=0)[None, :], (1, n_bins), mode="area")[0]
    return prof / prof.sum()


def activity_mask(
    audio: np.ndarray,
    sample_rate: int,
    spec: MelSpec,
    shape: tuple[int, int] = DEFAULT_TARGET,
    threshold_db: float = -30.0,
    rule: str = "global",
    frame_floor_db: float = -60.0,
    duration: float | None = None,
) -> np.ndarray:
    """Binary T–F activity ``(T, F)`` of a stem on the target grid.

    The stem's mel power is area-averaged onto the grid (:func:`stem_mel_grid`). A frame is
    active when its total power is within ``frame_floor_db`` of the loudest frame. A cell of an
    active frame is active when its power is within ``threshold_db`` of the stem's maximum cell
    (``rule="global"``) or of its own frame's maximum cell (``rule="frame"``).
    """
    if rule not in ("global", "frame"):
        raise EngineError(f"unknown activity rule {rule!r}: use 'global' or 'frame'")
    p = stem_mel_grid(audio, sample_rate, spec, shape, duration)
    if p.max() <= 0:
        return np.zeros(shape, dtype=bool)
    frame_energy = p.sum(axis=1)
    frame_on = frame_energy >= frame_energy.max() * 10.0 ** (frame_floor_db / 10.0)
    ref = p.max() if rule == "global" else np.maximum(p.max(axis=1, keepdims=True), 1e-30)
    cells = p >= ref * 10.0 ** (threshold_db / 10.0)
    return cells & frame_on[:, None] & (p > 0)
