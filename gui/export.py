"""Export of exactly what is shown: figures (PNG, SVG), data (CSV, NPZ), audio (WAV, FLAC)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
from PySide6.QtCore import QPoint, QRect, QSize
from PySide6.QtGui import QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QWidget

from engine.analysis.melscale import grid_hz
from engine.atomic_io import atomic_write
from engine.types import EngineError
from gui.workspace import RunData, Selection

AUDIO_SUBTYPES = {".wav": "FLOAT", ".flac": "PCM_24"}


def _target(path: str | os.PathLike[str], suffixes: tuple[str, ...]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise EngineError(f"{p.name}: choose a file ending in {' or '.join(suffixes)}")
    if not p.parent.is_dir():
        raise EngineError(f"folder {p.parent} does not exist: choose an existing folder")
    return p


def export_png(widget: QWidget, path: str | os.PathLike[str]) -> Path:
    """The widget as it is on screen, as PNG."""
    target = _target(path, (".png",))
    pixmap = widget.grab()

    def write(tmp: str) -> None:
        if not pixmap.save(tmp, "PNG"):
            raise EngineError(f"could not write {target}: check the folder's permissions")

    return atomic_write(target, write)


def export_svg(widget: QWidget, path: str | os.PathLike[str]) -> Path:
    """The widget rendered through QSvgGenerator (pyqtgraph 0.14's SVGExporter fails on Qt 6)."""
    target = _target(path, (".svg",))

    def write(tmp: str) -> None:
        gen = QSvgGenerator()
        gen.setFileName(tmp)
        gen.setSize(QSize(widget.width(), widget.height()))
        gen.setViewBox(QRect(0, 0, widget.width(), widget.height()))
        gen.setTitle("AIBA Studio")
        painter = QPainter(gen)
        try:
            widget.render(painter, QPoint(0, 0))
        finally:
            painter.end()

    return atomic_write(target, write)


def map_axes(run: RunData, shown: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Bin-centre times (s) and Hz of a shown ``(T, F)`` map."""
    n_t, n_f = shown.shape
    times = (np.arange(n_t) + 0.5) * run.duration() / n_t
    hz = grid_hz(run.mel_spec, n_f) if run.mel_spec is not None else None
    return times, hz


def export_csv(run: RunData, shown: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """The shown map as CSV: one row per time bin; header = bin-centre Hz, first column = time (s)."""
    target = _target(path, (".csv",))
    times, hz = map_axes(run, shown)
    cols = hz if hz is not None else np.arange(shown.shape[1])
    header = "time_s," + ",".join(f"{v:.2f}" for v in cols)
    table = np.column_stack([times, shown])
    return atomic_write(target, lambda tmp: np.savetxt(tmp, table, delimiter=",", header=header, comments="", fmt="%.9g"))


def export_npz(run: RunData, shown: np.ndarray | None, path: str | os.PathLike[str]) -> Path:
    """Every captured array of the run (frames as recorded) plus the shown map and its axes."""
    target = _target(path, (".npz",))
    arrays: dict[str, np.ndarray] = {}
    index = []
    for i, ((step, site), probs) in enumerate(sorted(run.frames.items())):
        arrays[f"frame_{i:05d}"] = np.asarray(probs)
        index.append((step, site))
    arrays["frame_steps"] = np.array([s for s, _ in index], dtype=np.int64)
    arrays["frame_sites"] = np.array([n for _, n in index], dtype=np.str_)
    if run.result is not None:
        arrays["audio"] = np.asarray(run.result.audio)
        arrays["sample_rate"] = np.array(run.result.sample_rate)
        if run.result.mel is not None:
            arrays["mel"] = np.asarray(run.result.mel)
        arrays["sigmas"] = np.asarray(run.result.sigmas)
    for context, toks in run.tokens.items():
        arrays[f"tokens_{context}"] = np.array(toks, dtype=np.str_)
    if shown is not None:
        times, hz = map_axes(run, shown)
        arrays["shown_map"] = np.asarray(shown)
        arrays["shown_times_s"] = times
        if hz is not None:
            arrays["shown_hz"] = hz

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(target, write)


def export_audio(audio: np.ndarray, sample_rate: int, path: str | os.PathLike[str]) -> Path:
    """WAV (32-bit float, exact) or FLAC (24-bit) of ``audio``."""
    target = _target(path, tuple(AUDIO_SUBTYPES))
    data = np.asarray(audio, dtype=np.float32).reshape(-1)
    if data.size == 0:
        raise EngineError("no audio to export: generate a clip first")
    subtype = AUDIO_SUBTYPES[target.suffix.lower()]
    fmt = target.suffix.lower().lstrip(".").upper()
    clip = np.clip(data, -1.0, 1.0) if fmt == "FLAC" else data
    return atomic_write(target, lambda tmp: sf.write(tmp, clip, int(sample_rate), subtype=subtype, format=fmt))


def frames_from_npz(path: str | os.PathLike[str]) -> dict[tuple[int, str], np.ndarray]:
    """Read back the frames written by :func:`export_npz`."""
    with np.load(path) as z:
        steps, sites = z["frame_steps"], z["frame_sites"]
        return {(int(s), str(n)): z[f"frame_{i:05d}"] for i, (s, n) in enumerate(zip(steps, sites, strict=True))}


def figure_title(run: RunData, sel: Selection, head_masks: dict[str, list[bool]] | None = None) -> str:
    """Two lines naming what the heatmap shows: the prompt, then site · step · token · head."""
    from engine.publication import clean_token, short_site

    n = run.request.steps or len(run.steps)
    if sel.mode == "aggregate":
        where, step = "aggregate of all sites", f"steps 1–{sel.step + 1}/{n}"
    else:
        where, step = f"site {short_site(sel.site or '?')}", f"step {sel.step + 1}/{n}"
    toks = run.tokens_for(sel.site) if sel.site else []
    if sel.tokens:
        token = f"token '{clean_token(toks[sel.tokens[0]])}'" if sel.tokens[0] < len(toks) else f"token #{sel.tokens[0]}"
    else:
        token = f"all tokens ({sel.pooling})"
    if sel.head is not None and sel.mode != "aggregate":
        head = f"head {sel.head}"
    else:
        masked = any(not all(m) for m in (head_masks or {}).values())
        head = "selected heads" if masked else "head mean"
    return f"“{run.request.prompt}”\n" + " · ".join([where, step, token, head])


def export_figure(run: RunData, sel: Selection, shown: np.ndarray, path: str | os.PathLike[str], *,
                  size_px: tuple[int, int], cmap: str = "magma", levels: tuple[float, float] | None = None,
                  head_masks: dict[str, list[bool]] | None = None, dpi: int = 100) -> Path:
    """The shown ``(T, F)`` map as a publication figure (PNG, SVG or PDF) of ``size_px`` pixels at ``dpi``."""
    from engine.publication import render_map

    target = _target(path, (".png", ".svg", ".pdf"))
    if run.mel_spec is None:
        raise EngineError("the run has no mel definition yet: wait for the first step")
    hz = grid_hz(run.mel_spec, shown.shape[1])
    size = ((size_px[0] + 0.01) / dpi, (size_px[1] + 0.01) / dpi)  # + 0.01: pixels truncate
    return render_map(shown, hz, run.duration(), figure_title(run, sel, head_masks), target, size=size, dpi=dpi,
                      cmap=cmap, levels=levels, mel_scale=run.mel_spec.mel_scale)
