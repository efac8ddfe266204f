"""The GUI's GC policy: after a model loads, a full collection no longer walks the whole heap."""

from __future__ import annotations

import gc
import weakref

from gui.engine_thread import settle_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settle_heap_freezes_the_heap_and_frees_old_cycles_when_asked():
    try:
        doomed = _Node()
        ref = weakref.ref(doomed)
        del doomed
        frozen = settle_heap(collect=True)
        assert ref() is None  # the cycle was collected before freezing
        assert frozen == gc.get_freeze_count() > 0
        # a full collection now walks only what was created since, not the frozen heap
        assert len(gc.get_objects()) < frozen / 10
        kept = _Node()
        ref = weakref.ref(kept)
        del kept
        settle_heap(collect=False)
        gc.collect()
        assert ref() is not None  # frozen garbage is not collected: collect=False does not free it
    finally:
        gc.unfreeze()
        gc.collect()
    assert gc.get_freeze_count() == 0


def test_loading_a_model_settles_the_heap_and_shutdown_releases_it(qapp, qtbot, isolated_settings):
    from gui.audio_output import NullOutput
    from gui.main_window import MainWindow
    from tests.gui.conftest import TEST_MODEL, dispose

    gc.unfreeze()
    window = MainWindow(model=TEST_MODEL, output=NullOutput())
    try:
        with qtbot.waitSignal(window.bridge.modelLoaded, timeout=120_000):
            window.bridge.load(TEST_MODEL, "cpu")
        # the window, the libraries and the model are frozen: a full collection walks few objects
        assert gc.get_freeze_count() > 10 * len(gc.get_objects())
    finally:
        dispose(qapp, window)
    assert gc.get_freeze_count() == 0
