"""Read Slakh2100 datasets: the original, ``slakh2100_flac_redux`` and BabySlakh releases and what
``render-dataset`` writes.

``root`` may hold ``TrackNNNNN`` folders directly or in split folders (``train``, ``validation``,
``test``, ``omitted``), or be one track folder. Each track folder holds ``metadata.yaml``, the stem
audio (``SNN.flac`` or ``SNN.wav``), optionally ``mix.flac``/``mix.wav``, ``all_src.mid`` and the
per-stem MIDI files.

``audio_dir`` / ``midi_dir`` of ``metadata.yaml`` are read in both forms found in the releases:

* relative to the **split folder**, ``Track00001/stems`` (``slakh2100_flac_redux``): the first part
  names the track folder itself;
* relative to the **track folder**, ``stems`` (BabySlakh, the original release's documentation,
  ``render-dataset``); missing keys default to ``stems`` and ``MIDI``.

A path naming another track folder, an absolute path or one with ``..`` is refused (the track is
skipped with the reason). Stems with ``audio_rendered: false`` are skipped (listed in
``Track.skipped_stems``); a rendered stem without audio makes the whole track unusable (its class
sums would be incomplete). ``inst_class`` values are folded by
:func:`engine.data.classes.canonical_class` (``Strings (continued)`` → ``Strings``).

Tracks that cannot be used are listed in ``scan_report`` with a one-line reason (no metadata.yaml,
malformed YAML, no rendered stems, audio folder or stem files missing — with the folder looked
in); scanning never raises for a bad track. :meth:`SlakhDataset.report` gives one line per track.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from scipy.signal import resample_poly

from engine.data.classes import canonical_class, program_class
from engine.types import EngineError

SPLITS: tuple[str, ...] = ("train", "validation", "test", "omitted")
TRACK_NAME = re.compile(r"Track\d+$")
AUDIO_EXTS: tuple[str, ...] = (".flac", ".wav")


def load_mono(path: Path, sr: int | None = None, start_s: float = 0.0,
              end_s: float | None = None) -> np.ndarray:
    """Mono float32 audio of ``path`` between ``start_s`` and ``end_s``, resampled to ``sr`` if given."""
    try:
        info = sf.info(str(path))
        start = int(round(start_s * info.samplerate))
        stop = None if end_s is None else int(round(end_s * info.samplerate))
        audio, file_sr = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise EngineError(f"cannot read audio {path}: {exc}; check the file") from exc
    mono = audio.mean(axis=1, dtype=np.float64)
    if sr is not None and int(sr) != file_sr:
        g = gcd(int(sr), int(file_sr))
        mono = resample_poly(mono, int(sr) // g, int(file_sr) // g)
    return mono.astype(np.float32)


@dataclass
class Stem:
    """One rendered stem of a track."""

    stem_id: str
    inst_class: str
    program_num: int
    is_drum: bool
    audio_path: Path
    midi_path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_rate(self) -> int:
        return int(sf.info(str(self.audio_path)).samplerate)

    def load(self, sr: int | None = None, start_s: float = 0.0,
             end_s: float | None = None) -> np.ndarray:
        """Mono float32 audio (at ``sr`` if given, else the file's rate)."""
        return load_mono(self.audio_path, sr, start_s, end_s)


@dataclass
class Track:
    """One usable track: its rendered stems (in stem-id order), mix and metadata."""

    id: str
    path: Path
    split: str | None
    stems: list[Stem]
    mix_path: Path | None
    metadata: dict[str, Any]
    skipped_stems: list[tuple[str, str]] = field(default_factory=list)  # (stem id, reason)
    all_src_midi: Path | None = None  # all_src.mid: the Lakh MIDI file with all sources
    lmd_midi: str | None = None  # metadata ``lmd_midi_dir``: path of the source file in Lakh MIDI

    def classes(self) -> list[str]:
        """Sorted distinct instrument classes of the rendered stems."""
        return sorted({s.inst_class for s in self.stems})

    def load_mix(self, sr: int | None = None, start_s: float = 0.0,
                 end_s: float | None = None) -> np.ndarray:
        """The mix file, or the sum of the stems when the track has none."""
        if self.mix_path is not None:
            return load_mono(self.mix_path, sr, start_s, end_s)
        parts = [s.load(sr, start_s, end_s) for s in self.stems]
        n = min(p.shape[0] for p in parts)
        return np.sum([p[:n] for p in parts], axis=0).astype(np.float32)

    def active_classes(self, start_s: float, end_s: float, threshold_db: float = -45.0,
                       frame_s: float = 0.1) -> list[str]:
        """Classes with a stem whose RMS in some ``frame_s`` frame of the window exceeds ``threshold_db`` dBFS."""
        active = set()
        for stem in self.stems:
            if stem.inst_class in active:
                continue
            x = stem.load(None, start_s, end_s)
            hop = max(1, int(round(frame_s * stem.sample_rate)))
            n = x.shape[0] // hop
            if n == 0:
                continue
            rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
            if np.max(rms) > 10.0 ** (threshold_db / 20.0):
                active.add(stem.inst_class)
        return sorted(active)


@dataclass(frozen=True)
class SkippedTrack:
    """A track folder the reader could not use, and why."""

    path: Path
    reason: str


def _find_audio(folder: Path, stem_id: str) -> Path | None:
    for ext in AUDIO_EXTS:
        p = folder / f"{stem_id}{ext}"
        if p.is_file():
            return p
    return None


def _stem_class(meta: dict[str, Any], program: int, is_drum: bool) -> str:
    if is_drum:
        return "Drums"
    name = meta.get("inst_class")
    if isinstance(name, str) and name:
        return canonical_class(name)
    return canonical_class(program_class(program, is_drum))


def resolve_dir(folder: Path, value: Any, default: str, key: str) -> tuple[Path | None, str]:
    """``(directory, how it was read)`` for a metadata ``audio_dir``/``midi_dir`` value, or
    ``(None, reason)`` when the value cannot name a folder of this track (see module docstring)."""
    if value is None or value == "":
        return folder / default, f"{key} missing: default {default}/"
    if not isinstance(value, str):
        return None, f"{key} {value!r} is not a path"
    rel = Path(value.replace("\\", "/"))
    parts = [q for q in rel.parts if q not in ("", ".")]
    if rel.is_absolute() or ".." in parts or not parts:
        return None, f"{key} {value!r} must be a relative folder (e.g. stems or {folder.name}/stems)"
    if len(parts) > 1 and parts[0] == folder.name:
        return folder.joinpath(*parts[1:]), f"{key} {value!r} read relative to the split folder"
    if len(parts) > 1 and TRACK_NAME.match(parts[0]):
        return None, (f"{key} {value!r} names track folder {parts[0]}, but this folder is "
                      f"{folder.name}: rename the folder or fix metadata.yaml")
    return folder.joinpath(*parts), f"{key} {value!r} read relative to the track folder"


def read_track(folder: Path, split: str | None = None) -> Track | SkippedTrack:
    """Read one ``TrackNNNNN`` folder; a ``SkippedTrack`` with the reason when it is unusable."""
    meta_path = folder / "metadata.yaml"
    if not meta_path.is_file():
        return SkippedTrack(folder, "missing metadata.yaml")
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return SkippedTrack(folder, f"malformed metadata.yaml ({first})")
    if not isinstance(meta, dict) or not isinstance(meta.get("stems"), dict):
        return SkippedTrack(folder, "malformed metadata.yaml (no 'stems' mapping)")
    audio_dir, audio_how = resolve_dir(folder, meta.get("audio_dir"), "stems", "audio_dir")
    midi_dir, _ = resolve_dir(folder, meta.get("midi_dir"), "MIDI", "midi_dir")
    stems: list[Stem] = []
    skipped: list[tuple[str, str]] = []
    missing: list[str] = []
    for sid in sorted(meta["stems"], key=str):
        sm = meta["stems"][sid]
        sid = str(sid)
        if not isinstance(sm, dict):
            return SkippedTrack(folder, f"malformed metadata.yaml (stem {sid} is not a mapping)")
        if sm.get("audio_rendered", True) is False:
            skipped.append((sid, "audio_rendered: false"))
            continue
        if audio_dir is None:
            return SkippedTrack(folder, f"malformed metadata.yaml ({audio_how})")
        audio = _find_audio(audio_dir, sid)
        if audio is None:
            missing.append(sid)
            continue
        try:
            is_drum = bool(sm.get("is_drum", False))
            program = int(sm.get("program_num", 0))
            inst_class = _stem_class(sm, program, is_drum)
        except (TypeError, ValueError, EngineError) as exc:
            return SkippedTrack(folder, f"malformed metadata.yaml (stem {sid}: {exc})")
        midi = None if midi_dir is None or sm.get("midi_saved", True) is False else midi_dir / f"{sid}.mid"
        stems.append(Stem(sid, inst_class, program, is_drum, audio,
                          midi if midi is not None and midi.is_file() else None, dict(sm)))
    if missing:
        where = (f"folder {audio_dir} does not exist" if audio_dir is not None and not audio_dir.is_dir()
                 else f"no {'/'.join(f'{missing[0]}{e}' for e in AUDIO_EXTS)} in {audio_dir}")
        return SkippedTrack(folder, f"missing audio for rendered stem(s) {', '.join(missing)}: "
                                    f"{where} ({audio_how})")
    if not stems:
        return SkippedTrack(folder, f"no rendered stems (all {len(skipped)} stems have "
                                    "audio_rendered: false)" if skipped else "no stems in metadata.yaml")
    mix = next((folder / f"mix{ext}" for ext in AUDIO_EXTS if (folder / f"mix{ext}").is_file()), None)
    all_src = folder / "all_src.mid"
    lmd = meta.get("lmd_midi_dir")
    return Track(folder.name, folder, split, stems, mix, meta, skipped,
                 all_src if all_src.is_file() else None, str(lmd) if lmd else None)


def _track_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("Track"))


