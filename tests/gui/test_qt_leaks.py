"""The Qt leak checks (tests/gui/qt_leaks.py) and the Qt-warning policy of pyproject.toml, proved on
small inner test files run by a separate pytest: leaky tests must fail there, clean ones pass."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

INNER_CONFTEST = "from tests.gui.qt_leaks import pytest_runtest_teardown, qt_leak_check, qt_module_leak_check\n"

INNER_TESTS = '''
import pytest
from PySide6.QtCore import QObject, QThread, QTimer, qWarning

KEEP = []


def test_thread_left_running(qapp):
    th = QThread()
    th.setObjectName("stray-thread")
    th.start()
    KEEP.append(th)


def test_thread_joined(qapp):
    th = QThread()
    th.start()
    th.quit()
    assert th.wait(5000)


def test_timer_left_active(qapp):
    owner = QObject()
    owner.setObjectName("owner")
    timer = QTimer(owner)
    timer.start(60_000)
    KEEP.append(owner)


def test_timer_stopped(qapp):
    timer = QTimer()
    timer.start(60_000)
    timer.stop()
    KEEP.append(timer)


def test_timer_deleted_with_its_owner(qapp):
    owner = QObject()
    QTimer(owner).start(60_000)
    del owner


@pytest.fixture(scope="module")
def debounce(qapp):
    timer = QTimer()
    timer.setObjectName("debounce")
    timer.setSingleShot(True)
    yield timer
    timer.stop()


def test_starts_a_shared_debounce_and_leaves(debounce):
    debounce.start(60_000)


def test_starts_a_shared_debounce_and_waits_for_it(debounce, qtbot):
    with qtbot.waitSignal(debounce.timeout, timeout=5000):
        debounce.start(50)


def test_starts_a_shared_debounce_due_now(debounce):
    debounce.start(0)


def test_single_shot_pending(qapp):
    QTimer.singleShot(60_000, lambda: None)


def test_single_shot_due_now_fires(qapp):
    fired = []
    QTimer.singleShot(0, lambda: fired.append(1))
    KEEP.append(fired)


def test_single_shot_of_a_deleted_context(qapp):
    ctx = QObject()
    QTimer.singleShot(60_000, ctx, lambda: None)
    del ctx


@pytest.fixture(scope="module")
def shared_thread(qapp):
    th = QThread()
    th.start()
    yield th
    th.quit()
    th.wait(5000)


def test_module_fixture_thread_is_not_this_tests_leak(shared_thread):
    assert shared_thread.isRunning()


def test_qt_warning_fails(qapp):
    qWarning("something went wrong in Qt")


def test_ignored_qt_warning_passes(qapp):
    qWarning("This plugin does not support propagateSizeHints()")


@pytest.fixture
def warns_at_teardown(qapp):
    yield
    qWarning("trouble while shutting down")


@pytest.fixture
def warns_ignored_at_teardown(qapp):
    yield
    qWarning("This plugin does not support propagateSizeHints()")


def test_qt_warning_in_teardown_fails(warns_at_teardown):
    pass


def test_ignored_qt_warning_in_teardown_passes(warns_ignored_at_teardown):
    pass
'''

INNER_MODULE_LEAK = '''
import pytest
from PySide6.QtCore import QThread

KEEP = []


@pytest.fixture(scope="module")
def never_joined(qapp):
    th = QThread()
    th.setObjectName("module-stray")
    th.start()
    KEEP.append(th)
    yield th


def test_uses_it(never_joined):
    assert never_joined.isRunning()
'''


def _outcomes(xml_path: Path) -> dict[str, tuple[str, str]]:
    """``name -> (outcome, message)``; a teardown error counts as the test's failure."""
    out = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        bad = [c for c in case if c.tag in ("failure", "error")]
        text = "\n".join((c.get("message") or "") + "\n" + (c.text or "") for c in bad)
        out[case.get("name")] = ("failed" if bad else "passed", text)
    return out


@pytest.fixture(scope="module")
def inner(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Run the inner files once under the project's own pytest configuration."""
    folder = tmp_path_factory.mktemp("inner")
    (folder / "conftest.py").write_text(INNER_CONFTEST)
    (folder / "test_inner.py").write_text(INNER_TESTS)
    (folder / "test_inner_module.py").write_text(INNER_MODULE_LEAK)
    report = folder / "report.xml"
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(folder),
         f"--junitxml={report}", "-q", "-p", "no:randomly", str(folder)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return _outcomes(report)


@pytest.mark.parametrize("name, needle", [
    ("test_thread_left_running", "QThread still running: QThread 'stray-thread'"),
    ("test_timer_left_active", "QTimer still active: QTimer < QObject 'owner' (interval 60000 ms)"),
    ("test_single_shot_pending", "QTimer.singleShot still pending"),
    ("test_starts_a_shared_debounce_and_leaves", "single-shot QTimer started by this test still pending: "
                                                 "QTimer 'debounce'"),
    ("test_uses_it", "module test_inner_module leaked"),
])
def test_leaks_fail_the_test_and_say_what_and_where(inner, name, needle):
    outcome, message = inner[name]
    assert outcome == "failed", f"{name} leaked but passed"
    assert needle in message, message
    assert "test_inner" in message  # where it was started or created


@pytest.mark.parametrize("name", [
    "test_thread_joined", "test_timer_stopped", "test_timer_deleted_with_its_owner",
    "test_single_shot_due_now_fires", "test_single_shot_of_a_deleted_context",
    "test_module_fixture_thread_is_not_this_tests_leak", "test_starts_a_shared_debounce_and_waits_for_it",
    "test_starts_a_shared_debounce_due_now",
])
def test_clean_tests_pass(inner, name):
    assert inner[name] == ("passed", ""), inner[name][1]


def test_qt_warnings_fail_unless_on_the_ignore_list(inner):
    outcome, message = inner["test_qt_warning_fails"]
    assert outcome == "failed" and "something went wrong in Qt" in message
    assert inner["test_ignored_qt_warning_passes"] == ("passed", "")
    outcome, message = inner["test_qt_warning_in_teardown_fails"]
    assert outcome == "failed" and "QtWarningMsg: trouble while shutting down" in message
    assert inner["test_ignored_qt_warning_in_teardown_passes"] == ("passed", "")
