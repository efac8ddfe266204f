"""Headless PNG figures of a run (matplotlib, Agg). Low frequencies are at the bottom of every map."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from engine.site_labels import site_label
from engine.types import MelSpec

SPECIAL_TOKENS = {"<s>", "</s>", "<pad>", "<bos>", "<eos>", "<unk>", "[BOS]", "[PAD]"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def tf_image(ax, grid: np.ndarray, hz: np.ndarray, duration_s: float, title: str, cmap: str = "magma"):
    """Draw a ``(T, F)`` map with time on x and Hz on y (low at the bottom)."""
    n_f = grid.shape[1]
    im = ax.imshow(grid.T, origin="lower", aspect="auto", cmap=cmap, interpolation="nearest",
                   extent=(0.0, duration_s, -0.5, n_f - 0.5))
    ticks = np.unique(np.linspace(0, n_f - 1, num=min(n_f, 6)).round().astype(int))
    ax.set_yticks(ticks)
    ax.set_yticklabels([_hz_label(hz[i]) for i in ticks])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title, fontsize=9)
    return im


def _hz_label(hz: float) -> str:
    return f"{hz / 1000:.1f}k" if hz >= 1000 else f"{hz:.0f}"


def pooled(maps: np.ndarray, tokens: list[str], how: str = "mean") -> np.ndarray:
    """Pool per-token maps ``(K, T, F)`` over the content tokens (specials excluded)."""
    keep = [i for i, t in enumerate(tokens) if t not in SPECIAL_TOKENS] or list(range(len(tokens)))
    sel = maps[keep]
    return sel.max(axis=0) if how == "max" else sel.mean(axis=0)


def write_figures(folder: Path, result, spec: MelSpec, arrays: dict[str, np.ndarray], pooling: str = "mean") -> list[Path]:
    """Write mel.png, aggregate.png, layers.png and profiles.png; return their paths."""
    plt = _pyplot()
    from engine.analysis.melscale import band_centres_hz, mel_spectrogram, power_to_db

    duration = len(result.audio) / result.sample_rate
    hz = arrays["hz"]
    tokens = [str(t) for t in arrays["tokens"]]
    agg = arrays["aggregate"].astype(np.float64)
    written: list[Path] = []

    mel = result.mel
    if mel is None:
        mel = power_to_db(mel_spectrogram(np.asarray(result.audio, dtype=np.float64), spec, result.sample_rate))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    im = tf_image(ax, np.asarray(mel, dtype=np.float64), band_centres_hz(spec), duration,
                  f"mel spectrogram — {result.recipe.get('prompt', '')}", cmap="viridis")
    fig.colorbar(im, ax=ax)
    written.append(_save(fig, folder / "mel.png", plt))

    n = len(tokens) + 1
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    panels = [(f"all tokens, {pooling}-pooled", arrays["pooled"].astype(np.float64))]
    panels += [(f"token {t!r}", agg[i]) for i, t in enumerate(tokens)]
    for ax, (title, grid) in zip(axes.flat, panels, strict=False):
        tf_image(ax, grid, hz, duration, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("aggregated cross-attention (layers × steps)")
    written.append(_save(fig, folder / "aggregate.png", plt))

    site_maps = arrays["site_maps"].astype(np.float64)
    sites = [str(s) for s in arrays["sites"]]
    cols = min(4, len(sites))
    rows = math.ceil(len(sites) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax, site, maps in zip(axes.flat, sites, site_maps, strict=False):
        tf_image(ax, pooled(maps, tokens, pooling), hz, duration, site_label(site))
    for ax in list(axes.flat)[len(sites):]:
        ax.axis("off")
    fig.suptitle("per-layer cross-attention (pooled over tokens, mean over steps)")
    written.append(_save(fig, folder / "layers.png", plt))

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, t in enumerate(tokens):
        if t in SPECIAL_TOKENS:
            continue
        profile = agg[i].mean(axis=0)
        span = profile.max() - profile.min()
        ax.plot(hz, (profile - profile.min()) / span if span > 0 else profile * 0, label=t)
    ax.set_xscale("log")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("attention (min–max normalised)")
    ax.set_title("frequency profile of each token")
    ax.legend(fontsize=7, ncol=2)
    written.append(_save(fig, folder / "profiles.png", plt))
    return written



def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
