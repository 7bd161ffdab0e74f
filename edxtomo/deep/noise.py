"""What the maps' noise looks like, measured from the maps themselves.

Two questions decide the self-supervised scheme of :mod:`edxtomo.deep.denoise`:

* Are float maps counts times a scale (values on a lattice ``k * s``, e.g. counts divided by
  a dwell time or a live time)? Then the counts come back exactly and may be split
  binomially (:func:`count_scale`).
* How far does the noise of one pixel reach into its neighbours (alignment interpolation
  and export filters correlate it)? A sub-sampling or blind-spot scheme must step over that
  distance (:func:`noise_autocorrelation`, :func:`correlation_length`).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

CORRELATION_THRESHOLD = 0.1
"""Noise correlations below this are taken as independence. A self-supervised target whose
noise correlates with the input's at ``rho`` teaches the network to keep about ``rho`` of the
noise amplitude; 0.1 keeps 1% of its variance."""


def noise_autocorrelation(maps: np.ndarray, max_lag: int = 6, smooth_px: float = 3.0,
                          flat_fraction: float = 0.5) -> np.ndarray:
    """Normalised spatial autocorrelation of the noise of a stack of maps, lags 0..max_lag.

    Estimator: the signal is taken out by the residual of a smooth fit,
    ``r = x - G_s * x`` per map (``G_s`` a Gaussian of ``smooth_px``), and only the flattest
    pixels count (weight ``w = 1`` where the gradient magnitude of ``G_s * x`` is in the
    lowest ``flat_fraction`` of its map, else 0), since particle edges leave signal in the
    residual; then, over all maps and pixel pairs ``(p, p + k)`` along x and along y,

        rho(k) = sum w(p) w(p+k) r(p) r(p+k) / sum w(p) w(p+k) (r(p)^2 + r(p+k)^2) / 2

    Measured on the 32 px test specimen (seeds 0-4, In, Se, S): integer Poisson counts give
    ``rho(1)`` -0.04 to 0.07, the white level of the estimator (a smooth fit alone, without
    the flat weighting, gave 0.5 on a bright core); after an alignment interpolation (order
    1 or 3) 0.13-0.53; after that and a Gaussian filter of sigma 1 px 0.73-0.88. On pure
    noise the fit reads ``rho`` low (0.72 at lag 1 for a true 0.78):
    :func:`correlation_sigma` calibrates that out. Maps under ~32 px read too high.

    Parameters
    ----------
    maps : ndarray, shape (..., ny, nx)
        One or more maps (leading axes are pooled, e.g. tilts or frames).
    max_lag : int
        Largest lag in px.
    smooth_px : float
        Sigma of the smooth fit.
    flat_fraction : float
        Fraction of the pixels of each map, the flattest, that enter the sums.

    Returns
    -------
    ndarray, shape (max_lag + 1,)
        ``rho[0] == 1``; ``rho[k]`` the correlation at a distance of ``k`` px.
    """
    x = np.asarray(maps, dtype=np.float64)
    x = x.reshape(-1, *x.shape[-2:])
    smooth = ndimage.gaussian_filter(x, (0, smooth_px, smooth_px), mode="reflect")
    r = x - smooth
    slope = np.hypot(*np.gradient(smooth, axis=(1, 2)))
    w = (slope <= np.quantile(slope, flat_fraction, axis=(1, 2), keepdims=True)).astype(float)
    rho = np.ones(max_lag + 1)
    for k in range(1, max_lag + 1):
        num = den = 0.0
        for axis in (1, 2):
            n = r.shape[axis] - k
            if n <= 0:
                continue
            a, b = r.take(range(n), axis), r.take(range(k, k + n), axis)
            ww = w.take(range(n), axis) * w.take(range(k, k + n), axis)
            num += float(np.sum(ww * a * b))
            den += 0.5 * float(np.sum(ww * (a * a + b * b)))
        rho[k] = num / den if den > 0 else 0.0
    return rho


@functools.lru_cache(maxsize=8)
def _calibration(smooth_px: float) -> tuple[np.ndarray, np.ndarray]:
    """``rho(1)`` that :func:`noise_autocorrelation` measures on pure noise of Gaussian
    correlation width ``w`` (white noise of a fixed seed through a Gaussian of ``w``), for
    a grid of ``w``: the smooth fit takes the noise's low frequencies, so it reads low."""
    widths = np.linspace(0.0, 4.0, 41)
    white = np.random.default_rng(0).standard_normal((4, 96, 96))
    measured = [noise_autocorrelation(
        ndimage.gaussian_filter(white, (0, w, w)) if w > 0 else white, 1, smooth_px,
        1.0)[1] for w in widths]
    return np.maximum.accumulate(np.asarray(measured)), widths


