"""MIDI → mono audio with the FluidSynth command line, reverb and chorus off (bit-reproducible)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

from engine.types import EngineError

SOUNDFONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/sounds/sf2"),
    Path("/usr/share/soundfonts"),
    Path("/usr/local/share/soundfonts"),
)
# Preferred first: the large FluidR3 GM set when installed, else TimGM6mb (comes with fluidsynth).
SOUNDFONT_NAMES: tuple[str, ...] = ("FluidR3_GM.sf2", "TimGM6mb.sf2", "default-GM.sf2")

FLUIDSYNTH_GAIN = 0.5


def find_fluidsynth() -> str:
    """Path of the ``fluidsynth`` executable, or an EngineError that says how to install it."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise EngineError("fluidsynth is not installed; run: apt-get install fluidsynth")
    return exe


def find_soundfont(soundfont: str | Path | None = None) -> Path:
    """The user's soundfont if given, else the first General MIDI soundfont of the system folders."""
    if soundfont is not None:
        path = Path(soundfont).expanduser()
        if not path.is_file():
            raise EngineError(f"soundfont {path} does not exist; pass the path of a .sf2 file")
        return path
    for name in SOUNDFONT_NAMES:
        for folder in SOUNDFONT_DIRS:
            path = folder / name
            if path.is_file():
                return path.resolve()
    raise EngineError(
        "no General MIDI soundfont found; run: apt-get install fluidsynth (brings TimGM6mb.sf2) "
        "or pass soundfont=PATH"
    )


def render_midi_file(midi_path: Path, sf2: Path, sample_rate: int, n_samples: int) -> np.ndarray:
    """Render one MIDI file to mono float32 of exactly ``n_samples`` (cut or zero-padded)."""
    exe = find_fluidsynth()
    with tempfile.TemporaryDirectory(prefix="aiba-fs-") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [
            exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(FLUIDSYNTH_GAIN),
            "-o", "synth.cpu-cores=1", "-T", "wav", "-O", "float",
            "-r", str(int(sample_rate)), "-F", str(wav), str(sf2), str(midi_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not wav.is_file():
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise EngineError(
                f"fluidsynth failed on {midi_path.name}: {msg[-1] if msg else 'no output'}; "
                "check the MIDI file and the soundfont"
            )
        audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise EngineError(f"fluidsynth wrote {sr} Hz instead of {sample_rate} Hz; check its version")
    mono = audio.mean(axis=1, dtype=np.float64).astype(np.float32)
    out = np.zeros(n_samples, dtype=np.float32)
    n = min(n_samples, mono.shape[0])
    out[:n] = mono[:n]
    return out


def render_pretty_midi(pm: pretty_midi.PrettyMIDI, sf2: Path, sample_rate: int,
                       n_samples: int) -> np.ndarray:
    """Render an in-memory PrettyMIDI object (written to a temporary file) to mono float32."""
    with tempfile.TemporaryDirectory(prefix="aiba-mid-") as tmp:
        mid = Path(tmp) / "x.mid"
        pm.write(str(mid))
        return render_midi_file(mid, sf2, sample_rate, n_samples)
