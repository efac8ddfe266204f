"""atomic_write: the target holds the old or the new content, and no temporary file remains."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.atomic_io import atomic_write


def test_atomic_write_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "data.json"
    target.write_text("old")

    def failing(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["data.json"]
    assert atomic_write(target, lambda tmp: Path(tmp).write_text("new")) == target
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["data.json"]


def test_written_files_get_the_usual_permissions_not_the_temp_files(tmp_path):
    """Outputs are readable like any file the user writes (0o666 less the umask), not 0o600."""
    import os
    import stat

    from engine.atomic_io import atomic_write

    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "out.json", lambda tmp: Path(tmp).write_text("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
