"""Write a file so that readers see the old version or the new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` for a hidden temporary file beside ``path``, then move it into
    place with ``os.replace``; on any error the temporary file is removed and ``path`` is untouched.
    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask),
    not the ``0o600`` of the private temporary file."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
