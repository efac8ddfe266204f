"""Smoke test of the frozen AIBA Studio bundle (run with the project's Python, not the bundle's).

    .venv/bin/python installer/smoke_test.py [dist/aiba-studio/aiba-studio] [--skip-gui] [--keep DIR]
                                             [--embedded MODEL_DIR]

Checks, in order, printing one line each and exiting 1 at the first failure:

0. the files the spec must keep are there (Qt's xcb/wayland/offscreen platforms and SVG icon
   plugins, the icon, libtorch, the music21 scores ``render-dataset`` draws); prints the bundle's
   size and file count;
1. the bundle carries PortAudio and it loads (``Pa_GetVersionText`` answers V19);
2. ``aiba-studio --help`` lists the headless commands;
3. ``aiba-studio --self-test --screenshot shot.png`` under ``QT_QPA_PLATFORM=offscreen`` exits 0
   and the screenshot is a real window (large, many colours, not one flat fill);
4. ``aiba-studio analyze`` writes audio.wav, run.json and attention.npz, and its maps equal those
   of the same command run from source (``python main.py analyze``) on the same weights;
5. ``aiba-studio render-dataset --source corpus`` (music21 corpus + FluidSynth) writes the same files
   as the source run (reported as skipped when fluidsynth is not installed).

Settings, caches and outputs go to a temporary folder, never to the user's home.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BINARY = ROOT / "dist" / "aiba-studio" / "aiba-studio"
COMMANDS = ("analyze", "render-dataset", "train-default", "sites")
ANALYZE_ARGS = ["--prompt", "bass and drums", "--steps", "4", "--duration", "1.0", "--seed", "0",
                "--grid", "32x16", "--no-figures"]
RENDER_ARGS = ["--tracks", "1", "--duration", "2", "--source", "corpus", "--seed", "0"]
TIMEOUT_S = 900
# bundle-relative files the app loads at run time, which installer/aiba_studio.spec must not drop
REQUIRED = (
    "resources/icons/aiba-studio.svg", "resources/desktop/aiba-studio.desktop",
    "PySide6/Qt/plugins/platforms/libqxcb.so", "PySide6/Qt/plugins/platforms/libqwayland.so",
    "PySide6/Qt/plugins/platforms/libqoffscreen.so", "PySide6/Qt/plugins/iconengines/libqsvgicon.so",
    "PySide6/Qt/plugins/imageformats/libqsvg.so", "torch/lib/libtorch_cpu.so",
    "torch/bin/torch_shm_manager",  # `import torch` fails without it
)


class SmokeFailure(Exception):
    """One check of the bundle failed; the message says which and why."""


class SmokeSkip(Exception):
    """A check cannot run on this machine (a system tool is missing); reported, not counted as passed."""


def bundle_dir(binary: Path) -> Path:
    """``_internal`` next to the launcher (PyInstaller >= 6), else the launcher's folder."""
    internal = binary.parent / "_internal"
    return internal if internal.is_dir() else binary.parent


def isolated_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Offscreen Qt, one thread, no hub, settings and caches under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "AIBA_"))}
    env.update(QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               XDG_CONFIG_HOME=str(tmp / "config"), XDG_CACHE_HOME=str(tmp / "cache"),
               AIBA_CACHE_DIR=str(tmp / "aiba-cache"))
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str], what: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd``; a non-zero exit is a :class:`SmokeFailure` quoting the last output lines."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SmokeFailure(f"{what}: no exit after {TIMEOUT_S} s") from exc
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SmokeFailure(f"{what}: exit code {proc.returncode}\n{tail}")
    return proc, elapsed


def portaudio_version(lib: Path) -> str:
    """``Pa_GetVersionText()`` of the PortAudio library at ``lib``."""
    pa = ctypes.CDLL(str(lib))
    pa.Pa_GetVersionText.restype = ctypes.c_char_p
    return pa.Pa_GetVersionText().decode()


def bundle_size(folder: Path) -> tuple[int, int]:
    """Bytes (apparent sizes, as ``du -sb`` without the folders) and number of files under ``folder``."""
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def contents_problem(internal: Path) -> str | None:
    """What the bundle folder ``internal`` lacks of :data:`REQUIRED` and of the music21 scores of
    each composer ``engine.data.corpus`` draws from; None when nothing is missing."""
    if str(ROOT) not in sys.path:  # run as a script from installer/
        sys.path.insert(0, str(ROOT))
    from engine.data.corpus import COMPOSERS, SCORE_SUFFIXES

    missing = [rel for rel in REQUIRED if not (internal / rel).is_file()]
    for composer, _ in COMPOSERS:
        folder = internal / "music21" / "corpus" / composer
        if not folder.is_dir() or not any(p.suffix in SCORE_SUFFIXES for p in folder.rglob("*")):
            missing.append(f"music21/corpus/{composer}/ (scores)")
    return f"the bundle lacks {', '.join(missing)}" if missing else None


