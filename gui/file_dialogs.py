"""Non-blocking file-open dialogs: the event loop (live views, the engine's signals) keeps running
while one is open, and a test drives the very dialog the user sees instead of a blocking
``QFileDialog.getOpenFileName``."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QWidget


def open_file_dialog(parent: QWidget, title: str, name_filter: str,
                     on_path: Callable[[str], None]) -> QFileDialog:
    """Show an "open one existing file" dialog, window-modal to ``parent``, and return at once;
    ``on_path(path)`` runs when the user accepts a file. The dialog deletes itself when closed."""
    dialog = QFileDialog(parent, title, "", name_filter)
    dialog.setObjectName("open_file_dialog")
    dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.fileSelected.connect(on_path)
    dialog.open()
    return dialog
