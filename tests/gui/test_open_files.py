"""Opening damaged files in the real window (tiny AudioLDM2 engine): a corrupt session or
steering-vector file gives one clear error message, changes nothing, and the window still
generates afterwards. Files go through the same paths as the user's: the (non-blocking) open
dialogs, the recent-files menu and the guarded open methods behind them."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QFileDialog

from engine.interventions.caa import SteeringVectors
from engine.session import Session, save_session
from engine.types import GenerationRequest
from gui.settings import add_recent
from tests.gui.conftest import TEST_MODEL

GOOD_REQUEST = GenerationRequest(prompt="guitar and piano", seed=7, steps=3, duration=0.25, guidance=2.5)
GOOD_VIEW = {"selection": {"mode": "site", "step": 1, "head": None},
             "heatmap": {"cmap": "magma", "levels_mode": "auto", "percentile": 97.0, "manual_levels": [0.0, 1.0]}}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _good_session(folder: Path) -> Path:
    return save_session(folder / "good.aiba", Session(TEST_MODEL, "cpu", GOOD_REQUEST, {}, GOOD_VIEW, None))


def _rewrite_json(src: Path, dst: Path, change: Callable[[dict], None]) -> Path:
    """Copy a session with its session.json changed by ``change(doc)``."""
    with zipfile.ZipFile(src) as zin:
        members = {n: zin.read(n) for n in zin.namelist()}
    doc = json.loads(members["session.json"])
    change(doc)
    members["session.json"] = json.dumps(doc).encode()
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in members.items():
            zout.writestr(name, data)
    return dst


def _bad_sessions(folder: Path) -> dict[str, Path]:
    good = _good_session(folder)
    raw = good.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("session.json", "{ not json")
    out = {"truncated": _write(folder / "truncated.aiba", raw[: len(raw) // 2]),
           "not a zip": _write(folder / "text.aiba", b"this is not a session file\n"),
           "not JSON": _write(folder / "notjson.aiba", buf.getvalue())}

    def set_in(*keys_value):
        *keys, value = keys_value

        def change(doc: dict) -> None:
            node = doc
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
        return change

    cases = {
        "steps many": set_in("request", "steps", "many"),
        "request not a mapping": set_in("request", "bass and drums"),
        "seed negative": set_in("request", "seed", -3),
        "head masks not lists": set_in("head_masks", {"down.0.attn2": 5}),
        "selection step not a number": set_in("view", "selection", "step", "abc"),
        "heatmap levels not numbers": set_in("view", "heatmap", "manual_levels", "low-high"),
        "newer schema": set_in("schema_version", 99),
    }
    for i, (name, change) in enumerate(cases.items()):
        out[name] = _rewrite_json(good, folder / f"bad{i}.aiba", change)
    out["missing"] = folder / "missing.aiba"
    return out


def _bad_vectors(folder: Path) -> dict[str, Path]:
    good = SteeringVectors({"down_blocks.1.attentions.0.transformer_blocks.0.attn2": np.ones(8, np.float32)},
                           TEST_MODEL, concept="drums")
    npz = good.save(folder / "good.npz")
    raw = npz.read_bytes()
    out = {"truncated npz": _write(folder / "truncated.npz", raw[: len(raw) // 2]),
           "not an npz": _write(folder / "text.npz", b"not numpy\n"),
           "garbage safetensors": _write(folder / "garbage.safetensors", b"\xff" * 64)}
    np.savez(out.setdefault("npz without metadata", folder / "nometa.npz"), v0=np.ones(8, np.float32))
    np.savez(out.setdefault("metadata not JSON", folder / "badmeta.npz"), __meta__=np.array("{ nope"),
             v0=np.ones(8, np.float32))
    np.savez(out.setdefault("sites not a list", folder / "badsites.npz"),
             __meta__=np.array(json.dumps({"model_id": "m", "sites": 3})), v0=np.ones(8, np.float32))
    out["missing"] = folder / "missing.npz"
    return out


def _errors(window) -> list[str]:
    return [line for line in window.log_dock.text.toPlainText().splitlines() if " ERROR " in line]


def _state(window) -> tuple:
    rd = window.run_dock
    return (rd.prompt.toPlainText(), rd.steps.text(), rd.seed.text(), len(window.workspace.history),
            window.session_path, window.workspace.selection, window.heatmap.cmap.currentText(),
            len(window.steering.rows))


def _assert_one_error(window, before_errors: list[str], name: str) -> str:
    """Exactly one new error, shown in the log, the status bar and the non-modal box, naming the
    file, from the engine's EngineError (not an unexpected exception)."""
    new = _errors(window)[len(before_errors):]
    assert len(new) == 1, new
    status = window.status_label.text()
    assert status.startswith("error: could not ") and name in status, status
    assert "unexpected" not in status and "Traceback" not in status, status
    box = window._error_box
    assert box is not None and box.isVisible() and not box.isModal() and box.text() in status
    return status


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("files")
    return {"sessions": _bad_sessions(folder), "vectors": _bad_vectors(folder),
            "good": {"session": _good_session(folder)}}