class SlakhDataset:
    """The usable tracks under ``root`` (optionally one split), sorted by split then id.

    ``scan_report`` lists every skipped track folder with its reason.
    """

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise EngineError(f"dataset folder {self.root} {what}; pass the Slakh2100 root (or one split folder)")
        folders: list[tuple[str | None, Path]] = []
        if split is not None:
            sdir = self.root / split
            if not sdir.is_dir():
                raise EngineError(f"split {split!r} not found under {self.root}; "
                                  f"use one of {', '.join(SPLITS)} or split=None")
            folders = [(split, p) for p in _track_dirs(sdir)]
        else:
            if self.root.name.startswith("Track") and (self.root / "metadata.yaml").exists():
                folders = [(None, self.root)]
            else:
                folders = [(None, p) for p in _track_dirs(self.root)]
                for s in SPLITS:
                    if (self.root / s).is_dir():
                        folders += [(s, p) for p in _track_dirs(self.root / s)]
        self.tracks: list[Track] = []
        self.scan_report: list[SkippedTrack] = []
        for sp, folder in folders:
            result = read_track(folder, sp)
            if isinstance(result, Track):
                self.tracks.append(result)
            else:
                self.scan_report.append(result)

    def report(self) -> list[str]:
        """One line per track folder: its usable stems by class and skipped stems, or why it was
        skipped."""
        lines = []
        for t in self.tracks:
            classes = ", ".join(f"{c} x{sum(s.inst_class == c for s in t.stems)}" for c in t.classes())
            line = f"{t.split or '-'}/{t.id}: {len(t.stems)} stem(s) ({classes})"
            if t.skipped_stems:
                line += "; skipped " + ", ".join(f"{sid} ({why})" for sid, why in t.skipped_stems)
            lines.append(line)
        for sk in self.scan_report:
            lines.append(f"{sk.path.parent.name}/{sk.path.name}: not used: {sk.reason}")
        return lines

    def summary(self) -> str:
        """One line: how many track folders were found, used and skipped (with the first reason)."""
        n = len(self.tracks) + len(self.scan_report)
        text = f"{n} track folder(s) under {self.root}, {len(self.tracks)} usable"
        if self.scan_report:
            shown = "; ".join(f"{sk.path.name}: {sk.reason}" for sk in self.scan_report[:3])
            more = len(self.scan_report) - 3
            text += f", {len(self.scan_report)} skipped ({shown}{f'; {more} more' if more > 0 else ''})"
        return text

    def __len__(self) -> int:
        return len(self.tracks)

    def __iter__(self) -> Iterator[Track]:
        return iter(self.tracks)

    def __getitem__(self, index: int) -> Track:
        return self.tracks[index]

    def class_counts(self) -> dict[str, int]:
        """Number of tracks each instrument class appears in."""
        counts: dict[str, int] = {}
        for t in self.tracks:
            for c in t.classes():
                counts[c] = counts.get(c, 0) + 1
        return dict(sorted(counts.items()))
