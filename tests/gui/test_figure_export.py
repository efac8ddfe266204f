"""The GUI's figure export: the publication renderer draws exactly the map and selection shown."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from engine.analysis.melscale import grid_hz
from engine.publication import render_map, short_site
from engine.types import EngineError, GenerationRequest
from gui.export import figure_title
from tests.gui.conftest import TEST_MODEL

PROMPT = "bass and drums"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _svg_text(path) -> str:
    root = ET.parse(path).getroot()
    return " ".join(t for el in root.iter() if el.tag.endswith("text") for t in el.itertext())


def test_figure_export_renders_the_shown_selection(engine_window, qtbot, tmp_path):
    window, ws = engine_window, engine_window.workspace
    with pytest.raises(EngineError, match="no map is shown yet"):
        window.export_to(tmp_path / "early.pdf")

    request = GenerationRequest(prompt=PROMPT, steps=2, duration=0.2, seed=0, per_head=True)
    with qtbot.waitSignal(window.bridge.runFinished, timeout=180_000):
        assert window.generate(TEST_MODEL, "cpu", request) is not None
    run = ws.current
    site = run.site_names[1]
    heads = next(p for (s, n), p in run.frames.items() if n == site).shape[0]
    head = min(1, heads - 1)
    ws.select(mode="site", site=site, step=1, head=head, tokens=(1,), follow_live=False)
    shown = window.heatmap.image_array.copy()
    body = window.heatmap.widget()

    png = window.export_to(tmp_path / "map.png")
    assert _png_size(png.read_bytes()) == (body.width(), body.height())
    # byte for byte what the renderer draws from the shown array, title, colours and levels
    title = figure_title(run, ws.selection, ws.head_masks)
    direct = render_map(shown, grid_hz(run.mel_spec, shown.shape[1]), run.duration(), title, tmp_path / "direct.png",
                        size=((body.width() + 0.01) / 100, (body.height() + 0.01) / 100), dpi=100,
                        cmap=window.heatmap.cmap.currentText(), levels=window.heatmap.levels(),
                        mel_scale=run.mel_spec.mel_scale)
    assert png.read_bytes() == direct.read_bytes()

    svg = window.export_to(tmp_path / "map.svg")
    text = _svg_text(svg)
    for part in (PROMPT, f"site {short_site(site)}", "step 2/2", "token 'and'", f"head {head}", "attention",
                 "frequency (Hz, mel scale)", "time (s)"):
        assert part in text, (part, text)
    pdf = window.export_to(tmp_path / "map.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"

    ws.select(mode="aggregate", head=None, tokens=None)
    assert not np.array_equal(window.heatmap.image_array, shown)
    text = _svg_text(window.export_to(tmp_path / "agg.svg"))
    assert "aggregate of all sites" in text and "all tokens (max)" in text and "head mean" in text
