"""Searching a log-spaced grid of candidate regularisation weights (:mod:`edxtomo.tomo.weights`):
the grid grown past an edge that holds a minimum, the minimum refined between grid points,
and the two helpers that score held-out views: the band of rows a search reconstructs and
the ramp-weighted norm of a view residual."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

BAND_ROWS = 16
"""y rows that a weight search reconstructs (measured in ``bench/README.md``)."""

MAX_EXTENSIONS = 4
"""Rounds by which a search extends its grid past an edge that holds a minimum (each one grid
step, so up to a factor ~100 beyond the default grids)."""


def signal_band(views: np.ndarray, band_rows: int | None) -> slice:
    """The ``band_rows`` consecutive y rows holding the most signal, over all channels.

    Parameters
    ----------
    views : ndarray, shape (c, n_tilt, ny, nx)
        Maps, each channel of mean 1 (so that every channel counts alike).
    band_rows : int or None
        Rows in the band; None or at least ``ny``: every row.

    Returns
    -------
    slice
        Along y.
    """
    ny = views.shape[2]
    if band_rows is None or band_rows >= ny:
        return slice(0, ny)
    per_row = np.abs(views).sum(axis=(0, 1, 3), dtype=np.float64)
    window = np.convolve(per_row, np.ones(band_rows), mode="valid")
    start = int(np.argmax(window))
    return slice(start, start + band_rows)


def ramp_norm(stacks: np.ndarray) -> np.ndarray:
    """``sum |k_u| |FFT_u(p)|^2`` per leading index: the squared error of a volume on the
    central planes of the views' angles (Fourier slice theorem, cylindrical ``d^3k``).

    Parameters
    ----------
    stacks : ndarray, shape (..., n, ny, nx)
        Projections (or residuals of them), detector u along the last axis.

    Returns
    -------
    ndarray, shape (...)
        With ``k_u`` in cycles per pixel; the zero-frequency bin takes the mean of ``|k_u|``
        over its width, ``1 / (4 nx)``.
    """
    nx = stacks.shape[-1]
    ramp = np.abs(np.fft.rfftfreq(nx))
    ramp[0] = 1.0 / (4 * nx)
    # rfft holds each non-zero, non-Nyquist frequency once for its +-k pair: count it twice
    ramp[1:(nx + 1) // 2] *= 2
    power = np.abs(np.fft.rfft(stacks.astype(np.float64), axis=-1)) ** 2
    return (power * ramp).sum(axis=(-3, -2, -1))


def extended_search(evaluate: Callable[[np.ndarray], np.ndarray], grid: Sequence[float],
                    max_extensions: int = MAX_EXTENSIONS) -> tuple[np.ndarray, np.ndarray]:
    """Held-out scores over ``grid``, extended while some channel's lowest score lies at an
    edge.

    Each round adds one weight beyond every edge that holds a channel's minimum, one grid
    step (the ratio of the first two weights) further out, and scores every channel there:
    a curve still falling at the edge has its minimum outside the grid.

    Parameters
    ----------
    evaluate : callable
        ``weights (n,) -> scores (c, n)``, lower is better.
    grid : sequence of float
        Increasing, log-spaced candidate weights, > 0.
    max_extensions : int
        Rounds at most; a minimum still at an edge after them is kept (and warned about).

    Returns
    -------
    grid : ndarray, shape (n_w,)
        Increasing, the extensions included.
    scores : ndarray, shape (c, n_w)
    """
    grid = np.asarray(grid, dtype=float)
    scores = np.asarray(evaluate(grid))
    ratio = grid[1] / grid[0]
    for _ in range(max_extensions):
        lowest = np.argmin(scores, axis=1)
        new = ([grid[0] / ratio] if np.any(lowest == 0) else []) + \
            ([grid[-1] * ratio] if np.any(lowest == len(grid) - 1) else [])
        if not new:
            break
        grid = np.concatenate([grid, new])
        scores = np.concatenate([scores, evaluate(np.asarray(new))], axis=1)
        order = np.argsort(grid)
        grid, scores = grid[order], scores[:, order]
    return grid, scores


def refine_minimum(grid: np.ndarray, scores: np.ndarray) -> tuple[float, bool]:
    """Minimum of a sampled curve: a parabola in ``log w`` through the lowest point and
    its neighbours; and whether the lowest point is at the edge of the grid.

    Parameters
    ----------
    grid : ndarray, shape (n_w,)
        Increasing candidate weights, > 0.
    scores : ndarray, shape (n_w,)

    Returns
    -------
    weight : float
    at_edge : bool
    """
    i = int(np.argmin(scores))
    if i == 0 or i == len(grid) - 1:
        return float(grid[i]), True
    x = np.log(grid[i - 1:i + 2])
    a, b, _ = np.polyfit(x, scores[i - 1:i + 2], 2)
    vertex = -b / (2 * a) if a > 0 else x[1]
    return float(np.exp(np.clip(vertex, x[0], x[2]))), False