@pytest.mark.parametrize("case", [
    "truncated", "not a zip", "not JSON", "steps many", "request not a mapping", "seed negative",
    "head masks not lists", "selection step not a number", "heatmap levels not numbers", "newer schema",
    "missing",
])
def test_a_damaged_session_is_one_error_and_changes_nothing(engine_window, files, case):
    window = engine_window
    path = files["sessions"][case]
    before, errors = _state(window), _errors(window)
    assert window._open_guarded(str(path)) is None
    _assert_one_error(window, errors, path.name)
    assert _state(window) == before


def test_the_open_dialog_and_recent_menu_report_a_damaged_session(engine_window, files, qtbot):
    window = engine_window
    path = files["sessions"]["steps many"]
    before, errors = _state(window), _errors(window)
    dialog = window.open_session_dialog()  # returns at once: the dialog is not modal to the test
    assert isinstance(dialog, QFileDialog) and dialog.isVisible()
    dialog.selectFile(str(path))
    dialog.accept()
    _assert_one_error(window, errors, path.name)
    qtbot.waitUntil(lambda: not window.findChildren(QFileDialog))  # it deleted itself
    errors = _errors(window)
    add_recent(str(path))
    window._fill_recent()
    action = next(a for a in window.recent_menu.actions() if a.data() == str(path))
    action.trigger()
    _assert_one_error(window, errors, path.name)
    assert _state(window) == before


@pytest.mark.parametrize("case", [
    "truncated npz", "not an npz", "npz without metadata", "metadata not JSON", "sites not a list",
    "garbage safetensors", "missing",
])
def test_a_damaged_steering_vector_file_is_one_error_and_adds_nothing(engine_window, files, case):
    window = engine_window
    path = files["vectors"][case]
    before, errors = _state(window), _errors(window)
    assert window.steering.load_guarded(str(path)) is None
    status = _assert_one_error(window, errors, path.name)
    assert window.steering.job.message.text() in status
    assert _state(window) == before


def test_the_load_vectors_dialog_reports_a_damaged_file(engine_window, files, qtbot):
    window = engine_window
    path = files["vectors"]["truncated npz"]
    before, errors = _state(window), _errors(window)
    dialog = window.steering.load_dialog()
    assert isinstance(dialog, QFileDialog) and dialog.isVisible()
    dialog.selectFile(str(path))
    dialog.accept()
    _assert_one_error(window, errors, path.name)
    qtbot.waitUntil(lambda: not window.steering.findChildren(QFileDialog))
    assert _state(window) == before


def test_after_damaged_files_the_window_opens_a_good_session_and_generates(engine_window, files, qtbot):
    window = engine_window
    window._open_guarded(str(files["sessions"]["truncated"]))
    window.steering.load_guarded(str(files["vectors"]["not an npz"]))
    errors = _errors(window)
    good = files["good"]["session"]
    session = window._open_guarded(str(good))
    assert session is not None and session.request == GOOD_REQUEST
    rd = window.run_dock
    assert (rd.prompt.toPlainText(), rd.steps.text(), rd.seed.text()) == ("guitar and piano", "3", "7")
    assert window.heatmap.cmap.currentText() == "magma" and window.session_path == good
    request = GenerationRequest(prompt="bass and drums", steps=2, duration=0.25, seed=0)
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000) as blocker:
        assert window.generate(TEST_MODEL, "cpu", request) is not None
    result = blocker.args[0]
    assert len(result.audio) > 0 and np.isfinite(result.audio).all()
    assert window.workspace.current.status == "done"
    assert _errors(window) == errors  # nothing went wrong after the good open
