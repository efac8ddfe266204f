"""PNG figures of the evaluation (matplotlib, Agg), after AIBA's Figures 2 and 3.

* Figure 2: per class, the mean attention frequency profile (solid) against the stem's data-driven
  profile (dashed) and a knowledge-driven template (shaded: ``region`` by default), log-Hz axis.
* Figure 3: for a few items, the generated clip's mel, the mel with the attention overlaid, and
  the attention heatmap (time × Hz, low frequencies at the bottom).
* Ordered-weakening curves of the head-selection experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.analysis.metrics import normalise_map
from engine.figures import _pyplot, tf_image


def _minmax(x: np.ndarray) -> np.ndarray:
    """Min–max scaled for display (shapes, not levels, are compared; a flat profile stays 0)."""
    return normalise_map(np.asarray(x, dtype=float))


def figure2(items: Sequence[dict[str, Any]], hz: np.ndarray, path: Path,
            classes: Sequence[str] | None = None, template: str = "region") -> Path:
    """Attention profile vs ground-truth profiles per class (one row each), min–max scaled.

    ``template``: the knowledge-driven ground truth shaded (``region``, ``fundamental``, ``band``).
    """
    plt = _pyplot()
    classes = list(classes or dict.fromkeys(it["class"] for it in items))
    fig, axes = plt.subplots(len(classes), 1, figsize=(6.5, 1.7 * len(classes) + 0.6),
                             sharex=True, squeeze=False)
    for ax, c in zip(axes[:, 0], classes, strict=True):
        chosen = [it for it in items if it["class"] == c]
        if not chosen:
            ax.set_title(f"{c}: no items", fontsize=9)
            continue
        att = np.mean([it["profiles"]["attention"] for it in chosen], axis=0)
        stem = np.mean([it["profiles"]["stem"] for it in chosen], axis=0)
        band = np.asarray(chosen[0]["profiles"][template], dtype=float)
        ax.fill_between(hz, 0, band, step="mid", color="0.88", label=f"{template} template")
        ax.plot(hz, _minmax(att), "-", color="C0", lw=1.6, label="attention")
        ax.plot(hz, _minmax(stem), "--", color="C3", lw=1.3, label="stem profile")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("min–max")
        ax.set_title(f"{c} ({len(chosen)} items)", fontsize=9)
    axes[-1, 0].set_xlabel("frequency (Hz)")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure3(examples: Sequence[Mapping[str, Any]], hz: np.ndarray, duration: float,
            path: Path) -> Path:
    """Rows of (generated mel, mel + attention overlay, attention heatmap).

    Each example holds ``title``, ``mel_db`` ``(T, F)`` and ``map`` ``(T, F)``.
    """
    plt = _pyplot()
    n = max(1, len(examples))
    fig, axes = plt.subplots(n, 3, figsize=(11, 2.6 * n), squeeze=False)
    for row, ex in zip(axes, examples, strict=False):
        mel = normalise_map(ex["mel_db"])
        att = normalise_map(ex["map"])
        tf_image(row[0], mel, hz, duration, f"{ex['title']}: mel (normalised)", cmap="magma")
        tf_image(row[1], mel, hz, duration, "mel + attention", cmap="gray")
        row[1].imshow(att.T, origin="lower", aspect="auto", cmap="jet", alpha=0.45,
                      extent=(0.0, duration, -0.5, att.shape[1] - 0.5), interpolation="nearest")
        tf_image(row[2], att, hz, duration, "attention", cmap="viridis")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def weakening_figure(curves: Mapping[str, np.ndarray], path: Path, metric: str) -> Path:
    """Score against heads removed, one line per ordering (e.g. label-free, oracle, reverse)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, ys in curves.items():
        ax.plot(np.arange(len(ys)), ys, label=name)
    ax.set_xlabel("heads removed (most relevant first)")
    ax.set_ylabel(metric)
    ax.set_title("Ordered weakening", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