def correlation_sigma(rho1: float, smooth_px: float = 3.0) -> float:
    """Width ``w`` (px) of the Gaussian correlation model ``rho(k) = exp(-k^2 / (4 w^2))``
    (white noise through a Gaussian filter of sigma ``w``) whose :func:`noise_autocorrelation`
    at lag 1 (with the same ``smooth_px``) is ``rho1``; the estimator's bias is calibrated
    out on simulated noise. 0 when ``rho1`` is no more than white noise gives."""
    measured, widths = _calibration(float(smooth_px))
    if rho1 <= measured[0]:
        return 0.0
    return float(np.interp(rho1, measured, widths))


def correlation_length(rho: np.ndarray, threshold: float = CORRELATION_THRESHOLD,
                       smooth_px: float = 3.0) -> int:
    """Correlation length in px: the largest lag ``k`` at which the Gaussian model of width
    :func:`correlation_sigma` ``(rho[1])`` stays at or above ``threshold`` (0 for white
    noise). Pixels ``k + 1`` px apart or farther are taken as independent.

    The model is fitted to lag 1 alone: there the noise dominates the residual most, while
    at larger lags the signal the smooth fit leaves (particle edges, all the more in
    filtered maps) props ``rho`` up (measured 0.15-0.25 at lag 4 where the model gives 0.02).
    """
    rho1 = float(np.asarray(rho)[1]) if len(rho) > 1 else 0.0
    width = correlation_sigma(rho1, smooth_px)
    if width <= 0 or np.exp(-1 / (4 * width**2)) < threshold:
        return 0
    return int(np.floor(2 * width * np.sqrt(-np.log(threshold)) + 1e-9))


def count_scale(data: np.ndarray, tolerance: float = 1e-3,
                max_count: float = 1e7) -> float | None:
    """The scale ``s`` of maps that are counts times ``s``, or None when they are not.

    Candidates for ``s``: the smallest positive value divided by 1..4 (a map without any
    single count still has a lattice step) and the smallest positive difference between
    distinct values. The first candidate under which every value ``v`` is non-negative and
    ``v / s`` is an integer within ``tolerance + 1e-6 * v / s`` (float32 rounding of large
    counts), with counts at most ``max_count``, wins. Integer maps give 1.

    Parameters
    ----------
    data : ndarray
        The maps of one channel (any shape).
    tolerance : float
        Allowed distance of ``v / s`` from an integer, in counts.
    max_count : float
        Lattices whose counts would exceed this are rejected (a tiny ``s`` fits anything).
    """
    v = np.asarray(data, dtype=np.float64).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        return None
    if np.issubdtype(np.asarray(data).dtype, np.integer):
        return 1.0 if v.min() >= 0 else None
    if v.min() < 0:
        return None
    distinct = np.unique(v)
    positive = distinct[distinct > 0]
    if positive.size == 0:
        return None
    candidates = [positive[0] / d for d in (1, 2, 3, 4)]
    if positive.size > 1:
        candidates.append(float(np.min(np.diff(distinct))))
    for s in candidates:
        if s <= 0:
            continue
        k = distinct / s
        if k[-1] > max_count:
            continue
        if np.all(np.abs(k - np.round(k)) <= tolerance + 1e-6 * k):
            return float(s)
    return None


def recover_counts(data: np.ndarray, scale: float) -> np.ndarray:
    """``data / scale`` rounded to integer counts (int64 when they would overflow int32)."""
    k = np.round(np.asarray(data, dtype=np.float64) / scale)
    return k.astype(np.int32 if k.size == 0 or k.max() < 2**31 - 1 else np.int64)
