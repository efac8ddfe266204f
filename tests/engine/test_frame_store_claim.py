"""One streamed run per frames folder, also across processes: a second writer is refused with one
line instead of overwriting the first one's index (which lost half the frames before)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.probe.frame_store import FrameStoreWriter, StoredFrames
from engine.types import EngineError, GenerationRequest

ROOT = Path(__file__).resolve().parents[2]
SECOND_WRITER = """
import sys
from pathlib import Path
from engine.probe.frame_store import FrameStoreWriter
from engine.types import EngineError
try:
    FrameStoreWriter(Path(sys.argv[1]))
except EngineError as exc:
    print(exc)
    sys.exit(2)
"""


def test_a_second_process_cannot_write_into_a_claimed_folder(tmp_path):
    folder = tmp_path / "frames"
    first = FrameStoreWriter(folder)
    proc = subprocess.run([sys.executable, "-c", SECOND_WRITER, str(folder)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "already holds a streamed run" in proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 1
    frame = np.full((1, 4, 3), 0.25, dtype=np.float16)
    first.write(0, "a", frame, (4, 1), "text", True)
    first.close()
    np.testing.assert_array_equal(StoredFrames(folder)[(0, "a")], frame)


def test_a_folder_with_an_earlier_run_is_refused_and_left_alone(ldm, tmp_path):
    folder = tmp_path / "s"
    req = GenerationRequest(prompt="warm bass", steps=2, duration=0.32, memory_budget_mb=1e-4,
                            stream_dir=str(folder))
    ldm.generate(req)
    index = (folder / "index.json").read_text()
    with pytest.raises(EngineError, match="pick an empty stream_dir") as err:
        ldm.generate(req)
    assert "\n" not in str(err.value)
    assert (folder / "index.json").read_text() == index and len(StoredFrames(folder)) == 16


def test_a_file_in_the_way_is_named_as_such(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    with pytest.raises(EngineError, match="cannot create stream folder .*File exists; pick another stream_dir"):
        FrameStoreWriter(taken)
    assert taken.read_text() == "not a folder"
