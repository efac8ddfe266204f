"""Hand-made Slakh2100 tracks in the released on-disk form (test helper, not a test module).

The form follows the dataset's documentation (the ``ethman/slakh-utils`` README, "Metadata") and
the copy of ``slakh2100_flac_redux/train/Track00001/metadata.yaml`` kept in mirdata's test
resources: top-level keys ``UUID, audio_dir, lmd_midi_dir, midi_dir, normalization_factor,
normalized, overall_gain, stems, target_peak`` (alphabetical, as the release writes them); per stem
``audio_rendered, inst_class, integrated_loudness, is_drum, midi_program_name, midi_saved,
plugin_name, program_num`` (an unrendered stem has no ``integrated_loudness``, ``midi_saved:
false`` and ``plugin_name: None``); drums have ``program_num: 128``. ``audio_dir`` is
``TrackNNNNN/stems`` (relative to the split folder) in ``flac_redux`` and ``stems`` in BabySlakh
and the original release's documentation. The folder holds ``all_src.mid``, ``MIDI/SNN.mid``,
``stems/SNN.flac`` (``.wav`` in BabySlakh) and ``mix.flac`` (``mix.wav``).

The YAML text is written by hand below (not by ``yaml.safe_dump`` nor by ``render-dataset``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf


@dataclass(frozen=True)
class ReleaseStem:
    """One stem's metadata (release keys) and its audio (None: not rendered)."""

    inst_class: str
    program_num: int
    midi_program_name: str
    plugin_name: str
    audio: np.ndarray | None
    is_drum: bool = False


def _yaml_bool(v: bool) -> str:
    return "true" if v else "false"


def metadata_text(track: str, stems: dict[str, ReleaseStem], audio_dir: str, midi_dir: str,
                  gain: float = 0.29573718103432126) -> str:
    """The text of a release ``metadata.yaml`` (key order and spelling as in the release)."""
    uuid = hashlib.md5(track.encode()).hexdigest()  # 32 hex digits, like Lakh's file names
    lines = [f"UUID: {uuid}",
             f"audio_dir: {audio_dir}",
             f"lmd_midi_dir: lmd_matched/A/B/C/TRABCDE12345678901/{uuid}.mid",
             f"midi_dir: {midi_dir}",
             "normalization_factor: -13.0",
             "normalized: true",
             f"overall_gain: {gain!r}",
             "stems:"]
    for sid, s in stems.items():
        rendered = s.audio is not None
        lines += [f"  {sid}:",
                  f"    audio_rendered: {_yaml_bool(rendered)}",
                  f"    inst_class: {s.inst_class}"]
        if rendered:
            lines.append(f"    integrated_loudness: {-13.0 - 3.17 * int(sid[1:]):.12f}")
        lines += [f"    is_drum: {_yaml_bool(s.is_drum)}",
                  f"    midi_program_name: {s.midi_program_name}",
                  f"    midi_saved: {_yaml_bool(rendered)}",
                  f"    plugin_name: {s.plugin_name if rendered else 'None'}",
                  f"    program_num: {s.program_num}"]
    lines.append("target_peak: -1.0")
    return "\n".join(lines) + "\n"


def _midi(path: Path, programs: list[tuple[int, bool]]) -> None:
    pm = pretty_midi.PrettyMIDI()
    for prog, drum in programs:
        inst = pretty_midi.Instrument(program=0 if drum else prog, is_drum=drum)
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=36 if drum else 45, start=0.0, end=0.5))
        pm.instruments.append(inst)
    pm.write(str(path))


def write_track(folder: Path, stems: dict[str, ReleaseStem], sr: int, form: str = "redux",
                ext: str = ".flac", audio_dir: str | None = None) -> Path:
    """Write one release-form track folder; ``form``: ``redux`` (split-relative ``audio_dir``) or
    ``track`` (``stems``). ``audio_dir`` overrides the metadata value (broken tracks)."""
    name = folder.name
    rel = f"{name}/" if form == "redux" else ""
    (folder / "stems").mkdir(parents=True)
    (folder / "MIDI").mkdir()
    text = metadata_text(name, stems, audio_dir or f"{rel}stems", f"{rel}MIDI")
    (folder / "metadata.yaml").write_text(text, encoding="utf-8")
    rendered = {sid: s for sid, s in stems.items() if s.audio is not None}
    for sid, s in rendered.items():
        sf.write(str(folder / "stems" / f"{sid}{ext}"), s.audio.astype(np.float32), sr,
                 subtype="PCM_16")
        _midi(folder / "MIDI" / f"{sid}.mid", [(s.program_num, s.is_drum)])
    _midi(folder / "all_src.mid", [(s.program_num, s.is_drum) for s in stems.values()])
    if rendered:
        mix = np.sum([s.audio for s in rendered.values()], axis=0)
        sf.write(str(folder / f"mix{ext}"), mix.astype(np.float32), sr, subtype="PCM_16")
    return folder


def sine(freq: float, seconds: float, sr: int, amp: float = 0.4, harmonics: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return amp * sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))


def noise_hits(seconds: float, sr: int, every_s: float = 0.25, seed: int = 0) -> np.ndarray:
    """Decaying noise bursts (a crude drum part)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(round(seconds * sr)))
    hit = int(0.05 * sr)
    for start in range(0, x.size - hit, int(every_s * sr)):
        x[start:start + hit] += 0.5 * rng.standard_normal(hit) * np.exp(-np.arange(hit) / (0.01 * sr))
    return x
