"""Bad ``--out`` targets, full disks, racing and killed runs, through the real CLI (``main.main``).

Each case must end with exit code 2, exactly one ``error:`` line on stderr, no traceback, and
nothing left in or beside ``--out`` (no temporary folder, no lock file). Read-only folders and
full disks are real: a read-only / tiny tmpfs where this machine may mount one, and (always) a
file-size limit in a ``python main.py`` child process, which makes its writes fail with EFBIG.
Refusals run in-process (``main.main``, as a shell would call it, ~0.1 s each); what needs a
process of its own (a file-size limit, a run killed with SIGKILL) runs ``python main.py``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model", "tiny:audioldm2", "--steps", "2", "--duration", "0.1"]
ANALYZE = ["analyze", "--prompt", "bass and drums", *TINY, "--grid", "16x8", "--no-figures"]


def _cli(*args: str, preexec: Callable[[], None] | None = None, timeout: float = 300,
         ) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1",
               MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec)


def _spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a failed command (other stderr lines may only be progress bars)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
    assert all("%|" in line for line in lines[:-1]), proc.stderr[-3000:]
    return errors[0]


@pytest.fixture
def cli(capsys) -> Callable[..., subprocess.CompletedProcess]:
    """``main.main(args)`` in this process, returning exit code and output like ``subprocess.run``."""

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main.main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir()
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


@pytest.fixture
def read_only(tmp_path) -> Iterator[Path]:
    """A real read-only folder: a read-only tmpfs, or (not root) a folder without write permission."""
    folder = tmp_path / "ro"
    if _mount_tmpfs(folder, "ro,size=64k"):
        yield folder
        _umount(folder)
    elif os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    else:
        pytest.skip("root without permission to mount: no folder here is read-only to this process")


def test_out_that_is_a_file_is_refused_by_every_folder_command(tmp_path, cli):
    blocker = tmp_path / "results"
    blocker.write_text("precious")
    commands = [
        [*ANALYZE, "--out", str(blocker)],
        ["ablate", "--prompt", "drums", *TINY, "--out", str(blocker)],
        ["render-dataset", "--tracks", "1", "--duration", "2", "--out", str(blocker)],
        ["train-default", "--out", str(blocker)],
    ]
    for args in commands:
        line = _error_line(cli(*args))
        assert f"{blocker} is a file, not a folder" in line, (args[0], line)
    line = _error_line(cli("caa", "--concept", "drums", *TINY, "--out", str(blocker / "v.npz")))
    assert f"{blocker} is a file; choose a writable --out" in line
    assert blocker.read_text() == "precious" and _listing(tmp_path) == ["results"]


def test_caa_out_must_be_a_vector_file_path(tmp_path, cli):
    line = _error_line(cli("caa", "--concept", "drums", *TINY, "--out", str(tmp_path)))
    assert "must end in .npz or .safetensors" in line
    line = _error_line(cli("caa", "--concept", "drums", *TINY, "--out", str(tmp_path / "v.pt")))
    assert "must end in .npz or .safetensors" in line
    assert _listing(tmp_path) == []


def test_read_only_out_is_refused(read_only, cli):
    cases = [
        (["render-dataset", "--tracks", "1", "--duration", "2", "--out", str(read_only)], read_only),
        (["render-dataset", "--tracks", "1", "--duration", "2", "--out", str(read_only / "data")], read_only),
        (["train-default", "--out", str(read_only / "model")], read_only),
        (["caa", "--concept", "drums", *TINY, "--out", str(read_only / "v.npz")], read_only),
    ]
    for args, named in cases:
        line = _error_line(cli(*args))
        assert f"cannot write to {named} (read-only or no permission): choose a writable --out" in line, line
    assert _listing(read_only) == []


def _track(root: Path, name: str, stems: dict[str, tuple[str, np.ndarray | None]]) -> None:
    folder = root / name
    (folder / "stems").mkdir(parents=True)
    meta: dict = {"audio_dir": "stems", "stems": {}}
    for sid, (cls, audio) in stems.items():
        path = folder / "stems" / f"{sid}.wav"
        if audio is None:
            path.write_bytes(b"not a wav file")
        else:
            sf.write(path, audio.astype(np.float32), 16000)
        meta["stems"][sid] = {"inst_class": cls, "program_num": 0, "is_drum": False}
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))


def test_empty_inputs_are_refused_before_out_is_created(tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    line = _error_line(cli("eval", "--dataset", str(empty), *TINY, "--out", str(out)))
    assert "check --dataset" in line
    line = _error_line(cli("train-default", "--data", str(empty), "--out", str(out)))
    assert str(empty) in line
    assert _listing(tmp_path) == ["empty"]
    data = tmp_path / "data"
    _track(data, "Track00001", {"S00": ("Bass", np.zeros(16000))})
    line = _error_line(cli("eval", "--dataset", str(data), "--model", "nobody/no-such-model", "--out", str(out)))
    assert "nobody/no-such-model" in line  # a resumable folder this run created is removed again
    assert _listing(tmp_path) == ["data", "empty"]


def test_eval_in_which_every_item_fails_exits_2_and_says_why(tmp_path, cli):
    data = tmp_path / "data"
    _track(data, "Track00001", {"S00": ("Bass", None), "S01": ("Piano", None)})  # unreadable stems
    out = tmp_path / "out"
    line = _error_line(cli("eval", "--dataset", str(data), *TINY, "--grid", "16x8", "--no-figures",
                            "--out", str(out)))
    failed = [e for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines()) if e["phase"] == "item"]
    assert failed and f"all {len(failed)} items failed" in line
    assert f"{len(failed)}x [EngineError: cannot read audio …" in line  # one cause over both stems
    assert line.endswith(f"the reason for each is in {out / 'errors.jsonl'}")
    assert not (out / "items.jsonl").exists() or (out / "items.jsonl").read_text() == ""
    assert not (out / "report.json").exists()
    assert _listing(tmp_path) == ["data", "out"]  # kept to resume from; no lock, no temporary


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_disk_full_during_analyze_leaves_nothing(tmp_path, cli):
    """A real full disk (ENOSPC on a 12 KiB tmpfs) where mounting is allowed; always also a real
    EFBIG (a 4 KiB file-size limit in the child process), which needs no privileges."""
    small = tmp_path / "small"
    if _mount_tmpfs(small, "size=12k"):
        try:
            line = _error_line(cli(*ANALYZE, "--out", str(small / "run")))
            assert f"cannot write {small / 'run'}: no space left on the device; free space there" in line
            assert _listing(small) == []
        finally:
            _umount(small)
    limited = tmp_path / "limited"
    line = _error_line(_cli(*ANALYZE, "--out", str(limited / "run"), preexec=_limit_file_size))
    assert f"cannot write {limited / 'run'}: file too large" in line
    assert not limited.exists()


def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended early: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_racing_runs_and_a_killed_run(tmp_path, cli):
    """A long run holds --out: a second run gets "in use"; after kill -9 its partial folder is
    stale, and the next run into the same parent removes it and succeeds."""
    out = tmp_path / "run"
    args = [*ANALYZE, "--out", str(out)]
    long_run = _spawn(*args, "--steps", "1000")  # the last --steps wins
    try:
        _wait_for(lambda: any(p.name.startswith(".run.partial-") for p in tmp_path.iterdir()), long_run)
        partial = next(p for p in tmp_path.iterdir() if p.name.startswith(".run.partial-"))
        line = _error_line(cli(*args))
        assert f"{out} is in use by another run" in line
        assert partial.is_dir() and long_run.poll() is None  # the live run's folder was left alone
    finally:
        long_run.send_signal(signal.SIGKILL)
        long_run.wait()
    assert partial.is_dir() and not out.exists()  # what kill -9 leaves
    again = cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "attention.npz").is_file() and not partial.exists()
    assert _listing(tmp_path) == ["run"]
