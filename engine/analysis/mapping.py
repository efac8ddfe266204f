"""Query lattice → time × mel grid (AIBA Appendix A.1.1): time-major reshape and resize.

Resizing is separable: ``G = R_t · P · R_fᵀ`` with one ``(out, in)`` interpolation matrix per axis.

Bilinear, ``align_corners=False``: output cell ``i`` samples the input at
``x = (i + 0.5)·in/out − 0.5`` and interpolates between ``floor(x)`` and ``floor(x) + 1``.
When upsampling, ``x`` falls up to half a cell outside ``[0, in−1]``; the boundary mode names
the value of the virtual sample at index ``−1`` (and ``in``):

* ``"nearest"`` (default): it equals the edge sample (edge replicate). Identical to
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, which clamps
  ``x`` to ``≥ 0`` and the upper neighbour to ``in − 1``.
* ``"zero"``: it is 0, so edge cells are pulled toward 0 by the weight ``−x`` (or ``x − (in−1)``),
  e.g. ×0.75 for a 2× upsample and ×≈0.52 for 32×. This is AIBA's stated default; it biases the
  lowest and highest mel bins (bass!) downward, hence not our default.
* ``"reflect"``: it equals sample ``1`` (and ``in − 2``), mirror without repeating the edge.

``area`` resizing averages the input over each output cell's exact interval (fractional
overlaps); for integer factors it equals torch's ``mode="area"``. It is used for ground-truth
power maps, where bilinear downsampling would skip frames.
"""

from __future__ import annotations

import numpy as np

from engine.types import EngineError

BOUNDARIES = ("nearest", "zero", "reflect")
DEFAULT_TARGET = (128, 64)


def bilinear_matrix(n_in: int, n_out: int, boundary: str = "nearest") -> np.ndarray:
    """The ``(n_out, n_in)`` 1-D linear interpolation matrix (``align_corners=False``)."""
    if boundary not in BOUNDARIES:
        raise EngineError(f"unknown boundary mode {boundary!r}: use one of {', '.join(BOUNDARIES)}")
    if n_in < 1 or n_out < 1:
        raise EngineError(f"cannot resize {n_in} → {n_out} cells: both sizes must be ≥ 1")
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(x).astype(np.int64)
    frac = x - i0
    w = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    for idx, wt in ((i0, 1.0 - frac), (i0 + 1, frac)):
        src = idx.copy()
        if boundary == "nearest":
            src = np.clip(src, 0, n_in - 1)
        elif boundary == "reflect":
            src = np.where(src < 0, -src, src)
            src = np.where(src > n_in - 1, 2 * (n_in - 1) - src, src)
            src = np.clip(src, 0, n_in - 1)  # n_in == 1 degenerates to the edge sample
        keep = (src >= 0) & (src <= n_in - 1)  # "zero": drop virtual samples
        np.add.at(w, (rows[keep], src[keep]), wt[keep])
    return w


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix averaging the input over each output cell's interval."""
    if n_in < 1 or n_out < 1:
        raise EngineError(f"cannot resize {n_in} → {n_out} cells: both sizes must be ≥ 1")
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1.0) - np.maximum(lo, cells), 0.0, None)
    return overlap / (hi - lo)


def resize(
    grid: np.ndarray,
    shape: tuple[int, int],
    mode: str = "bilinear",
    boundary: str = "nearest",
) -> np.ndarray:
    """Resize the last two axes of ``grid`` (``(..., h, w)``) to ``shape`` (float64)."""
    a = np.asarray(grid, dtype=np.float64)
    if a.ndim < 2:
        raise EngineError(f"resize needs an array with ≥ 2 axes, got shape {a.shape}")
    h, w = a.shape[-2:]
    if mode == "bilinear":
        rt, rf = bilinear_matrix(h, shape[0], boundary), bilinear_matrix(w, shape[1], boundary)
    elif mode == "area":
        rt, rf = area_matrix(h, shape[0]), area_matrix(w, shape[1])
    else:
        raise EngineError(f"unknown resize mode {mode!r}: use 'bilinear' or 'area'")
    return np.einsum("th,...hw,fw->...tf", rt, a, rf, optimize=True)


def lattice_to_grid(
    pooled: np.ndarray,
    lattice: tuple[int, int],
    target: tuple[int, int] = DEFAULT_TARGET,
    boundary: str = "nearest",
    query_offset: int = 0,
    time_only: str = "broadcast",
) -> np.ndarray:
    """Map pooled attention over queries onto the ``(T, F)`` grid.

    ``pooled`` is ``(Q,)`` or ``(Q, K)`` (per-token maps); the result is ``(T, F)`` or
    ``(K, T, F)``. Queries are time-major on ``lattice = (T_l, F_l)`` (``q = t·F_l + f``,
    ``f = 0`` lowest frequency); the first ``query_offset`` queries (e.g. Stable Audio's global
    token) are dropped. A time-only lattice (``F_l == 1``) is resized along time only and then
    either repeated across all ``F`` bins (``time_only="broadcast"``, carries no frequency
    information) or kept as one column (``time_only="column"``, shape ``(T, 1)``).
    """
    p = np.asarray(pooled, dtype=np.float64)
    t_l, f_l = int(lattice[0]), int(lattice[1])
    n_q = p.shape[0] if p.ndim in (1, 2) else -1
    if n_q != query_offset + t_l * f_l:
        raise EngineError(
            f"attention has {n_q} queries but lattice {t_l}×{f_l} plus offset {query_offset} "
            f"needs {query_offset + t_l * f_l}: check the site's lattice"
        )
    p = p[query_offset:]
    per_token = p.ndim == 2
    grid = p.reshape(t_l, f_l, -1) if per_token else p.reshape(t_l, f_l)
    if per_token:
        grid = np.moveaxis(grid, -1, 0)  # (K, T_l, F_l)
    t_out, f_out = target
    if f_l == 1:
        if time_only not in ("broadcast", "column"):
            raise EngineError(f"unknown time_only mode {time_only!r}: use 'broadcast' or 'column'")
        col = resize(grid, (t_out, 1), boundary=boundary)
        if time_only == "column":
            return col
        return np.repeat(col, f_out, axis=-1)
    return resize(grid, (t_out, f_out), boundary=boundary)
