"""Commands panel: every headless command of the engine's registry (``eval``, ``render-dataset``,
``head-select``, ``patch`` …) as a form built from its options, run as a job in the engine thread.

The form is made from the same argparse options as ``python main.py <command>``; the values are
parsed and validated by the same code (:func:`engine.commands.parser_for`, ``Command.build``), so
the panel and the command line accept and refuse exactly the same input.
"""

from __future__ import annotations

import argparse

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from engine.commands import REGISTRY, parser_for
from engine.types import EngineError
from gui.docks.job_controls import JobControls

LIST_SEPARATOR = "|"  # between the values of a repeatable option (e.g. caa --positive)


def _flag(action: argparse.Action) -> str:
    return action.option_strings[-1]


def _field_for(action: argparse.Action) -> QWidget:
    """The input widget of one option: a check box, a choice list or a text field."""
    tip = (action.help or "") + (" (required)" if action.required else "")
    if action.nargs == 0:
        box = QCheckBox()
        box.setChecked(bool(action.default))
        widget: QWidget = box
    elif action.choices:
        combo = QComboBox()
        combo.addItems([str(c) for c in action.choices])
        if action.default is not None:
            combo.setCurrentText(str(action.default))
        widget = combo
    else:
        line = QLineEdit()
        if isinstance(action, argparse._AppendAction):
            line.setPlaceholderText(f"values separated by {LIST_SEPARATOR}")
        elif action.default not in (None, argparse.SUPPRESS):
            line.setText(str(action.default))
        elif action.help:
            line.setPlaceholderText(action.help[:60])
        widget = line
    widget.setToolTip(tip)
    widget.setObjectName(f"field{_flag(action)}")
    return widget


class CommandsDock(QDockWidget):
    """Pick a command, fill its options, run it; ``wrote(str)`` reports what it wrote."""

    wrote = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__("Commands", parent)
        self.setObjectName("dock_commands")
        body = QWidget()
        outer = QVBoxLayout(body)
        self.command = QComboBox()
        self.command.setObjectName("command_choice")
        self.command.addItems(sorted(REGISTRY))
        outer.addWidget(self.command)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        outer.addWidget(self.summary)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        outer.addWidget(self.scroll, 1)
        self.job = JobControls("Run")
        outer.addWidget(self.job)
        self.setWidget(body)
        self.fields: dict[str, tuple[argparse.Action, QWidget]] = {}
        self.command.currentTextChanged.connect(self.show_command)
        self.job.run_button.clicked.connect(self.run)
        self.job.finished.connect(self._on_finished)
        self.show_command(self.command.currentText())

    @Slot(str)
    def show_command(self, name: str) -> None:
        """Build the form of ``name``'s options (required ones first)."""
        cmd = REGISTRY[name]
        self.summary.setText(f"{cmd.summary}. Writes {cmd.outputs}.")
        form_widget = QWidget()
        form = QFormLayout(form_widget)
        self.fields = {}
        actions = [a for a in parser_for(name)._actions if a.option_strings]
        for action in sorted(actions, key=lambda a: not a.required):
            field = _field_for(action)
            label = _flag(action).lstrip("-") + (" *" if action.required else "")
            form.addRow(label, field)
            self.fields[_flag(action)] = (action, field)
        self.scroll.setWidget(form_widget)

    def set_value(self, flag: str, value: str | bool) -> None:
        """Fill one field (scripts and tests)."""
        _, field = self.fields[flag]
        if isinstance(field, QCheckBox):
            field.setChecked(bool(value))
        elif isinstance(field, QComboBox):
            field.setCurrentText(str(value))
        else:
            field.setText(str(value))

    def argv(self) -> list[str]:
        """The command-line arguments the form describes."""
        args: list[str] = []
        for flag, (action, field) in self.fields.items():
            if isinstance(field, QCheckBox):
                if field.isChecked():
                    args.append(flag)
            elif isinstance(field, QComboBox):
                args += [flag, field.currentText()]
            else:
                text = field.text().strip()
                if not text:
                    continue
                if isinstance(action, argparse._AppendAction):
                    for part in (p.strip() for p in text.split(LIST_SEPARATOR)):
                        if part:
                            args += [flag, part]
                else:
                    args += [flag, text]
        return args

    @Slot()
    def run(self) -> int | None:
        """Parse and validate like the command line, then run the command as an engine job."""
        name = self.command.currentText()
        cmd = REGISTRY[name]
        try:
            options = cmd.build(parser_for(name).parse_args(self.argv()))
        except EngineError as exc:
            self.job.show_error(str(exc))
            return None

        def job(_backend, progress):
            return cmd.execute(options, progress)

        return self.job.start(name, None, "cpu", job)

    @Slot(object)
    def _on_finished(self, result: object) -> None:
        text = "\n".join(result) if isinstance(result, list) else f"wrote {result}"
        self.job.message.setText(text)
        self.wrote.emit(f"{self.command.currentText()}: {text}")
