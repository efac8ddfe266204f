"""``engine.output_dir.Output``: checks, lock, stale-partial cleanup, publish by rename, write errors.

Dead and live owners are real processes (a child that claims a folder, then is killed with
SIGKILL or kept waiting); disk-full is a real EFBIG from a file-size limit in a child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.output_dir import Output, OutputWriteError, guarded
from engine.types import EngineError

ROOT = Path(__file__).resolve().parents[2]
# a child process that claims argv[1], prints its temporary path and waits for stdin to close
CLAIMER = textwrap.dedent("""
    import sys
    from engine.output_dir import Output
    with Output(sys.argv[1]) as claim:
        (claim.work / "half.txt").write_text("half")
        print(claim.work, flush=True)
        sys.stdin.read()
""")


def _claimer(out: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", CLAIMER, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "the claiming child did not start"
    return proc, Path(line)


def test_new_folder_is_written_under_a_temporary_name_and_published(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    with Output(out) as claim:
        assert claim.work != out and claim.work.parent == out.parent and claim.work.name.startswith(".run.partial-")
        (claim.work / "x.txt").write_text("x")
        assert not out.exists()
        assert claim.final_path(claim.work / "x.txt") == out / "x.txt"
    assert (out / "x.txt").read_text() == "x"
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # no temp, no lock file


def test_an_error_leaves_nothing_not_even_the_created_parents(tmp_path):
    with pytest.raises(RuntimeError), Output(tmp_path / "new" / "deeper" / "run"):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_bad_targets_are_refused_before_anything_is_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    with pytest.raises(EngineError, match="is a file, not a folder"), Output(blocker):
        pass
    with pytest.raises(EngineError, match="is a file; choose a writable --out"), Output(blocker / "sub" / "run"):
        pass
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.txt").write_text("precious")
    with pytest.raises(EngineError, match="not empty"), Output(full):
        pass
    with pytest.raises(EngineError, match="is a folder"), Output(full, kind="file"):
        pass
    assert blocker.read_text() == "keep" and (full / "old.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]


def test_extend_and_resume_write_into_an_existing_folder(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("old")
    for mode in ("extend", "resume"):
        with Output(out, mode=mode) as claim:
            assert claim.in_place and claim.work == out
            (claim.work / f"{mode}.txt").write_text(mode)
    assert sorted(p.name for p in out.iterdir()) == ["extend.txt", "old.txt", "resume.txt"]
    with pytest.raises(RuntimeError), Output(tmp_path / "fresh", mode="resume") as claim:
        (claim.work / "x").write_text("x")
        raise RuntimeError("early failure")
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(RuntimeError), Output(tmp_path / "kept", mode="resume") as claim:
        claim.keep = True
        (claim.work / "errors.jsonl").write_text("{}\n")
        raise RuntimeError("late failure")
    assert (tmp_path / "kept" / "errors.jsonl").is_file()


def test_a_file_output_is_replaced_atomically(tmp_path):
    target = tmp_path / "v.npz"
    with Output(target, kind="file") as claim:
        assert claim.work.suffix == ".npz" and claim.work.parent == tmp_path
        claim.work.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), Output(target, kind="file") as claim:
        claim.work.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["v.npz"]


def test_a_second_claim_of_a_folder_in_use_fails_at_once(tmp_path):
    out = tmp_path / "run"
    proc, work = _claimer(out)
    try:
        with pytest.raises(EngineError, match="in use by another run"), Output(out):
            pass
        assert work.is_dir(), "the live owner's temporary folder must not be touched"
    finally:
        proc.communicate("")
    assert proc.returncode == 0 and (out / "half.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_partials_of_a_killed_run_are_removed_but_a_live_runs_are_kept(tmp_path):
    live, live_work = _claimer(tmp_path / "live")
    dead, dead_work = _claimer(tmp_path / "dead")  # its claim leaves the live run's partial alone
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    try:
        assert dead_work.is_dir() and (tmp_path / ".dead.lock").exists()  # what kill -9 leaves
        with Output(tmp_path / "next") as claim:
            assert not dead_work.exists() and not (tmp_path / ".dead.lock").exists()
            assert live_work.is_dir() and (tmp_path / ".live.lock").exists()
            (claim.work / "ok").write_text("ok")
    finally:
        live.communicate("")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "next"]


def test_a_rerun_into_the_same_folder_after_kill_9_succeeds(tmp_path):
    dead, dead_work = _claimer(tmp_path / "run")
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    with Output(tmp_path / "run") as claim:
        assert not dead_work.exists()
        (claim.work / "ok").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    from engine.output_dir import Output
    from engine.types import EngineError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    try:
        with Output(sys.argv[1]) as claim:
            (claim.work / "big.bin").write_bytes(b"x" * 100_000)
    except EngineError as exc:
        print(exc)
        sys.exit(2)
""")


def test_a_real_write_failure_becomes_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", DISK_FULL, str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.startswith(f"cannot write {out}: file too large") and proc.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_guarded_names_the_path_and_what_to_do(tmp_path):
    target = tmp_path / "missing" / "x.json"
    with pytest.raises(OutputWriteError, match=r"cannot write .*x\.json: .*choose a writable --out"), \
            guarded(target):
        target.write_text("x")


def test_os_error_tells_write_failures_from_other_errors(tmp_path):
    import errno

    from engine.output_dir import os_error

    full = os_error(tmp_path, OSError(errno.ENOSPC, "No space left on device"))
    assert str(full) == f"cannot write {tmp_path}: no space left on the device; free space there or choose another --out"
    denied = os_error(tmp_path, PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x")))
    assert str(denied) == f"cannot write {tmp_path / 'x'}: permission denied; choose a writable --out"
    other = os_error(tmp_path, OSError(errno.EIO, "Input/output error", "f.npz"))
    assert str(other) == f"cannot use {tmp_path}: Input/output error (f.npz); check it or choose another --out"
