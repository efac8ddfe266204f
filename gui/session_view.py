"""A session's saved view, checked before the window changes, and where its floating docks go."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtWidgets import QApplication, QDockWidget, QWidget

from engine.types import EngineError
from gui.workspace import Selection


def session_view(view: Any, name: str) -> tuple[Selection | None, dict[str, Any], dict[str, float]]:
    """A session's saved view state, checked and normalised before the window changes: the
    selection, the heatmap state and the time window/cursor (s), or EngineError naming what is
    damaged."""
    try:
        if not isinstance(view, dict):
            raise TypeError(f"the view is {type(view).__name__}, not a mapping")
        sel = view.get("selection")
        selection = Selection.from_dict(sel) if sel else None
        if selection is not None and (selection.mode not in ("site", "aggregate") or selection.step < 0
                                      or (selection.head is not None and int(selection.head) < 0)):
            raise ValueError(f"selection {sel!r} is out of range")
        heatmap = dict(view.get("heatmap") or {})
        for key in ("cmap", "levels_mode"):
            if key in heatmap:
                heatmap[key] = str(heatmap[key])
        if "percentile" in heatmap:
            heatmap["percentile"] = float(heatmap["percentile"])
        if "manual_levels" in heatmap:
            lo, hi = heatmap["manual_levels"]
            heatmap["manual_levels"] = [float(lo), float(hi)]
        numbers = [heatmap.get("percentile", 0.0), *heatmap.get("manual_levels", ())]
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError("the heatmap levels are not finite numbers")
        time = {k: float(v) for k, v in dict(view.get("time") or {}).items() if k in ("start", "end", "cursor")}
        if not all(math.isfinite(x) and x >= 0 for x in time.values()):
            raise ValueError("the time window is not made of finite, non-negative seconds")
    except (TypeError, ValueError, AttributeError) as exc:
        raise EngineError(f"{name}: the saved view is damaged ({exc}): save the session again") from exc
    return selection, heatmap, time


def keep_floating_docks_on_screen(window: QWidget, docks: list[QDockWidget]) -> None:
    """Move (and shrink) floating ``docks`` that lie outside ``window``'s screen onto it (a layout
    saved with a second monitor, or on a larger screen)."""
    screen = window.screen() or QApplication.primaryScreen()
    if screen is None:
        return
    area = screen.availableGeometry()
    for dock in docks:
        if dock.isFloating() and not area.contains(dock.frameGeometry()):
            g = dock.frameGeometry()
            w, h = min(g.width(), area.width()), min(g.height(), area.height())
            x = min(max(g.x(), area.x()), area.right() - w + 1)
            y = min(max(g.y(), area.y()), area.bottom() - h + 1)
            dock.resize(w - (g.width() - dock.width()), h - (g.height() - dock.height()))  # frame kept
            dock.move(x, y)  # a top-level widget moves by its frame
