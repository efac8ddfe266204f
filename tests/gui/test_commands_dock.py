"""The Commands panel: every command of the engine's registry, run from the window as a job, with
the command line's parsing and validation."""

from __future__ import annotations

import os

import yaml

from engine.commands import REGISTRY, parser_for
from tests.gui.conftest import TEST_MODEL

REAL_HOME = os.environ.get("HOME", os.path.expanduser("~"))  # before any fixture isolates it


def test_the_panel_offers_every_registered_command_with_its_options(make_window, isolated_settings):
    window = make_window(model=TEST_MODEL)
    dock = window.commands
    names = [dock.command.itemText(i) for i in range(dock.command.count())]
    assert names == sorted(REGISTRY)
    for name in ("analyze", "eval", "render-dataset"):
        dock.command.setCurrentText(name)
        flags = {a.option_strings[-1] for a in parser_for(name)._actions if a.option_strings}
        assert set(dock.fields) == flags
    dock.command.setCurrentText("analyze")  # defaults in the form parse to the command's defaults
    dock.set_value("--prompt", "bass and drums")
    dock.set_value("--out", "x")
    parsed = parser_for("analyze").parse_args(dock.argv())
    assert parsed == parser_for("analyze").parse_args(["--prompt", "bass and drums", "--out", "x"])


def test_bad_values_are_refused_like_on_the_command_line(make_window, isolated_settings, tmp_path):
    window = make_window(model=TEST_MODEL)
    dock = window.commands
    dock.command.setCurrentText("render-dataset")
    dock.set_value("--out", str(tmp_path / "data"))
    dock.set_value("--tracks", "nan")
    assert dock.run() is None
    assert "--tracks" in dock.job.message.text() and not window.bridge.busy
    dock.set_value("--tracks", "0")
    assert dock.run() is None and "--tracks must be between 1" in dock.job.message.text()
    assert list(tmp_path.iterdir()) == []


def test_render_dataset_runs_from_the_panel_and_reports_what_it_wrote(make_window, isolated_settings, qtbot,
                                                                       tmp_path):
    window = make_window(model=TEST_MODEL)
    dock = window.commands
    dock.command.setCurrentText("render-dataset")
    out = tmp_path / "data"
    for flag, value in (("--tracks", "1"), ("--out", str(out)), ("--duration", "2"), ("--source", "patterns")):
        dock.set_value(flag, value)
    with qtbot.waitSignal(dock.wrote, timeout=120_000) as done:
        assert dock.run() is not None
    assert done.args[0].startswith(f"render-dataset: wrote {out}")
    meta = yaml.safe_load(next(out.glob("Track*/metadata.yaml")).read_text())
    assert meta["stems"] and not window.bridge.busy


def test_a_command_runs_on_ray_from_the_panel_and_writes_what_the_command_line_writes(
        make_window, isolated_settings, qtbot, tmp_path, monkeypatch):
    """``--ray local`` from the panel: Ray is started from the engine thread (not the main thread),
    the items go through a worker, and the file equals the in-process command line's."""
    import numpy as np

    import main

    # Ray keeps per-user state (its auth token) under $HOME, read again by each new local instance:
    # after another test module's instance, a HOME changed mid-process (the isolated settings) makes
    # the next instance's GCS time out. A user's HOME does not change under a running app.
    monkeypatch.setenv("HOME", REAL_HOME)

    caa = {"--concept": "drums", "--positive": "drums and bass", "--negative": "piano and bass",
           "--layers": "0,1", "--seeds": "0", "--model": "tiny:stable_audio", "--steps": "2", "--duration": "0.2"}
    local = tmp_path / "local.npz"
    assert main.main(["caa", *[x for kv in caa.items() for x in kv], "--out", str(local)]) == 0
    window = make_window(model=TEST_MODEL)
    dock = window.commands
    dock.command.setCurrentText("caa")
    remote = tmp_path / "ray.npz"
    for flag, value in {**caa, "--ray": "local", "--workers": "1", "--out": str(remote)}.items():
        dock.set_value(flag, value)
    ended: list[str] = []
    dock.wrote.connect(ended.append)
    dock.job.failed.connect(lambda message: ended.append(f"failed: {message}"))
    assert dock.run() is not None
    qtbot.waitUntil(lambda: bool(ended), timeout=240_000)
    assert ended[0].startswith(f"caa: wrote {remote}"), ended
    a, b = np.load(local), np.load(remote)
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    import ray

    assert not ray.is_initialized()  # started for the command, shut down after it
