"""Lattice reshape and resize: hand-placed queries, torch's bilinear/area, boundary modes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.analysis.mapping import area_matrix, bilinear_matrix, lattice_to_grid, resize
from engine.types import EngineError


def torch_resize(a: np.ndarray, shape, mode="bilinear") -> np.ndarray:
    t = torch.from_numpy(np.asarray(a, dtype=np.float64))[None, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=shape, mode=mode, **kw)[0, 0].numpy()


@pytest.mark.parametrize(
    "src,dst",
    [
        ((2, 4), (128, 64)),
        ((25, 4), (128, 64)),
        ((7, 5), (3, 11)),
        ((125, 8), (128, 64)),
        ((1, 3), (5, 1)),
        ((64, 64), (16, 8)),
    ],
)
def test_bilinear_nearest_equals_torch(src, dst):
    a = np.random.default_rng(1).random(src)
    np.testing.assert_allclose(resize(a, dst, boundary="nearest"), torch_resize(a, dst), atol=1e-12)


def test_zero_and_reflect_boundaries_by_hand():
    # 2 -> 4: samples at x = -0.25, 0.25, 0.75, 1.25
    expect = {
        "nearest": [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]],
        "zero": [[0.75, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 0.75]],
        "reflect": [[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75]],
    }
    for mode, m in expect.items():
        np.testing.assert_allclose(bilinear_matrix(2, 4, mode), m, atol=1e-15)
    # 32x upsampling of a constant: zero padding halves the outermost cells, nearest keeps 1
    z = bilinear_matrix(2, 64, "zero") @ np.ones(2)
    assert z[0] == pytest.approx(1 - 31 / 64) and z[31] == pytest.approx(1.0)
    np.testing.assert_allclose(bilinear_matrix(2, 64, "nearest") @ np.ones(2), 1.0)
    with pytest.raises(EngineError):
        bilinear_matrix(2, 4, "wrap")


def test_planted_query_lands_late_and_low():
    # a 2x4 lattice (T_l=2, F_l=4); one-hot at (t=1, f=0) is query q = 1*4 + 0 = 4
    p = np.zeros(8)
    p[4] = 1.0
    g = lattice_to_grid(p, (2, 4), target=(4, 8))
    t_w = np.array([0.0, 0.25, 0.75, 1.0])  # weight of source row 1 in rows 0..3
    f_w = np.array([1.0, 0.75, 0.25, 0, 0, 0, 0, 0])  # weight of source column 0 in columns 0..7
    np.testing.assert_allclose(g, np.outer(t_w, f_w), atol=1e-15)
    assert np.unravel_index(np.argmax(g), g.shape) == (3, 0)  # latest time, lowest frequency


def test_per_token_maps_and_time_only_lattice():
    rng = np.random.default_rng(2)
    a = rng.random((12, 3))  # Q = 12 on a 3x4 lattice, K = 3
    maps = lattice_to_grid(a, (3, 4), target=(6, 8))
    assert maps.shape == (3, 6, 8)
    for k in range(3):
        np.testing.assert_allclose(maps[k], torch_resize(a[:, k].reshape(3, 4), (6, 8)), atol=1e-12)
    # Stable-Audio-like: one global query first, then 5 time frames
    q = rng.random(6)
    col = lattice_to_grid(q, (5, 1), target=(10, 4), query_offset=1, time_only="column")
    assert col.shape == (10, 1)
    np.testing.assert_allclose(col[:, 0], torch_resize(q[1:, None], (10, 1))[:, 0], atol=1e-12)
    wide = lattice_to_grid(q, (5, 1), target=(10, 4), query_offset=1)
    np.testing.assert_allclose(wide, np.repeat(col, 4, axis=1))
    with pytest.raises(EngineError, match="lattice"):
        lattice_to_grid(q, (2, 2))


@pytest.mark.parametrize("src,dst", [((8, 6), (4, 3)), ((1000, 64), (125, 64)), ((4, 2), (8, 6))])
def test_area_equals_torch_for_integer_factors(src, dst):
    a = np.random.default_rng(3).random(src)
    np.testing.assert_allclose(
        resize(a, dst, mode="area"), torch_resize(a, dst, "area"), atol=1e-12
    )


def test_area_fractional_overlap_by_hand():
    # 3 cells -> 2: cell 0 covers [0, 1.5): (a0 + 0.5 a1) / 1.5
    np.testing.assert_allclose(area_matrix(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    assert np.allclose(area_matrix(1000, 128).sum(axis=1), 1.0)
