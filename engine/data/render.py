"""Render Slakh2100-format tracks (stems, mix, MIDI, metadata.yaml) from generated MIDI with FluidSynth.

Layout of one track, as in Slakh2100::

    TrackNNNNN/metadata.yaml   UUID, audio_dir, midi_dir, normalized, overall_gain, stems: {S00: ...}
    TrackNNNNN/stems/SNN.wav   mono PCM16, loudness-normalised, already scaled by overall_gain
    TrackNNNNN/mix.wav         the sum of the stems (peak at most -1 dBFS, nothing clips)
    TrackNNNNN/MIDI/SNN.mid    one MIDI file per stem
    TrackNNNNN/all_src.mid     all stems together

Each track's random stream is ``numpy.random.default_rng([seed, index])``: the same seed gives
byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import soundfile as sf
import yaml

from engine.data.classes import program_name
from engine.data.loudness import SILENCE_LUFS, integrated_loudness
from engine.data.patterns import Arrangement, generate_arrangement
from engine.data.synth import find_fluidsynth, find_soundfont, render_pretty_midi
from engine.output_dir import Output, partial_name
from engine.types import EngineError

NORMALIZATION_LUFS = -13.0  # Slakh's per-stem loudness target
TARGET_PEAK_DB = -1.0
STEM_GAIN_SPREAD_DB = 2.0  # random per-stem offset around the target loudness
SOURCES = ("patterns", "corpus", "mixed")
CORPUS_SHARE = 0.3  # share of corpus tracks when source="mixed"
RENDER_VERSION = 1


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides the track index that determines a rendered track."""

    seed: int
    duration_s: float
    sample_rate: int
    soundfont: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "duration_s": self.duration_s, "sample_rate": self.sample_rate,
                "soundfont": Path(self.soundfont).name, "source": self.source,
                "version": RENDER_VERSION}


def track_name(index: int) -> str:
    """Slakh's folder name of the ``index``-th track (1-based): ``Track00001``."""
    return f"Track{index:05d}"


def _arrangement(settings: RenderSettings, rng: np.random.Generator) -> tuple[Arrangement, str]:
    source = settings.source
    if source == "mixed":
        source = "corpus" if rng.random() < CORPUS_SHARE else "patterns"
    if source == "corpus":
        from engine.data.corpus import corpus_arrangement

        arr, name = corpus_arrangement(rng, settings.duration_s)
        return arr, f"music21:{name}"
    arr = generate_arrangement(rng, settings.duration_s)
    return arr, f"patterns:{arr.layout}"


def _write_pcm16(path: Path, audio: np.ndarray, sr: int) -> None:
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")


