"""What the maps' noise looks like, measured from the maps themselves.

Two questions decide the self-supervised scheme of :mod:`edxtomo.deep.denoise`:

* Are float maps counts times a scale (values on a lattice ``k * s``, e.g. counts divided by
  a dwell time or a live time)? Then the counts come back exactly and may be split
  binomially (:func:`count_scale`).
* How far does the noise of one pixel reach into its neighbours (alignment interpolation
  and export filters correlate it)? A sub-sampling or blind-spot scheme must step over that
  distance (:func:`noise_autocorrelation`, :func:`correlation_length`).
* How strong is the noise where (filtered counts: its variance grows with the local mean)?
  Recorrupted pairs draw noise of that covariance (:func:`white_noise_std`).
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


def _quadratic_fit(x: np.ndarray, window_px: int) -> np.ndarray:
    """Local quadratic fit of ``(..., ny, nx)`` maps: a Savitzky-Golay filter of order 2 and
    ``window_px`` along y, then along x (it keeps any signal quadratic in y and in x)."""
    # imported here: scipy.signal pulls in scipy.stats (a second per process), and only
    # float maps come this way
    from scipy import signal

    fit = signal.savgol_filter(x, window_px, 2, axis=-2, mode="mirror")
    return signal.savgol_filter(fit, window_px, 2, axis=-1, mode="mirror")


def _residual_gain(blur_px: float, window_px: int) -> float:
    """The variance that the residual of :func:`_quadratic_fit` keeps of white noise of unit
    variance filtered by a Gaussian of ``blur_px``: ``sum((kernel - fit(kernel))^2)``."""
    size = 8 * int(np.ceil(blur_px)) + 4 * window_px + 1
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    kernel = ndimage.gaussian_filter(delta, blur_px, mode="constant") if blur_px > 0 else delta
    return float(np.sum((kernel - _quadratic_fit(kernel, window_px)) ** 2))


def white_noise_std(maps: np.ndarray, blur_px: float, window_px: int = 9,
                    smooth_px: float = 3.0, flat_fraction: float = 0.5,
                    n_bins: int = 8) -> np.ndarray:
    """Per pixel, the standard deviation of the white noise that a Gaussian filter of
    ``blur_px`` turned into the maps' noise, for noise whose variance is affine in the signal
    (filtered, scaled Poisson counts, with or without a background subtracted).

    Model: ``x = s + G_w * (sigma * e)``, ``e`` white of unit variance,
    ``sigma^2 = gain * s + offset``. The residual ``r`` of a local quadratic fit
    (:func:`_quadratic_fit`, which leaves no smooth signal, where a Gaussian smoothing leaves
    the curvature of a particle's interior) keeps a known share of the filtered noise's
    variance (:func:`_residual_gain`), so ``E[r^2] = (gain * m + offset) * share`` with
    ``m = G_s * x``; ``gain`` and ``offset`` come from a least-squares fit, over 8 bins of
    ``m``, of the median of ``r^2`` per bin (0.455 times the variance of Gaussian noise;
    robust to the signal left in a few pixels) on ``m``. Only the flattest pixels enter: in
    the lowest ``flat_fraction`` of both the gradient and the absolute Laplacian of ``m``
    in each map (edges and thin shells leave signal in ``r``; measured on the 32 px test
    specimen, without the Laplacian criterion the variance of the S shell read about 2x).

    Parameters
    ----------
    maps : ndarray, shape (n, ny, nx)
        The maps of one channel, in any units.
    blur_px : float
        Sigma (px) of the filter the noise went through
        (:func:`correlation_sigma` of the measured correlation).
    window_px : int
        Odd window of the quadratic fit.
    smooth_px, flat_fraction : float
        Sigma (px) of the mean ``m``, and the share of pixels kept by each flatness test.
    n_bins : int
        Bins of ``m`` in the fit.

    Returns
    -------
    ndarray, shape (n, ny, nx)
        ``sqrt(max(gain * m + offset, 0))``, in the units of ``maps``.
    """
    x = np.asarray(maps, dtype=np.float64)
    mean = ndimage.gaussian_filter(x, (0, smooth_px, smooth_px), mode="reflect")
    slope = np.hypot(*np.gradient(mean, axis=(1, 2)))
    curvature = np.abs(ndimage.laplace(mean, mode="reflect"))
    flat = ((slope <= np.quantile(slope, flat_fraction, axis=(1, 2), keepdims=True))
            & (curvature <= np.quantile(curvature, flat_fraction, axis=(1, 2), keepdims=True)))
    squared = (x - _quadratic_fit(x, window_px))[flat] ** 2
    m = mean[flat]
    edges = np.quantile(m, np.linspace(0, 1, n_bins + 1))
    index = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, n_bins - 1)
    bins = [i for i in range(n_bins) if np.any(index == i)]
    variance = np.array([np.median(squared[index == i]) for i in bins]) / (
        0.4549 * _residual_gain(blur_px, window_px))
    design = np.stack([[np.mean(m[index == i]) for i in bins], np.ones(len(bins))], axis=1)
    (gain, offset), *_ = np.linalg.lstsq(design, variance, rcond=None)
    return np.sqrt(np.clip(gain * mean + offset, 0.0, None))


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
