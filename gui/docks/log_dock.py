"""Log and history: messages with time stamps, and the runs held in memory (click to reopen)."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QDockWidget, QListWidget, QListWidgetItem, QPlainTextEdit, QSplitter

from gui.workspace import Workspace


class LogDock(QDockWidget):
    """A read-only log and the run history; activating a run makes it current."""

    reopenRequested = Signal(int)

    def __init__(self, workspace: Workspace, parent=None) -> None:
        super().__init__("Log / history", parent)
        self.setObjectName("dock_log")
        self.ws = workspace
        split = QSplitter(Qt.Orientation.Horizontal)
        self.history = QListWidget()
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(5000)
        split.addWidget(self.history)
        split.addWidget(self.text)
        split.setSizes([300, 500])
        self.setWidget(split)
        self.history.itemClicked.connect(self._on_item)
        self.history.itemActivated.connect(self._on_item)
        workspace.historyChanged.connect(self.refresh)
        workspace.currentChanged.connect(self.refresh)

    def log(self, message: str, level: str = "info") -> None:
        stamp = time.strftime("%H:%M:%S")
        self.text.appendPlainText(f"{stamp} {level.upper():5s} {message}")

    @Slot()
    def refresh(self) -> None:
        self.history.clear()
        for run in reversed(self.ws.history):
            item = QListWidgetItem(run.label())
            item.setData(Qt.ItemDataRole.UserRole, run.run_id)
            self.history.addItem(item)
            if run is self.ws.current:
                item.setSelected(True)

    @Slot(QListWidgetItem)
    def _on_item(self, item: QListWidgetItem) -> None:
        self.reopenRequested.emit(int(item.data(Qt.ItemDataRole.UserRole)))