def check_contents(binary: Path) -> str:
    problem = contents_problem(bundle_dir(binary))
    if problem:
        raise SmokeFailure(problem)
    size, files = bundle_size(binary.parent)
    return f"{len(REQUIRED)} required files and the corpus scores present; bundle {size / 1e6:.0f} MB in {files} files"


def check_portaudio(binary: Path) -> str:
    libs = sorted(bundle_dir(binary).glob("libportaudio.so*"))
    if not libs:
        raise SmokeFailure(f"no libportaudio.so* in {bundle_dir(binary)}: sound will not play")
    version = portaudio_version(libs[0])
    if not version.startswith("PortAudio V19"):
        raise SmokeFailure(f"{libs[0].name} reports {version!r}, expected PortAudio V19")
    return f"{libs[0].name} loads: {version}"


def check_help(binary: Path, tmp: Path) -> str:
    proc, elapsed = run([str(binary), "--help"], isolated_env(tmp), "--help")
    missing = [c for c in COMMANDS if c not in proc.stdout]
    if missing:
        raise SmokeFailure(f"--help does not list {missing}:\n{proc.stdout}")
    return f"--help lists {', '.join(COMMANDS)} ({elapsed:.1f} s)"


def screenshot_problem(path: Path) -> str | None:
    """Why ``path`` is not a screenshot of a real window, or None when it is."""
    from matplotlib.image import imread

    if not path.is_file() or path.stat().st_size == 0:
        return f"no screenshot at {path}"
    img = imread(path)
    h, w = img.shape[:2]
    if h < 300 or w < 400:
        return f"screenshot is only {w}x{h}"
    rgb = (np.asarray(img[..., :3]) * 255).astype(np.uint8).reshape(-1, 3)
    colours = len(np.unique(rgb, axis=0))
    top_share = np.unique(rgb, axis=0, return_counts=True)[1].max() / len(rgb)
    if colours < 32 or top_share > 0.95:
        return f"screenshot looks blank: {colours} colours, one covers {top_share:.0%}"
    return None


def check_self_test(binary: Path, tmp: Path, model_dir: Path | None = None) -> str:
    shot = tmp / "self-test.png"
    extra = {"AIBA_EMBEDDED_MODEL_DIR": str(model_dir)} if model_dir else {}
    proc, elapsed = run([str(binary), "--self-test", "--screenshot", str(shot)],
                        isolated_env(tmp, **extra), "--self-test")
    if "self-test passed" not in proc.stdout:
        raise SmokeFailure(f"--self-test exited 0 without 'self-test passed':\n{proc.stdout}")
    problem = screenshot_problem(shot)
    if problem:
        raise SmokeFailure(problem)
    line = proc.stdout.strip().splitlines()[-1]
    return f"--self-test exit 0 in {elapsed:.1f} s; {line}"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SmokeFailure(f"no {path}")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def compare_maps(frozen: dict[str, np.ndarray], source: dict[str, np.ndarray]) -> None:
    """The frozen and source attention.npz must hold the same keys and (numerically) the same maps."""
    if sorted(frozen) != sorted(source):
        raise SmokeFailure(f"attention.npz keys differ: frozen only {sorted(set(frozen) - set(source))}, "
                           f"source only {sorted(set(source) - set(frozen))}")
    for key, a in frozen.items():
        b = source[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise SmokeFailure(f"{key}: frozen {a.dtype}{a.shape} vs source {b.dtype}{b.shape}")
        if a.dtype.kind in "fc":
            if not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=False):
                raise SmokeFailure(f"{key}: frozen and source differ by up to "
                                   f"{np.max(np.abs(a.astype(np.float64) - b)):.3g}")
        elif not np.array_equal(a, b):
            raise SmokeFailure(f"{key}: frozen {a.tolist()} vs source {b.tolist()}")


