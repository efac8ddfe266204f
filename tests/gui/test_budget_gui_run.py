"""A GUI run's memory budget counts what the GUI keeps: the frames, the overview's thumbnails and
the heatmap's aggregate accumulator (``gui.docks.run_dock.kept_maps`` on the request, planned by the engine's
``plan_capture`` like analyze and eval)."""

from __future__ import annotations

from engine.backends.registry import load_backend
from engine.probe.budget import plan_capture
from gui.analysis_adapter import selected_map
from gui.docks.overview_dock import OverviewDock
from gui.docks.run_dock import RunDock, kept_maps
from gui.workspace import RunData, Selection, Workspace

MODEL = "tiny:audioldm2"


def test_gui_run_estimate_is_what_the_views_hold(qtbot):
    dock = RunDock()
    qtbot.addWidget(dock)
    dock.model.setCurrentText(MODEL)
    dock.prompt.setPlainText("warm bass and soft piano")
    dock.steps.setText("4")
    dock.duration.setText("0.32")
    dock.per_head.setChecked(True)
    request = dock.build_request()
    assert request is not None and request.maps == kept_maps()
    backend = load_backend(MODEL)
    plan = plan_capture(backend, request)
    result = backend.generate(request)

    ws = Workspace()
    overview = OverviewDock(ws)
    qtbot.addWidget(overview)
    ws.add_run(RunData.from_result(result, MODEL, "cpu", request))
    run = ws.current
    frames = sum(a.nbytes for a in run.frames.values()) + sum(
        s.nbytes for s in result.aux.get("sink_mass", {}).values())
    thumbnails = overview.mosaic.nbytes + overview.item.image.nbytes  # the mosaic and the image's copy
    site = run.site_names[0]
    shown = selected_map(run, Selection(mode="aggregate", site=site, step=3, aggregator="topk"), {},
                         request.maps.grid)
    assert shown is not None and shown.shape == request.maps.grid
    accumulator = 3 * shown.size * 8  # the top-k aggregate's accumulator: 3 float64 maps on the grid
    held = frames + thumbnails + accumulator
    estimate = plan.estimate_bytes + plan.maps_bytes
    assert plan.estimate_bytes == frames
    assert abs(estimate - held) <= 0.05 * held
    assert thumbnails > 0.2 * held  # the thumbnails are a real share here, not a rounding error
    qtbot.wait(200)  # let the overview's single-shot refill (40 ms) run out before the leak check
