"""Preferences dialog: device, audio output, colormap, memory budget, autosave."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
)

from gui.docks.heatmap_dock import COLORMAPS
from gui.docks.run_dock import available_devices
from gui.settings import Preferences


class PreferencesDialog(QDialog):
    """Edits a copy of the preferences; ``preferences()`` returns the result after OK."""

    def __init__(self, prefs: Preferences, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        form = QFormLayout(self)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.device.setCurrentText(prefs.device)
        self.audio = QComboBox()
        self.audio.addItems(["auto", "sounddevice", "null"])
        self.audio.setCurrentText(prefs.audio_output)
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.colormap.setCurrentText(prefs.colormap)
        self.memory = QDoubleSpinBox(minimum=16.0, maximum=1_000_000.0, decimals=0, suffix=" MB")
        self.memory.setValue(prefs.memory_budget_mb)
        self.autosave = QDoubleSpinBox(minimum=0.0, maximum=1440.0, decimals=1, suffix=" min")
        self.autosave.setValue(prefs.autosave_minutes)
        form.addRow("device", self.device)
        form.addRow("audio output", self.audio)
        form.addRow("colormap", self.colormap)
        form.addRow("capture memory budget", self.memory)
        form.addRow("autosave every (0 = off)", self.autosave)
        self.session_layout = QCheckBox("opening a session applies its dock layout")
        self.session_layout.setChecked(prefs.session_layout)
        form.addRow("sessions", self.session_layout)
        form.addRow(QLabel("audio output changes apply to the next clip loaded"))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def preferences(self) -> Preferences:
        return Preferences(
            device=self.device.currentText(),
            audio_output=self.audio.currentText(),
            colormap=self.colormap.currentText(),
            memory_budget_mb=self.memory.value(),
            autosave_minutes=self.autosave.value(),
            session_layout=self.session_layout.isChecked(),
        )
