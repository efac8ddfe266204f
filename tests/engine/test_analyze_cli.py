"""`python main.py analyze` end to end on a tiny AudioLDM2 saved to disk, and its bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import main
from engine.analysis.melscale import grid_hz

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    from engine.backends.tiny import save_tiny

    return save_tiny("audioldm2", tmp_path_factory.mktemp("models") / "tiny-audioldm2")


def _analyze(tiny_folder: Path, out: Path, *extra: str) -> int:
    return main.main(["analyze", "--model", str(tiny_folder), "--prompt", "bass and drums",
                      "--steps", "3", "--duration", "0.1", "--out", str(out), *extra])


def test_analyze_writes_every_output(tiny_folder, tmp_path):
    out = tmp_path / "run"
    assert _analyze(tiny_folder, out, "--grid", "32x16") == 0
    names = sorted(p.name for p in out.iterdir())
    for required in ("audio.wav", "run.json", "attention.npz", "mel.png", "aggregate.png",
                     "layers.png", "profiles.png"):
        assert required in names
    assert not any(p.name.startswith(".run.partial") for p in tmp_path.iterdir())

    run = json.loads((out / "run.json").read_text())
    assert run["recipe"]["seed"] == 0 and run["recipe"]["steps"] == 3
    assert run["recipe"]["prompt"] == "bass and drums"

    data = np.load(out / "attention.npz")
    tokens = list(data["tokens"])
    agg = data["aggregate"]
    assert agg.shape == (len(tokens), 32, 16)
    # attention over keys sums to one per query, and mean pooling of a partition of unity keeps it
    assert np.allclose(agg.sum(axis=0), 1.0, atol=2e-3)
    # F axis: low frequency first, matching the model's mel definition
    hz = data["hz"]
    assert np.all(np.diff(hz) > 0)
    audio, sr = sf.read(out / "audio.wav")
    assert sr == run["sample_rate"] and len(audio) > 0
    site_maps = data["site_maps"]
    assert site_maps.shape[0] == len(data["sites"]) and site_maps.shape[1:] == agg.shape
    # the aggregate is the uniform mean of the per-site maps (every site seen at every step)
    assert np.allclose(site_maps.astype(np.float64).mean(axis=0), agg, atol=2e-3)
    step_maps = data["step_maps"]
    assert step_maps.shape[0] == 3
    assert np.allclose(step_maps.astype(np.float64).mean(axis=0), agg, atol=2e-3)


def test_hz_axis_comes_from_the_model_mel_definition(tiny_folder):
    from engine.backends.registry import load_backend

    spec = load_backend(str(tiny_folder)).mel_spec()
    hz = grid_hz(spec, 64)
    assert hz[0] >= spec.fmin and hz[-1] <= spec.fmax


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prompt", "   "], "empty prompt"),
        (["--steps", "0"], "steps must be between 1 and 1000"),
        (["--duration", "-1"], "duration must be"),
        (["--duration", "nan"], "--duration: 'nan' is not a finite number"),
        (["--guidance", "inf"], "--guidance: 'inf' is not a finite number"),
        (["--seed", str(2**32)], "seed must be between 0 and 4294967295"),
        (["--seed", "-1"], "seed must be"),
        (["--grid", "12by4"], "--grid"),
        (["--sites", "no.such.site"], "unknown site"),
    ],
)
def test_bad_inputs_give_one_line_errors(tiny_folder, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    args = ["analyze", "--model", str(tiny_folder), "--prompt", "bass", "--steps", "2",
            "--duration", "0.1", "--out", str(out), *flags]
    try:
        code = main.main(args)
    except SystemExit as exc:  # refused by the parser itself (NaN, infinity)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_says_what_was_asked(tmp_path, capsys):
    out = tmp_path / "run"
    code = main.main(["analyze", "--model", "nobody/no-such-model", "--prompt", "bass", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "nobody/no-such-model" in err
    assert not out.exists()


def test_unwritable_output_folder(tiny_folder, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = _analyze(tiny_folder, blocker / "run")
    assert code == 2
    assert "choose a writable --out" in capsys.readouterr().err


def test_existing_output_folder_is_not_overwritten(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert _analyze(tiny_folder, out) == 2
    assert (out / "keep.txt").read_text() == "precious"
    assert "not empty" in capsys.readouterr().err


def test_nan_attention_is_flagged_with_site_and_step(tiny_folder, tmp_path, capsys):
    """A poisoned key projection makes one site's attention NaN: analyze names it and writes nothing."""
    import torch

    from engine.backends.registry import load_backend

    backend = load_backend(str(tiny_folder))
    cross = [s for s in backend.sites() if s.kind == "cross"]
    target = cross[0].name
    module = backend.denoiser.get_submodule(target)
    with torch.no_grad():
        module.to_k.weight.fill_(float("nan"))
    poisoned = tmp_path / "poisoned"
    backend.pipe.save_pretrained(poisoned)
    out = tmp_path / "run"
    assert _analyze(poisoned, out) == 2
    err = capsys.readouterr().err
    assert target in err and "step" in err
    assert not out.exists()


def test_cli_help_runs_without_heavy_imports():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0
    for cmd in ("analyze", "render-dataset", "train-default", "sites"):
        assert cmd in proc.stdout
