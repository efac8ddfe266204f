"""`python main.py figure`: every view in PNG, SVG and PDF from a real tiny run, and its bad inputs."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import main
from engine.publication import FigureSpec, hz_ticks, load_run, selected_map

VIEWS = ("heatmap", "layers", "overview", "profiles", "steps")
PROMPT = "bass and drums"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("figure") / "run"
    assert main.main(["analyze", "--model", "tiny:audioldm2", "--prompt", PROMPT, "--steps", "2",
                      "--duration", "0.2", "--no-figures", "--out", str(out)]) == 0
    return out


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_renders_to_png_svg_and_pdf(run_dir, tmp_path, view):
    for fmt in ("png", "svg", "pdf"):
        out = tmp_path / f"{view}.{fmt}"
        assert main.main(["figure", str(run_dir), "--view", view, "--out", str(out),
                          "--dpi", "50", "--size", "5x3.2"]) == 0
        if fmt == "png":
            assert _png_size(out) == (250, 160)
        elif fmt == "svg":
            root = ET.parse(out).getroot()
            assert root.tag.endswith("svg")
            text = " ".join(t for el in root.iter() if el.tag.endswith("text") for t in el.itertext())
            assert PROMPT in text and view in text and "attention" in text
            assert "frequency (Hz, mel scale)" in text
        else:
            assert out.read_bytes()[:5] == b"%PDF-" and out.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{view}.{f}" for f in ("pdf", "png", "svg"))


def test_selection_reads_the_saved_maps_and_the_raw_frames(run_dir):
    data = load_run(run_dir)
    with np.load(run_dir / "attention.npz") as z:
        agg, site_maps, step_maps = z["aggregate"], z["site_maps"], z["step_maps"]
    bass = next(i for i, t in enumerate(data.tokens) if t.endswith("bass"))
    np.testing.assert_allclose(selected_map(data, FigureSpec(token="bass")), agg[bass], rtol=1e-6)
    np.testing.assert_allclose(selected_map(data, FigureSpec(site="1", token="2")), site_maps[1, 2], rtol=1e-3)
    np.testing.assert_allclose(selected_map(data, FigureSpec(step=1, token="0")), step_maps[1, 0], rtol=1e-3)
    # the per-head path (raw frames) agrees with the stored per-site map, mean over steps
    head0 = selected_map(data, FigureSpec(site=data.sites[1], head=0, token="2"))
    np.testing.assert_allclose(head0, site_maps[1, 2], rtol=2e-2, atol=2e-3)
    one_step = selected_map(data, FigureSpec(site=data.sites[1], step=0, token="2"))
    assert not np.allclose(one_step, head0)  # one step is not the mean over steps


def test_hz_ticks_are_readable_values_in_mel_order(run_dir):
    data = load_run(run_dir)
    ticks = hz_ticks(data.hz, data.mel_scale)
    ys = [y for y, _ in ticks]
    assert len(ticks) >= 3 and ys == sorted(ys) and ys[0] >= 0 and ys[-1] <= len(data.hz)
    assert {"500", "1k", "2k"} <= {label for _, label in ticks}
    # 1 kHz sits where the bin centres' Hz cross 1000
    y1k = dict((label, y) for y, label in ticks)["1k"]
    below = int(np.searchsorted(data.hz, 1000.0))
    assert below - 0.5 <= y1k <= below + 0.5


@pytest.mark.parametrize(("args", "says"), [
    (["--site", "nowhere"], "unknown site 'nowhere'"),
    (["--step", "2"], "step 2 is out of range"),
    (["--token", "guitar"], "unknown token 'guitar'"),
    (["--size", "6by4"], "--size '6by4' is not WxH"),
    (["--size", "0x4"], "between 0.5 and 60"),
    (["--head", "0"], "--head needs --site"),
    (["--site", "0", "--head", "7"], "head 7 does not exist"),
    (["--dpi", "5"], "--dpi must be between 30 and 1200"),
])
def test_bad_selection_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys, args, says):
    assert main.main(["figure", str(run_dir), "--out", str(tmp_path / "f.png"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_bad_run_dir_and_out_are_one_line(run_dir, tmp_path, capsys):
    cases = [
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "f.png")], "does not exist"),
        ([str(tmp_path), "--out", str(tmp_path / "f.png")], "has no run.json"),
        ([str(run_dir), "--out", str(tmp_path / "f.jpg")], "choose a file ending in .png, .svg or .pdf"),
        ([str(run_dir), "--out", str(tmp_path / "no" / "f.png")], "does not exist"),
    ]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{}")
    (broken / "attention.npz").write_bytes(b"not a zip")
    cases.append(([str(broken), "--out", str(tmp_path / "f.png")], f"cannot read the run in {broken}"))
    for args, says in cases:
        assert main.main(["figure", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]