def render_track(out_dir: Path, index: int, settings: RenderSettings) -> Path:
    """Render track ``index`` into ``out_dir/TrackNNNNN`` (replaced atomically) and return its path."""
    rng = np.random.default_rng([settings.seed, index])
    track_uuid = uuid.UUID(bytes=rng.bytes(16), version=4).hex
    arr, source = _arrangement(settings, rng)
    sr = settings.sample_rate
    n = int(round(settings.duration_s * sr))
    sf2 = Path(settings.soundfont)

    raw, gains = [], []
    for part in arr.parts:
        audio = render_pretty_midi(_single(arr, part.instrument), sf2, sr, n)
        loud = integrated_loudness(audio, sr)
        offset = float(rng.uniform(-STEM_GAIN_SPREAD_DB, STEM_GAIN_SPREAD_DB))
        gain = 10.0 ** ((NORMALIZATION_LUFS + offset - loud) / 20.0) if loud > SILENCE_LUFS else 1.0
        raw.append(audio.astype(np.float64))
        gains.append(gain)
    stems = [a * g for a, g in zip(raw, gains, strict=True)]
    mix = np.sum(stems, axis=0)
    peak = max(float(np.max(np.abs(mix))), *(float(np.max(np.abs(s))) for s in stems), 1e-9)
    overall = 10.0 ** (TARGET_PEAK_DB / 20.0) / peak

    final = out_dir / track_name(index)
    tmp = out_dir / partial_name(final.name)  # removed by the next claim of out_dir if we are killed
    try:
        tmp.mkdir()
        (tmp / "stems").mkdir()
        (tmp / "MIDI").mkdir()
        meta_stems: dict[str, dict[str, Any]] = {}
        for i, (part, stem) in enumerate(zip(arr.parts, stems, strict=True)):
            sid = f"S{i:02d}"
            stem = stem * overall
            _write_pcm16(tmp / "stems" / f"{sid}.wav", stem, sr)
            _single(arr, part.instrument).write(str(tmp / "MIDI" / f"{sid}.mid"))
            inst = part.instrument
            meta_stems[sid] = {
                "audio_rendered": True,
                "inst_class": part.inst_class,
                "integrated_loudness": round(integrated_loudness(stem, sr), 4),
                "is_drum": bool(inst.is_drum),
                "midi_program_name": program_name(inst.program, inst.is_drum),
                "midi_saved": True,
                "plugin_name": sf2.name,
                "program_num": int(inst.program),
                "gain": float(gains[i] * overall),
                "role": part.role,
                "active_bars": [int(b) for b, on in enumerate(part.active_bars) if on],
            }
        _write_pcm16(tmp / "mix.wav", mix * overall, sr)
        arr.to_midi().write(str(tmp / "all_src.mid"))
        meta = {
            "UUID": track_uuid,
            "audio_dir": "stems",
            "midi_dir": "MIDI",
            "normalized": True,
            "normalization_factor": NORMALIZATION_LUFS,
            "overall_gain": float(overall),
            "target_peak": TARGET_PEAK_DB,
            "sample_rate": sr,
            "source": source,
            "tempo": float(arr.tempo),
            "bar_seconds": float(arr.bar_s),
            "render": settings.to_dict(),
            "stems": meta_stems,
        }
        with open(tmp / "metadata.yaml", "w", encoding="utf-8") as fh:
            yaml.safe_dump(meta, fh, sort_keys=True, default_flow_style=False)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _single(arr: Arrangement, instrument: pretty_midi.Instrument) -> pretty_midi.PrettyMIDI:
    """A MIDI file holding one stem, at the arrangement's tempo."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=arr.tempo)
    pm.instruments.append(instrument)
    return pm


def _render_one(args: tuple[str, int, RenderSettings]) -> str:
    out_dir, index, settings = args
    return str(render_track(Path(out_dir), index, settings))


def render_dataset(out_dir: str | Path, tracks: int, seed: int = 0, duration_s: float = 20.0,
                   sample_rate: int = 16000, soundfont: str | Path | None = None,
                   progress: Callable[[int, int], None] | None = None, workers: int = 1,
                   source: str = "mixed", start_index: int = 1) -> list[Path]:
    """Render ``tracks`` Slakh-format tracks into ``out_dir`` and return their folders in order.

    ``source``: ``"patterns"`` (generated arrangements), ``"corpus"`` (music21 scores) or
    ``"mixed"`` (about 30 % corpus). ``workers`` > 1 renders in a process pool. Track folders are ``Track{start_index:05d}`` onwards; existing ones are replaced.
    """
    if int(tracks) < 1:
        raise EngineError(f"tracks must be at least 1, got {tracks}; pass --tracks N with N >= 1")
    if not 1.0 <= float(duration_s) <= 600.0:
        raise EngineError(f"duration {duration_s} s is outside 1-600 s; pick a track length in that range")
    if int(sample_rate) < 8000:
        raise EngineError(f"sample rate {sample_rate} Hz is too low; use 16000 or more")
    if source not in SOURCES:
        raise EngineError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    find_fluidsynth()
    sf2 = find_soundfont(soundfont)
    settings = RenderSettings(int(seed), float(duration_s), int(sample_rate), str(sf2), source)
    # a new folder is rendered under a temporary name and renamed when complete; an existing one
    # (more tracks for a dataset) gets each track atomically
    with Output(out_dir, mode="extend") as claim:
        jobs = [(str(claim.work), start_index + i, settings) for i in range(int(tracks))]
        done: list[Path] = []
        if workers <= 1:
            for job in jobs:
                done.append(claim.final_path(_render_one(job)))
                if progress is not None:
                    progress(len(done), len(jobs))
        else:
            with ProcessPoolExecutor(max_workers=int(workers)) as pool:
                for path in pool.map(_render_one, jobs):
                    done.append(claim.final_path(path))
                    if progress is not None:
                        progress(len(done), len(jobs))
    return done
