"""Attention frames on disk: one ``.npy`` per (step, site) plus an ``index.json``.

Layout of a frames folder::

    .writer                         the claim of the folder's one writer (its process id)
    index.json                      {"frames": [{"step", "site", "file", "lattice", "context",
                                                 "head_mean", "shape"}, ...]}
    s0003__down_blocks.1.attentions.1.transformer_blocks.0.attn2.npy   float16 (H, Q, K)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic_io import atomic_write
from engine.types import EngineError

INDEX_NAME = "index.json"
CLAIM_NAME = ".writer"  # created exclusively by the folder's one writer


def frame_file_name(step: int, site: str) -> str:
    return f"s{step:04d}__{site}.npy"


class FrameStoreWriter:
    """Writes frames to ``folder`` as they arrive; :meth:`close` writes the index atomically.

    One run per folder: the writer claims the folder (``.writer``, created exclusively, so the
    claim holds across processes) and refuses one that another writer claimed or that holds an
    earlier run's index. Without the claim, two writers in one folder each wrote an index of their
    own frames only, and the last one won (``bench/bench_frame_store.py``: 175 of 350 frames).
    """

    def __init__(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if (folder / INDEX_NAME).exists():
                raise FileExistsError(folder / INDEX_NAME)
            fd = os.open(folder / CLAIM_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError as exc:
            if not folder.is_dir():  # the stream folder's name is taken by a file
                raise EngineError(f"cannot create stream folder {folder}: {exc.strerror}; pick another stream_dir") from exc
            raise EngineError(f"stream folder {folder} already holds a streamed run (or another process is "
                              "writing one there): pick an empty stream_dir") from None
        except OSError as exc:
            raise EngineError(f"cannot create stream folder {folder}: {exc.strerror}; pick another stream_dir") from exc
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        self.folder = folder
        self.entries: list[dict[str, Any]] = []

    def write(self, step: int, site: str, array: np.ndarray, lattice: tuple[int, int],
              context: str, head_mean: bool) -> None:
        name = frame_file_name(step, site)
        np.save(self.folder / name, array)
        self.entries.append({
            "step": int(step), "site": site, "file": name, "lattice": list(lattice),
            "context": context, "head_mean": bool(head_mean), "shape": list(array.shape),
        })

    def close(self) -> None:
        text = json.dumps({"frames": self.entries}, indent=1)
        atomic_write(self.folder / INDEX_NAME, lambda tmp: Path(tmp).write_text(text))


def load_frame_index(folder: str | Path) -> list[dict[str, Any]]:
    """The entries of a frames folder's ``index.json``."""
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise EngineError(f"no {INDEX_NAME} in {folder}; pass a folder written by a streamed run")
    return json.loads(path.read_text())["frames"]


def load_frames(folder: str | Path, mmap: bool = True) -> dict[tuple[int, str], np.ndarray]:
    """All frames of a frames folder as ``{(step, site): (H, Q, K) float16}`` (memory-mapped)."""
    folder = Path(folder)
    return {
        (e["step"], e["site"]): np.load(folder / e["file"], mmap_mode="r" if mmap else None)
        for e in load_frame_index(folder)
    }


class StoredFrames(Mapping[tuple[int, str], np.ndarray]):
    """A frames folder as a read-only ``{(step, site): (H, Q, K) float16}`` mapping that reads
    each frame from disk when it is asked for and keeps nothing, so a pass over all frames holds
    one frame at a time (:func:`engine.analysis.aggregate.reduce_views`)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._files = {(e["step"], e["site"]): e["file"] for e in load_frame_index(self.folder)}

    def __getitem__(self, key: tuple[int, str]) -> np.ndarray:
        return np.load(self.folder / self._files[key])

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)
