"""Claim a command's output folder (or file), write it under a temporary name, publish by rename.

:class:`Output` is used as a context manager by every command that writes results::

    with Output(options.out) as claim:   # checks, lock, stale-temp cleanup, temp folder
        write_into(claim.work)
    # on leaving the block without an error the temp folder was renamed to --out

* Checks before anything is written: ``--out`` is not a file (or, for a file output, not a
  folder), its parent can be created and written, and a new output is absent or an empty folder.
* A lock ``.<name>.lock`` beside ``--out`` (``fcntl.flock``, released by the kernel when the
  process dies, unlinked on a clean exit) makes a second run into the same ``--out`` fail at once
  with an "in use" error.
* Temporary outputs are named ``.<name>.partial-<pid>-<hex>``. Any run into a parent removes the
  partial outputs it finds there whose ``.<name>.lock`` it can take: their owner is dead (a live
  owner holds its lock). A live run's temporary output is never touched.
* On any error the temporary output, the lock file and the parent folders this claim created are
  removed; an ``OSError`` of a full disk, quota, file-size limit or read-only file system raised
  inside the block becomes one :class:`OutputWriteError` line that names the path.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from engine.types import EngineError

MODES = ("new", "extend", "resume")
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system or the process's file-size limit",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# errors that only a write raises: converted wherever they come from inside a claim
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?:\d+-[0-9a-f]{8}|[A-Za-z0-9_]{8})(?:\.[^.]*)?$")


class OutputWriteError(EngineError):
    """Writing an output failed (disk full, read-only, no permission, ...); nothing was kept."""


def write_error(path: str | os.PathLike[str], exc: OSError, flag: str = "--out") -> OutputWriteError:
    """One line naming ``path``, what went wrong and what to do."""
    reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        todo = f"free space there or choose another {flag}"
    else:
        todo = f"choose a writable {flag}"
    return OutputWriteError(f"cannot write {path}: {reason}; {todo}")


def os_error(path: str | os.PathLike[str], exc: OSError, flag: str = "--out") -> EngineError:
    """One line for any ``OSError`` met while a command uses ``path``: a write failure when the
    error is one only writes raise (or a permission error), else what the system said."""
    if exc.errno in _WRITE_ERRNOS or exc.errno in (errno.EACCES, errno.EPERM):
        return write_error(exc.filename or path, exc, flag)
    where = f" ({os.fsdecode(exc.filename)})" if exc.filename else ""
    return EngineError(f"cannot use {path}: {exc.strerror or exc}{where}; check it or choose another {flag}")


@contextmanager
def guarded(path: str | os.PathLike[str], flag: str = "--out") -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into an :class:`OutputWriteError`."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc, flag) from exc


def partial_name(name: str, suffix: str = "") -> str:
    """A temporary name for ``name`` that a later run can recognise: ``.<name>.partial-<pid>-<hex><suffix>``."""
    return f".{name}.partial-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created if missing), or None when held elsewhere."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.stat(path), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder unlinked it while we waited: lock the new file


def _unlock(path: Path, fd: int) -> None:
    """Unlink the lock file while holding it, then release it."""
    with suppress(OSError):
        path.unlink(missing_ok=True)
    os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_partials(folder: Path, held: str | None = None) -> list[Path]:
    """Remove the partial outputs in ``folder`` whose owners are dead; return what was removed.

    ``held`` is the name whose lock the caller holds (its partials are stale by definition).
    Leftover lock files nobody holds are removed too.
    """
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    by_name: dict[str, list[Path]] = {}
    for p in entries:
        m = _PARTIAL.match(p.name)
        if m:
            by_name.setdefault(m.group("name"), []).append(p)
        elif p.name.startswith(".") and p.name.endswith(".lock") and len(p.name) > 6:
            by_name.setdefault(p.name[1:-5], [])
    removed: list[Path] = []
    for name, partials in by_name.items():
        if name == held:
            for p in partials:
                _remove(p)
                removed.append(p)
            continue
        lock = folder / f".{name}.lock"
        try:
            fd = _try_lock(lock)
        except OSError:
            continue
        if fd is None:
            continue  # a live run owns these
        try:
            for p in partials:
                _remove(p)
                removed.append(p)
        finally:
            _unlock(lock, fd)
    return removed


def _writable(folder: Path) -> bool:
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
    return not read_only and os.access(folder, os.W_OK | os.X_OK)


class Output:
    """A claimed output folder or file; see the module docstring.

    ``kind``: ``"folder"`` or ``"file"``. ``mode`` (folders): ``"new"`` — absent or an empty folder,
    written under a temporary name and published by rename; ``"extend"`` — like ``new`` when
    absent, else written in place (each file atomically by the caller); ``"resume"`` — written in
    place, created when absent (and removed again on error unless :attr:`keep` is set).
    Files are always written to a temporary file and published with ``os.replace``.
    """

    def __init__(self, out: str | os.PathLike[str], *, kind: str = "folder", mode: str = "new",
                 flag: str = "--out") -> None:
        if kind not in ("folder", "file") or mode not in MODES:
            raise ValueError(f"bad output kind/mode {kind}/{mode}")
        self.final = Path(out).expanduser().resolve()
        self.kind, self.mode, self.flag = kind, mode, flag
        self.work = self.final
        self.keep = False
        self.published = False
        self._lock_fd: int | None = None
        self._lock = self.final.parent / f".{self.final.name}.lock"
        self._created: list[Path] = []  # folders this claim created, outermost first
        self._temp: Path | None = None
        self._created_final = False

    @property
    def in_place(self) -> bool:
        """True when results are written straight into ``final`` (an existing folder or resume)."""
        return self._temp is None

    def __enter__(self) -> Output:
        try:
            self._claim()
        except BaseException as exc:
            self._cleanup(failed=True)
            if isinstance(exc, OSError):
                raise write_error(self.final.parent, exc, self.flag) from exc
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            try:
                self.publish()
            except BaseException:
                self._cleanup(failed=True)
                raise
        self._cleanup(failed=exc is not None)
        if isinstance(exc, OSError):
            converted = self._convert(exc)
            if converted is not None:
                raise converted from exc

    def _convert(self, exc: OSError) -> OutputWriteError | None:
        """The one-line error for a write failure inside the block, or None to let it through."""
        name = exc.filename
        ours = name is not None and any(Path(os.fsdecode(name)).absolute().is_relative_to(p)
                                        for p in (self.final, self.work))
        if exc.errno in _WRITE_ERRNOS and (name is None or ours):
            return write_error(self.final, exc, self.flag)
        if exc.errno in _WRITE_ERRNOS:
            return write_error(os.fsdecode(name), exc, self.flag)
        if ours and exc.errno in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
            return write_error(self.final, exc, self.flag)
        return None

    def _claim(self) -> None:
        final, flag = self.final, self.flag
        if final == final.parent:
            raise EngineError(f"{final} is the root of the file system: give {flag} a folder below it")
        if self.kind == "folder" and final.exists() and not final.is_dir():
            raise EngineError(f"{final} is a file, not a folder: choose a folder path for {flag}")
        if self.kind == "file" and final.is_dir():
            raise EngineError(f"{final} is a folder: give {flag} a file path")
        if self.kind == "folder" and self.mode == "new" and final.is_dir() and any(final.iterdir()):
            raise EngineError(f"output folder {final} already exists and is not empty: choose a new {flag}")
        self._make_parents()
        parent = final.parent
        if not _writable(parent):
            raise EngineError(f"cannot write to {parent} (read-only or no permission): choose a writable {flag}")
        fd = _try_lock(self._lock)
        if fd is None:
            raise EngineError(f"{final} is in use by another run (it holds {self._lock}): "
                              f"wait for that run to finish or choose another {flag}")
        self._lock_fd = fd
        remove_stale_partials(parent, held=final.name)
        if self.kind == "file":
            self._temp = parent / partial_name(final.name, final.suffix)
            self.work = self._temp
            return
        if final.is_dir() and (self.mode != "new"):
            if not _writable(final):
                raise EngineError(f"cannot write to {final} (read-only or no permission): "
                                  f"choose a writable {flag}")
            remove_stale_partials(final)
            return
        if self.mode == "resume":
            final.mkdir()
            self._created_final = True
            return
        self._temp = parent / partial_name(final.name)
        self._temp.mkdir()
        self.work = self._temp

    def _make_parents(self) -> None:
        missing: list[Path] = []
        p = self.final.parent
        while not p.exists():
            missing.append(p)
            p = p.parent
        if not p.is_dir():
            raise EngineError(f"cannot create {self.final}: {p} is a file; choose a writable {self.flag}")
        for folder in reversed(missing):
            folder.mkdir()
            self._created.append(folder)

    def publish(self) -> Path:
        """Move the temporary output to ``final`` (no-op when written in place); returns ``final``."""
        if self._temp is not None and not self.published:
            try:
                os.replace(self._temp, self.final)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                    raise EngineError(f"{self.final} was created by another program while this run wrote "
                                      f"its results, which were discarded: choose a new {self.flag}") from exc
                raise write_error(self.final, exc, self.flag) from exc
        self.published = True
        return self.final

    def final_path(self, path: str | os.PathLike[str]) -> Path:
        """Where ``path`` (inside :attr:`work`) will be once published."""
        p = Path(path)
        try:
            return self.final / p.relative_to(self.work)
        except ValueError:
            return p

    def _cleanup(self, failed: bool) -> None:
        if self._temp is not None and not self.published:
            _remove(self._temp)
        if failed and self._created_final and not self.keep:
            shutil.rmtree(self.final, ignore_errors=True)
        if self._lock_fd is not None:
            _unlock(self._lock, self._lock_fd)
            self._lock_fd = None
        if failed and not (self._created_final and self.keep):
            for folder in reversed(self._created):
                try:
                    folder.rmdir()
                except OSError:
                    break