def check_analyze(binary: Path, tmp: Path, model_dir: Path | None = None) -> str:
    # Both runs load the same weights: ``model_dir``, else the bundle's embedded model (or, when the
    # bundle has none, both fall back to the same cached tiny stand-in).
    model_dir = model_dir or bundle_dir(binary) / "resources" / "models" / "aiba-slakh-tiny"
    env = isolated_env(tmp, AIBA_EMBEDDED_MODEL_DIR=str(model_dir))
    out = tmp / "analyze-frozen"
    _, elapsed = run([str(binary), "analyze", *ANALYZE_ARGS, "--out", str(out)], env, "analyze")
    for name in ("audio.wav", "run.json", "attention.npz"):
        if not (out / name).is_file():
            raise SmokeFailure(f"analyze wrote no {name} in {out}")
    frozen = load_npz(out / "attention.npz")
    agg = frozen.get("aggregate")
    if agg is None or agg.shape[-2:] != (32, 16) or not np.isfinite(agg).all() or np.ptp(agg) <= 0:
        raise SmokeFailure(f"aggregate map is wrong: {None if agg is None else (agg.shape, np.ptp(agg))}")
    if len(frozen["sigmas"]) < 4:
        raise SmokeFailure(f"only {len(frozen['sigmas'])} sigmas for 4 steps")
    import soundfile as sf

    audio, sr = sf.read(out / "audio.wav")
    if len(audio) == 0 or not np.isfinite(audio).all():
        raise SmokeFailure("audio.wav is empty or not finite")
    ref = tmp / "analyze-source"
    run([sys.executable, str(ROOT / "main.py"), "analyze", *ANALYZE_ARGS, "--out", str(ref)], env,
        "source analyze (reference)")
    compare_maps(frozen, load_npz(ref / "attention.npz"))
    run_json = json.loads((out / "run.json").read_text())
    model = run_json.get("recipe", {}).get("model_id", "?")
    if any("tiny random" in w for w in run_json.get("warnings", [])):
        model += ", the tiny random stand-in: the bundle has no trained embedded model"
    return (f"analyze exit 0 in {elapsed:.1f} s (model {model}); attention.npz: {len(frozen)} arrays, "
            f"aggregate {agg.shape}, equal to the source run's; audio {len(audio) / sr:.2f} s")


def check_render(binary: Path, tmp: Path) -> str:
    """``render-dataset --source corpus`` (music21's score corpus + FluidSynth) matches the source run."""
    if shutil.which("fluidsynth") is None:
        raise SmokeSkip("fluidsynth is not installed (apt install fluidsynth)")
    env = isolated_env(tmp)
    out, ref = tmp / "render-frozen", tmp / "render-source"
    _, elapsed = run([str(binary), "render-dataset", *RENDER_ARGS, "--out", str(out)], env, "render-dataset")
    run([sys.executable, str(ROOT / "main.py"), "render-dataset", *RENDER_ARGS, "--out", str(ref)], env,
        "source render-dataset (reference)")
    track = out / "Track00001"
    mix = track / "mix.wav"
    if not mix.is_file() or not (track / "metadata.yaml").is_file():
        raise SmokeFailure(f"render-dataset wrote no mix.wav/metadata.yaml in {track}")
    reference = sorted(p for p in ref.rglob("*") if p.is_file())
    if not reference:
        raise SmokeFailure(f"the source run wrote nothing in {ref}")
    for ref_file in reference:
        rel = ref_file.relative_to(ref)
        if not (out / rel).is_file() or (out / rel).read_bytes() != ref_file.read_bytes():
            raise SmokeFailure(f"render-dataset: {rel} differs from the source run's")
    import soundfile as sf

    audio, sr = sf.read(mix)
    if np.max(np.abs(audio)) < 1e-3:
        raise SmokeFailure("render-dataset: mix.wav is silent")
    return (f"render-dataset exit 0 in {elapsed:.1f} s; its {len(reference)} files (MIDI, stems, mix, "
            f"metadata) equal the source run's byte for byte; mix {len(audio) / sr:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", nargs="?", default=str(DEFAULT_BINARY))
    parser.add_argument("--skip-gui", action="store_true", help="skip --self-test (headless checks only)")
    parser.add_argument("--keep", default=None, help="keep outputs in this folder (default: a temp folder)")
    parser.add_argument("--embedded", default=None,
                        help="self-test and analyze with this embedded-model folder, not the bundle's")
    args = parser.parse_args(argv)
    binary = Path(args.binary).resolve()
    if not os.access(binary, os.X_OK):
        print(f"smoke: no executable bundle at {binary}; build it with bash installer/build.sh",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="aiba-smoke-") as scratch:
        tmp = Path(args.keep).resolve() if args.keep else Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        embedded = Path(args.embedded).resolve() if args.embedded else None
        checks = [("contents", lambda: check_contents(binary)), ("portaudio", lambda: check_portaudio(binary)),
                  ("help", lambda: check_help(binary, tmp))]
        if not args.skip_gui:
            checks.append(("self-test", lambda: check_self_test(binary, tmp, embedded)))
        checks.append(("analyze", lambda: check_analyze(binary, tmp, embedded)))
        checks.append(("render", lambda: check_render(binary, tmp)))
        skipped = []
        for name, check in checks:
            try:
                print(f"smoke: {name}: OK: {check()}", flush=True)
            except SmokeSkip as exc:
                skipped.append(name)
                print(f"smoke: {name}: SKIPPED: {exc}", flush=True)
            except SmokeFailure as exc:
                print(f"smoke: {name}: FAILED: {exc}", file=sys.stderr)
                return 1
    passed = len(checks) - len(skipped)
    print(f"smoke: {passed} of {len(checks)} checks passed for {binary}"
          + (f" ({', '.join(skipped)} skipped)" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
