"""Heads: one toggle per head per site with its relevance score; presets all / top-k / none; the
toggles can also ablate the unticked heads in the next generation ("apply to generation")."""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QDockWidget,
    QPushButton,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.site_labels import site_labels
from engine.types import EngineError
from gui.analysis_adapter import LiveHeadRelevance, top_heads
from gui.flow_layout import FlowLayout, WrapLabel
from gui.work_queue import SlicedQueue
from gui.workspace import Workspace

NO_SCORES = "no relevance scores yet: they appear as the run records attention frames"
HEAD_MEAN = "frames are head-mean: tick “record every head” in Run to toggle heads"
SCORES = "relevance: label-free log-ratio of attention on the chosen tokens vs the others"


class HeadsDock(QDockWidget):
    """Toggles write the workspace's head masks; the aggregated map follows at once."""

    def __init__(self, workspace: Workspace, parent=None) -> None:
        super().__init__("Heads", parent)
        self.setObjectName("dock_heads")
        self.ws = workspace
        self._filling = False
        self.scores: dict[str, np.ndarray] = {}
        body = QWidget()
        lay = QVBoxLayout(body)
        preset_box = QWidget()
        presets = FlowLayout(preset_box)  # wraps in a narrow dock
        self.all_button = QPushButton("All")
        self.none_button = QPushButton("None")
        self.topk_button = QPushButton("Top-k")
        self.k = QSpinBox(minimum=1, maximum=64, value=2)
        for w in (self.all_button, self.none_button, self.topk_button, self.k):
            presets.addWidget(w)
        lay.addWidget(preset_box)
        self.apply_box = QCheckBox("apply to generation")
        self.apply_box.setToolTip("the next Generate ablates the unticked heads (cross-attention output)")
        lay.addWidget(self.apply_box)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["site / head", "relevance"])
        self.tree.setColumnWidth(0, 170)  # short site labels: the relevance column stays in view
        lay.addWidget(self.tree, 1)
        self.note = WrapLabel("", 3)
        lay.addWidget(self.note)
        self.setWidget(body)
        self.all_button.clicked.connect(lambda: self.preset("all"))
        self.none_button.clicked.connect(lambda: self.preset("none"))
        self.topk_button.clicked.connect(lambda: self.preset("topk"))
        self.tree.itemChanged.connect(self._on_item)
        workspace.currentChanged.connect(self.rebuild)
        workspace.runUpdated.connect(self.rebuild)
        workspace.headMasksChanged.connect(self._sync_checks)
        workspace.selectionChanged.connect(self._on_selection)
        self._scored_for: tuple = ()
        self._live = LiveHeadRelevance()  # each frame read once, as it arrives: the end only averages
        self._reading = SlicedQueue(self._read_frame, parent=self)  # a burst of frames read in slices
        workspace.framesAdded.connect(self._on_frames)

    @Slot()
    def rebuild(self) -> None:
        """Refill the tree from the current run (scores use every recorded step)."""
        run = self.ws.current
        self._scored_for = self._score_key()
        self._filling = True
        try:
            self.tree.clear()
            self.scores = {}
            if run is None:
                self.note.setText(NO_SCORES)
                return
            sel = self.ws.selection
            n_tokens = len(run.tokens_for(sel.site)) if sel.site else 0
            context = run.context_of(sel.site) if sel.site else None
            frames = {k: v for k, v in run.frames.items() if run.context_of(k[1]) == context}
            self.scores = self._live.scores((run.run_id, context), frames, n_tokens, sel.tokens)
            head_mean = not self.scores and bool(run.frames) and run.result is not None
            labels = site_labels(run.site_names)
            for name in run.site_names:
                score = self.scores.get(name)
                if score is None:
                    continue
                top = QTreeWidgetItem([labels[name], f"{len(score)} heads"])
                top.setToolTip(0, name)
                top.setData(0, Qt.ItemDataRole.UserRole, (name, None))
                self.tree.addTopLevelItem(top)
                mask = self.ws.head_masks.get(name, [True] * len(score))
                for h, s in enumerate(score):
                    child = QTreeWidgetItem([f"head {h}", f"{s:.4f}"])
                    child.setData(0, Qt.ItemDataRole.UserRole, (name, h))
                    child.setFlags(child.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                    child.setCheckState(0, Qt.CheckState.Checked if mask[h] else Qt.CheckState.Unchecked)
                    top.addChild(child)
                top.setExpanded(True)
            self.note.setText(self._hint(run, head_mean))
        finally:
            self._filling = False

    def _hint(self, run, head_mean: bool) -> str:
        """The note under the tree, matching what it shows (scores or not, live or final)."""
        if self.scores:
            return SCORES if run.result is not None else SCORES + " (live: from the steps recorded so far)"
        return HEAD_MEAN if head_mean else NO_SCORES

    def _score_key(self) -> tuple:
        run, sel = self.ws.current, self.ws.selection
        if run is None or sel.site is None:
            return ()
        return (run.run_id, run.status, run.context_of(sel.site), sel.tokens)

    @Slot(object)
    def _on_frames(self, keys) -> None:
        """Read the new frames of the shown context now (cheap per step), not all of them at the end."""
        run, sel = self.ws.current, self.ws.selection
        if run is None or sel.site is None:
            return
        context = run.context_of(sel.site)
        n_tokens = len(run.tokens_for(sel.site))
        self._reading.add([(run, context, k, n_tokens, sel.tokens) for k in keys
                           if k in run.frames and run.context_of(k[1]) == context])

    def _read_frame(self, item) -> None:
        run, context, key, n_tokens, tokens = item
        if run is self.ws.current and key in run.frames:
            self._live.add((run.run_id, context), {key: run.frames[key]}, n_tokens, tokens)

    @Slot()
    def _on_selection(self) -> None:
        """Scores depend on the chosen tokens and the site's context: rescore when they change."""
        if self._score_key() != self._scored_for:
            self.rebuild()

    def request_fields(self) -> dict[str, Any]:
        """Run-panel provider: ``{"head_mask": ...}`` from the workspace's masks when "apply to
        generation" is on (nothing when it is off or no head is toggled); EngineError when the
        masks keep no head at all."""
        masks = {site: tuple(bool(b) for b in flags) for site, flags in self.ws.head_masks.items() if flags}
        if not self.apply_box.isChecked() or not masks:
            return {}
        if not any(any(flags) for flags in masks.values()):
            raise EngineError("Heads: every head is off: tick at least one head, or untick “apply to generation”")
        return {"head_mask": masks}

    def preset(self, which: str) -> None:
        masks = {}
        for name, score in self.scores.items():
            masks[name] = [which == "all"] * len(score)
        if which == "topk" and self.scores:
            masks = top_heads(self.scores, self.k.value())
        self.ws.set_head_masks(masks)

    def set_head(self, site: str, head: int, on: bool) -> None:
        score = self.scores.get(site)
        n = len(score) if score is not None else 0
        mask = list(self.ws.head_masks.get(site, [True] * n))
        mask[head] = on
        self.ws.set_head_mask(site, mask)

    @Slot(QTreeWidgetItem, int)
    def _on_item(self, item: QTreeWidgetItem, column: int) -> None:
        if self._filling or column != 0:
            return
        name, head = item.data(0, Qt.ItemDataRole.UserRole)
        if head is not None:
            self.set_head(name, head, item.checkState(0) == Qt.CheckState.Checked)

    @Slot()
    def _sync_checks(self) -> None:
        self._filling = True
        try:
            for i in range(self.tree.topLevelItemCount()):
                top = self.tree.topLevelItem(i)
                name, _ = top.data(0, Qt.ItemDataRole.UserRole)
                mask = self.ws.head_masks.get(name)
                for j in range(top.childCount()):
                    on = True if mask is None else mask[j]
                    top.child(j).setCheckState(0, Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
        finally:
            self._filling = False
