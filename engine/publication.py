"""Publication figures of a run: heatmap, layers, overview, profiles, steps (matplotlib, Agg; no Qt).

The renderer takes arrays (:class:`FigureData`); :func:`load_run` is the thin loader from an
``analyze`` folder. Every map is drawn with time in seconds along x and the mel-spaced frequency
axis along y (low at the bottom), ticked at readable Hz values, with a colour bar labelled
"attention". Files are written atomically as PNG, SVG (text kept as text) or PDF.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.site_labels import site_label
from engine.types import EngineError

VIEWS = ("heatmap", "layers", "overview", "profiles", "steps")
FORMATS = (".png", ".svg", ".pdf")
HZ_TICKS = (20, 50, 100, 200, 500, 1000, 2000, 4000, 8000, 16000)
COLORBAR_LABEL = "attention"
SPECIAL_TOKENS = {"<s>", "</s>", "<pad>", "<bos>", "<eos>", "<unk>", "[BOS]", "[PAD]"}
MAX_INCHES = 60.0


@dataclass
class FigureData:
    """The arrays a figure is drawn from (the main context of one run)."""

    prompt: str
    tokens: list[str]
    hz: np.ndarray  # (F,) centre Hz of each frequency bin, low first
    duration: float  # seconds spanned by the time axis
    aggregate: np.ndarray  # (K, T, F)
    sites: list[str] = field(default_factory=list)
    site_maps: np.ndarray | None = None  # (S, K, T, F), mean over steps
    steps: list[int] = field(default_factory=list)
    step_maps: np.ndarray | None = None  # (N, K, T, F), mean over sites
    frames: Mapping[tuple[int, str], np.ndarray] = field(default_factory=dict)  # raw (H, Q, K)
    lattices: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    pooling: str = "max"
    mel_scale: str = "slaney"


@dataclass(frozen=True)
class FigureSpec:
    """What to draw: the view, an optional site / step (index) / token / head, and the page."""

    view: str = "heatmap"
    site: str | None = None
    step: int | None = None
    token: str | None = None
    head: int | None = None
    size: tuple[float, float] = (6.4, 4.0)  # inches
    dpi: int = 150
    cmap: str = "magma"
    levels: tuple[float, float] | None = None  # colour range; None: the data's min and max


def parse_size(text: str) -> tuple[float, float]:
    """``WxH`` in inches (e.g. ``6.4x4``) → ``(w, h)``; anything else is an EngineError."""
    parts = str(text).lower().split("x")
    try:
        w, h = (float(p) for p in parts)
    except ValueError:
        raise EngineError(f"--size {text!r} is not WxH in inches: give e.g. 6.4x4") from None
    if not (math.isfinite(w) and math.isfinite(h) and 0.5 <= w <= MAX_INCHES and 0.5 <= h <= MAX_INCHES):
        raise EngineError(f"--size {text!r}: width and height must be between 0.5 and {MAX_INCHES:g} inches")
    return (w, h)


# ---- loading -------------------------------------------------------------------------------------

class _NpzFrames(Mapping[tuple[int, str], np.ndarray]):
    """The raw frames ``frame/<step>/<site>`` of an open ``attention.npz``, read on access."""

    def __init__(self, npz: Any) -> None:
        self._npz = npz
        self._keys: dict[tuple[int, str], str] = {}
        for name in npz.files:
            if name.startswith("frame/"):
                _, step, site = name.split("/", 2)
                self._keys[(int(step), site)] = name

    def __getitem__(self, key: tuple[int, str]) -> np.ndarray:
        return np.asarray(self._npz[self._keys[key]])

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def load_run(run_dir: str | os.PathLike[str]) -> FigureData:
    """Read ``run.json`` and ``attention.npz`` of an ``analyze`` folder (frames stay on disk)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise EngineError(f"run folder {folder} does not exist: give a folder written by `main.py analyze`")
    run_json, npz_path = folder / "run.json", folder / "attention.npz"
    for p in (run_json, npz_path):
        if not p.is_file():
            raise EngineError(f"{folder} has no {p.name}: give a folder written by `main.py analyze`")
    try:
        run = json.loads(run_json.read_text())
        z = np.load(npz_path, allow_pickle=False)
        tokens = [str(t) for t in z["tokens"]]
        data = FigureData(
            prompt=str(run.get("recipe", {}).get("prompt", "")),
            tokens=tokens,
            hz=np.asarray(z["hz"], dtype=np.float64),
            duration=_duration(run, z),
            aggregate=np.asarray(z["aggregate"], dtype=np.float64),
            sites=[str(s) for s in z["sites"]] if "sites" in z.files else [],
            site_maps=np.asarray(z["site_maps"], dtype=np.float32) if "site_maps" in z.files else None,
            steps=[int(s) for s in z["steps"]] if "steps" in z.files else [],
            step_maps=np.asarray(z["step_maps"], dtype=np.float32) if "step_maps" in z.files else None,
            frames=_NpzFrames(z),
            lattices={str(k): (int(v[0]), int(v[1])) for k, v in run.get("lattices", {}).items()},
            pooling=str(run.get("analysis", {}).get("pooling", "max")),
            mel_scale=str(run.get("mel_spec", {}).get("mel_scale", "slaney")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise EngineError(f"cannot read the run in {folder}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          "; give a complete folder written by `main.py analyze`") from None
    if data.aggregate.ndim != 3 or data.aggregate.shape[0] != len(tokens):
        raise EngineError(f"{npz_path} holds an aggregate of shape {data.aggregate.shape}: expected tokens x T x F")
    return data


def _duration(run: dict, z: Any) -> float:
    """Seconds of the time axis: from the bin-centre ``times`` (first + last = duration)."""
    if "times" in z.files and len(z["times"]):
        t = np.asarray(z["times"], dtype=np.float64)
        return float(t[0] + t[-1])
    return float(run.get("recipe", {}).get("duration", 1.0))


# ---- selection -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Choice:
    site: int | None
    step: int | None
    token: int | None
    head: int | None


def _resolve(data: FigureData, spec: FigureSpec) -> _Choice:
    """Indices of the spec's site / step / token / head in ``data``; one EngineError line if unknown."""
    site = None
    if spec.site is not None:
        s = str(spec.site)
        if s in data.sites:
            site = data.sites.index(s)
        elif s.isdigit() and int(s) < len(data.sites):
            site = int(s)
        else:
            hits = [i for i, name in enumerate(data.sites) if s in name]
            if len(hits) != 1:
                raise EngineError(f"unknown site {s!r}: the run has {len(data.sites)} cross-attention sites "
                                  f"(give a full name or an index 0..{len(data.sites) - 1}; `sites` lists them)")
            site = hits[0]
    step = None
    if spec.step is not None:
        n = len(data.steps)
        if not 0 <= int(spec.step) < n:
            raise EngineError(f"step {spec.step} is out of range: the run recorded {n} steps (0..{n - 1})")
        step = int(spec.step)
    token = None
    if spec.token is not None:
        t = str(spec.token)
        low = [x.lower() for x in data.tokens]
        bare = [clean_token(x).lower() for x in data.tokens]
        if t.lower() in low:
            token = low.index(t.lower())
        elif t.lower() in bare:
            token = bare.index(t.lower())
        elif t.isdigit() and int(t) < len(data.tokens):
            token = int(t)
        else:
            raise EngineError(f"unknown token {t!r}: the prompt's tokens are {' | '.join(data.tokens)} "
                              "(give one of them or its index)")
    head = None
    if spec.head is not None:
        if site is None:
            raise EngineError("--head needs --site: heads belong to one attention site")
        heads = _heads(data, data.sites[site])
        if not 0 <= int(spec.head) < heads:
            raise EngineError(f"head {spec.head} does not exist: site {data.sites[site]} has {heads} "
                              f"head{'s' if heads != 1 else ''} recorded (0..{heads - 1})")
        head = int(spec.head)
    return _Choice(site, step, token, head)


def clean_token(token: str) -> str:
    """A token without its tokenizer's word marker (``▁bass``, ``Ġbass`` → ``bass``)."""
    return str(token).lstrip("▁Ġ").removeprefix("##") or str(token)


def _frame_keys(data: FigureData, site: str) -> list[tuple[int, str]]:
    keys = sorted(k for k in data.frames if k[1] == site)
    if not keys:
        raise EngineError(f"the run has no raw frames of site {site} (attention.npz frame/<step>/<site>; "
                          "a streamed run keeps them elsewhere): drop --head, or --site with --step")
    return keys


def _heads(data: FigureData, site: str) -> int:
    return int(np.shape(data.frames[_frame_keys(data, site)[0]])[0])


def _frame_tokens(data: FigureData, site: str, step: int | None, head: int | None) -> np.ndarray:
    """Per-token ``(K, T, F)`` map of one site from its raw frames: one step or the step mean."""
    from engine.analysis.aggregate import call_map

    keys = _frame_keys(data, site)
    if step is not None:
        keys = [k for k in keys if k[0] == data.steps[step]]
        if not keys:
            raise EngineError(f"site {site} has no frame at step {step}: pick another step")
    lattice = data.lattices.get(site)
    if lattice is None:
        raise EngineError(f"run.json lists no lattice for site {site}: the run folder is incomplete")
    grid = tuple(data.aggregate.shape[1:])
    maps = []
    for key in keys:
        probs = np.asarray(data.frames[key], dtype=np.float32)
        mask = None if head is None else [i == head for i in range(probs.shape[0])]
        offset = max(0, probs.shape[1] - lattice[0] * lattice[1])
        maps.append(call_map(probs, lattice, pooling="none", head_mask=mask, target=grid, query_offset=offset))
    return np.mean(maps, axis=0)


def _tokens_map(data: FigureData, site: int | None, step: int | None, head: int | None) -> np.ndarray:
    """``(K, T, F)`` of the selection: aggregate, one site, one step, or one site at one step / head."""
    if site is not None and (step is not None or head is not None):
        return _frame_tokens(data, data.sites[site], step, head)
    if site is not None:
        if data.site_maps is None:
            raise EngineError("the run has no per-site maps (site_maps): re-run `analyze`")
        return np.asarray(data.site_maps[site], dtype=np.float64)
    if step is not None:
        if data.step_maps is None:
            raise EngineError("the run has no per-step maps (step_maps): re-run `analyze`")
        return np.asarray(data.step_maps[step], dtype=np.float64)
    return np.asarray(data.aggregate, dtype=np.float64)


def _pool(data: FigureData, maps: np.ndarray, token: int | None) -> np.ndarray:
    """One token's ``(T, F)`` map, or the content tokens pooled with the run's pooling."""
    if token is not None:
        return maps[token]
    labels = data.tokens + [f"#{j}" for j in range(len(data.tokens), maps.shape[0])]
    keep = [i for i in range(maps.shape[0]) if labels[i] not in SPECIAL_TOKENS] or list(range(maps.shape[0]))
    return maps[keep].max(axis=0) if data.pooling == "max" else maps[keep].mean(axis=0)


def selected_map(data: FigureData, spec: FigureSpec) -> np.ndarray:
    """The ``(T, F)`` map the heatmap view of ``spec`` draws."""
    c = _resolve(data, spec)
    return _pool(data, _tokens_map(data, c.site, c.step, c.head), c.token)


# ---- drawing -------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def short_site(name: str) -> str:
    """A compact label of a site name (``up_blocks.0.attentions.1...attn2`` → ``up0.a1.attn2``):
    :func:`engine.site_labels.site_label`, as the GUI shows it."""
    return site_label(name)


def hz_ticks(hz: np.ndarray, mel_scale: str = "slaney", min_gap: float = 0.06) -> list[tuple[float, str]]:
    """``(y, label)`` ticks at readable Hz values for bins ``0..F`` spaced evenly in mel."""
    from engine.analysis.melscale import hz_to_mel

    n = len(hz)
    mel = hz_to_mel(np.asarray(hz, dtype=np.float64), mel_scale)
    centres = np.arange(n) + 0.5
    if n < 2 or not np.all(np.diff(mel) > 0):
        return [(float(c), hz_label(float(h))) for c, h in zip(centres, hz, strict=True)]
    slope = (centres[-1] - centres[0]) / (mel[-1] - mel[0])  # bins are linear in mel
    ticks: list[tuple[float, str]] = []
    for value in HZ_TICKS:
        y = float(centres[0] + (hz_to_mel(value, mel_scale) - mel[0]) * slope)
        if 0.0 <= y <= n and (not ticks or y - ticks[-1][0] >= min_gap * n):
            ticks.append((y, hz_label(value)))
    if len(ticks) < 2:  # a narrow band: label a few bins with their own Hz
        idx = np.unique(np.linspace(0, n - 1, num=min(n, 5)).round().astype(int))
        ticks = [(float(centres[i]), hz_label(float(hz[i]))) for i in idx]
    return ticks


def hz_label(hz: float) -> str:
    if hz >= 1000:
        k = hz / 1000
        return f"{k:.0f}k" if abs(k - round(k)) < 0.05 else f"{k:.1f}k"
    return f"{hz:.0f}"


def _draw_map(ax: Any, grid: np.ndarray, data: FigureData, spec: FigureSpec, norm: Any,
              labels: bool = True, title: str | None = None) -> Any:
    """One ``(T, F)`` map on ``ax``: time (s) on x, mel-spaced Hz on y."""
    n_f = grid.shape[1]
    im = ax.imshow(np.asarray(grid, dtype=np.float64).T, origin="lower", aspect="auto", cmap=spec.cmap,
                   norm=norm, interpolation="nearest", extent=(0.0, data.duration, 0.0, n_f))
    ticks = hz_ticks(data.hz, data.mel_scale)
    ax.set_yticks([y for y, _ in ticks])
    ax.set_yticklabels([t for _, t in ticks] if labels else [])
    if labels:
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz, mel scale)")
    else:
        ax.tick_params(labelbottom=False)
    if title:
        ax.set_title(title, fontsize=8)
    return im


def _norm(maps: list[np.ndarray], spec: FigureSpec) -> Any:
    from matplotlib.colors import Normalize

    if spec.levels is not None:
        lo, hi = spec.levels
    else:
        lo = float(min(np.min(m) for m in maps))
        hi = float(max(np.max(m) for m in maps))
    return Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-6)


def title_of(data: FigureData, spec: FigureSpec, view: str | None = None) -> str:
    """Two lines: the prompt, then view · site · step · token · head."""
    c = _resolve(data, spec)
    n = len(data.steps)
    parts = [view or spec.view,
             f"site {short_site(data.sites[c.site])}" if c.site is not None else "all sites",
             f"step {c.step + 1}/{n}" if c.step is not None else f"all {n} steps",
             f"token '{clean_token(data.tokens[c.token])}'" if c.token is not None else f"all tokens ({data.pooling})",
             f"head {c.head}" if c.head is not None else "head mean"]
    return f"“{data.prompt}”\n" + " · ".join(parts)


def _grid_shape(n: int, aspect: float) -> tuple[int, int]:
    cols = max(1, min(n, round(math.sqrt(n * aspect))))
    return math.ceil(n / cols), cols


def render(data: FigureData, spec: FigureSpec) -> Any:
    """A matplotlib Figure of ``spec.view`` (close it with ``matplotlib.pyplot.close``)."""
    if spec.view not in VIEWS:
        raise EngineError(f"unknown view {spec.view!r}: choose one of {', '.join(VIEWS)}")
    c = _resolve(data, spec)
    plt = _pyplot()
    fig = plt.figure(figsize=spec.size, dpi=spec.dpi, layout="constrained")
    fig.suptitle(title_of(data, spec), fontsize=9)
    try:
        if spec.view == "heatmap":
            m = _pool(data, _tokens_map(data, c.site, c.step, c.head), c.token)
            ax = fig.add_subplot()
            im = _draw_map(ax, m, data, spec, _norm([m], spec))
            fig.colorbar(im, ax=ax, label=COLORBAR_LABEL)
        elif spec.view == "profiles":
            _profiles(fig, data, spec, c)
        else:
            panels = _panels(data, spec, c)
            rows, cols = _grid_shape(len(panels), spec.size[0] / spec.size[1]) if spec.view != "overview" \
                else (len(data.sites), len(data.steps))
            from matplotlib.ticker import MaxNLocator

            axes = fig.subplots(rows, cols, squeeze=False)
            norm = _norm([m for _, m in panels], spec)
            im = None
            for i, (ax, (title, m)) in enumerate(zip(axes.flat, panels, strict=False)):
                edge = i // cols == rows - 1 or i + cols >= len(panels)
                im = _draw_map(ax, m, data, spec, norm, labels=False, title=title)
                if edge:
                    ax.tick_params(labelbottom=True)
                if i % cols == 0:
                    ticks = hz_ticks(data.hz, data.mel_scale, min_gap=0.12 if rows > 2 else 0.06)
                    ax.set_yticks([y for y, _ in ticks])
                    ax.set_yticklabels([t for _, t in ticks], fontsize=6)
                    if spec.view == "overview":
                        ax.set_ylabel(short_site(data.sites[i // cols]), fontsize=7)
                ax.tick_params(labelsize=6)
                ax.xaxis.set_major_locator(MaxNLocator(4))
            for ax in list(axes.flat)[len(panels):]:
                ax.axis("off")
            fig.supxlabel("time (s)", fontsize=8)
            fig.supylabel("frequency (Hz, mel scale)", fontsize=8)
            fig.colorbar(im, ax=axes, label=COLORBAR_LABEL, shrink=0.9)
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _panels(data: FigureData, spec: FigureSpec, c: _Choice) -> list[tuple[str, np.ndarray]]:
    """``(title, map)`` per panel of the layers, steps and overview grids."""
    if spec.view == "layers":
        sites = range(len(data.sites)) if c.site is None else [c.site]
        return [(short_site(data.sites[s]), _pool(data, _tokens_map(data, s, c.step, c.head), c.token)) for s in sites]
    if spec.view == "steps":
        steps = range(len(data.steps)) if c.step is None else [c.step]
        return [(f"step {n + 1}", _pool(data, _tokens_map(data, c.site, n, c.head), c.token)) for n in steps]
    panels = []  # overview: one row per site, one column per step
    for s in range(len(data.sites)):
        for n in range(len(data.steps)):
            title = f"step {n + 1}" if s == 0 else ""
            panels.append((title, _pool(data, _frame_tokens(data, data.sites[s], n, c.head), c.token)))
    return panels


def _profiles(fig: Any, data: FigureData, spec: FigureSpec, c: _Choice) -> None:
    """Frequency profile (mean over time) of each token of the selection, on the mel-spaced Hz axis."""
    maps = _tokens_map(data, c.site, c.step, c.head)
    ax = fig.add_subplot()
    chosen = [c.token] if c.token is not None else [
        i for i, t in enumerate(data.tokens) if t not in SPECIAL_TOKENS] or list(range(len(data.tokens)))
    y = np.arange(maps.shape[2]) + 0.5
    for i in chosen:
        ax.plot(y, maps[i].mean(axis=0), label=clean_token(data.tokens[i]), linewidth=1.2)
    ticks = hz_ticks(data.hz, data.mel_scale)
    ax.set_xticks([t for t, _ in ticks])
    ax.set_xticklabels([lbl for _, lbl in ticks])
    ax.set_xlim(0, maps.shape[2])
    ax.set_xlabel("frequency (Hz, mel scale)")
    ax.set_ylabel(f"{COLORBAR_LABEL} (mean over time)")
    ax.legend(fontsize=7, ncol=2, title="token", title_fontsize=7)
    ax.grid(alpha=0.3)


def save(fig: Any, out: str | os.PathLike[str], dpi: int) -> Path:
    """Write ``fig`` to ``out`` (.png, .svg or .pdf) atomically and close it."""
    from engine.atomic_io import atomic_write
    from engine.output_dir import guarded

    plt = _pyplot()
    target = Path(out)
    try:
        fmt = check_out(target)
        with guarded(target), plt.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
            atomic_write(target, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi,
                                                         metadata={"Creator": "AIBA Studio"} if fmt != "png" else None))
    finally:
        plt.close(fig)
    return target


def check_out(target: Path) -> str:
    """The format of ``target`` (png, svg, pdf); EngineError if its suffix or folder is wrong."""
    if target.suffix.lower() not in FORMATS:
        raise EngineError(f"--out {target.name}: choose a file ending in .png, .svg or .pdf")
    if not target.parent.is_dir():
        raise EngineError(f"folder {target.parent} does not exist: create it or choose another --out")
    if target.is_dir():
        raise EngineError(f"--out {target} is a folder: give a file name ending in .png, .svg or .pdf")
    return target.suffix.lower().lstrip(".")


def figure(data: FigureData, spec: FigureSpec, out: str | os.PathLike[str]) -> Path:
    """Render ``spec`` from ``data`` into ``out``."""
    check_out(Path(out))
    return save(render(data, spec), out, spec.dpi)


def render_map(grid: np.ndarray, hz: np.ndarray, duration: float, title: str, out: str | os.PathLike[str],
               *, size: tuple[float, float] = (6.4, 4.0), dpi: int = 150, cmap: str = "magma",
               levels: tuple[float, float] | None = None, mel_scale: str = "slaney") -> Path:
    """One ``(T, F)`` map as a figure with ``title``: what a viewer shows, as a publication figure."""
    g = np.asarray(grid, dtype=np.float64)
    data = FigureData(prompt="", tokens=[], hz=np.asarray(hz, dtype=np.float64), duration=float(duration),
                      aggregate=g[None], mel_scale=mel_scale)
    spec = FigureSpec(size=size, dpi=dpi, cmap=cmap, levels=levels)
    check_out(Path(out))
    plt = _pyplot()
    fig = plt.figure(figsize=size, dpi=dpi, layout="constrained")
    try:
        fig.suptitle(title, fontsize=9)
        ax = fig.add_subplot()
        im = _draw_map(ax, g, data, spec, _norm([g], spec))
        fig.colorbar(im, ax=ax, label=COLORBAR_LABEL)
    except BaseException:
        plt.close(fig)
        raise
    return save(fig, out, dpi)


def figure_command(options: Any, progress: Any = None) -> Path:
    """``main.py figure``: load ``options.run_dir`` and write ``options.spec`` to ``options.out``
    (:class:`engine.commands.figures.FigureOptions`)."""
    check_out(Path(options.out))
    return figure(load_run(options.run_dir), options.spec, options.out)
