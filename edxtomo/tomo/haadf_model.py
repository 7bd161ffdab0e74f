"""The HAADF model of the fused reconstruction: ``h = s sum_e Z_e^gamma counts_e / k_e + b_t``.

:func:`fit_haadf_model` fits ``gamma`` (a grid over the prior range), the scale ``s`` and an
offset ``b_t`` per tilt to the raw data: the HAADF regressed on ``sum_e Z_e^gamma (y_e -
bg_e) / k_e``, on binned pixels, with the known Poisson variance of the counts removed from
the normal equation (errors in variables; without it the noisy counts bias ``s`` towards 0)
and bins of positive outliers (material the X-ray maps do not list) dropped. ``k_e`` is the
element's X-ray sensitivity (counts per atom, relative; Cliff-Lorimer 1/k-factors) and
``gamma`` the HAADF Z exponent (Schwartz et al., Nat. Commun. 15, 3555, 2024).
:mod:`edxtomo.tomo.fused` solves the reconstruction with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.optimize import minimize_scalar

from edxtomo.errors import EdxtomoInputError

log = logging.getLogger(__name__)

_EPS = 1e-12
GAMMA_STEP = 0.01
"""Grid step of the gamma fit (well below the 0.1 the fit is asked to reach)."""
OUTLIER_SIGMA = 4.0
"""Bins whose HAADF exceeds the element model by this many robust sigmas are not fitted."""


@dataclass(frozen=True)
class HaadfModel:
    """The fitted HAADF model ``h = s sum_e Z_e^gamma (counts_e / k_e) + b_t``.

    Attributes
    ----------
    gamma : float
        Z exponent (the best fit on the prior range's grid).
    gamma_sd : float
        Its uncertainty: the spread of the fit's likelihood over the prior range.
    scale : float
        ``s``: HAADF units per (Z^gamma x counts / sensitivity).
    offset : ndarray, shape (n_tilt,)
        ``b_t``, HAADF units per pixel.
    noise_sigma : float
        Per-pixel standard deviation of the HAADF about the model: the misfit the counts'
        noise does not explain, at least the HAADF's own pixel noise.
    coefficients : ndarray, shape (n_element,)
        ``a_e = s Z_e^gamma / k_e``: HAADF units per count of each element.
    inlier_fraction : float
        Fraction of bins fitted (the rest exceed the element model: unlisted material).
    """

    gamma: float
    gamma_sd: float
    scale: float
    offset: np.ndarray
    noise_sigma: float
    coefficients: np.ndarray
    inlier_fraction: float


def fit_haadf_model(
    counts: np.ndarray,
    background: np.ndarray,
    haadf: np.ndarray,
    atomic_numbers: Sequence[float],
    sensitivity: Sequence[float],
    gamma_range: tuple[float, float] = (1.6, 1.8),
    bin_px: int = 4,
    count_noise: bool = True,
) -> HaadfModel:
    """Fit ``gamma``, ``s`` and ``b_t`` of the HAADF model to the raw projections.

    Parameters
    ----------
    counts, background : ndarray, shape (n_element, n_tilt, ny, nx)
        Gross counts and the expected background under each line.
    haadf : ndarray, shape (n_tilt, ny, nx)
        HAADF projections (any linear unit).
    atomic_numbers, sensitivity : sequence of float, length n_element
        ``Z_e`` and the relative X-ray sensitivity ``k_e`` (counts per atom).
    gamma_range : (float, float)
        Prior range of ``gamma``; the fit searches it in steps of :data:`GAMMA_STEP`.
    bin_px : int
        Pixels per side of the bins the regression runs on.
    count_noise : bool
        The counts carry Poisson noise (their variance enters the fit). False for maps whose
        noise is far below Poisson (denoised): an ordinary least-squares fit, since a
        Poisson variance they do not have would push the fitted scale up.

    Returns
    -------
    HaadfModel
    """
    z = np.asarray(atomic_numbers, dtype=float)
    k = np.asarray(sensitivity, dtype=float)
    if np.any(k <= 0):
        raise EdxtomoInputError(f"fused.sensitivity must be > 0 for every element, got {k}")
    lo, hi = gamma_range
    if not 0 < lo <= hi:
        raise EdxtomoInputError(f"fused.gamma_range must be 0 < low <= high, got {gamma_range}")
    x = _bin((counts - background) / k[:, None, None, None], bin_px)
    # Poisson variance of each bin's counts, from its 8 neighbours (a weight drawn from the
    # bin's own counts would favour bins that fluctuated low and bias the fit), +1 so that
    # empty bins keep a finite weight
    binned = _bin(counts, bin_px)
    around = uniform_filter(binned, size=(1, 1, 3, 3), mode="nearest") * 9 - binned
    var = (around / 8 + 1.0) / k[:, None, None, None] ** 2 * float(count_noise)
    h = _bin(haadf[None], bin_px)[0]
    gammas = np.arange(lo, hi + GAMMA_STEP / 2, GAMMA_STEP)
    inlier = np.ones(h.shape, dtype=bool)
    sigma0_sq = float(np.var(h)) * 1e-3
    for _ in range(4):
        fits = [_fit_scale(x, var, h, inlier, z**g, sigma0_sq) for g in gammas]
        best = int(np.argmin([f[2] for f in fits]))
        scale, offset, _ = fits[best]
        u_var = scale**2 * np.tensordot(z ** (2 * gammas[best]), var, axes=1)
        misfit = h - scale * np.tensordot(z ** gammas[best], x, axes=1) - offset[:, None, None]
        # misfit variance the counts' noise does not explain: HAADF noise and model error
        sigma0_sq = max(float(np.mean(misfit[inlier] ** 2 - u_var[inlier])), _EPS)
        inlier = misfit < OUTLIER_SIGMA * np.sqrt(u_var + sigma0_sq)
    chi2 = np.array([f[2] for f in fits])
    gamma = float(gammas[best])
    # spread of exp(-chi2 / 2) over the prior range: the data's uncertainty on gamma
    like = np.exp(-(chi2 - chi2.min()) / 2)
    gamma_sd = float(np.sqrt(np.sum(like * (gammas - gamma) ** 2) / like.sum()))
    if best in (0, len(gammas) - 1) and lo < hi:
        log.warning("HAADF gamma %.2f sits at the edge of the prior range %s: check "
                    "fused.sensitivity and fused.gamma_range", gamma, gamma_range)
    sigma = max(float(np.sqrt(sigma0_sq)) / bin_px, pixel_noise(haadf))
    return HaadfModel(gamma=gamma, gamma_sd=gamma_sd, scale=float(scale),
                      offset=offset / bin_px**2, noise_sigma=sigma,
                      coefficients=scale * z**gamma / k, inlier_fraction=float(inlier.mean()))


def pixel_noise(images: np.ndarray) -> float:
    """Robust per-pixel noise sigma of ``(..., ny, nx)`` images from neighbour differences.

    ``1.4826 MAD(d) / sqrt(2)`` of the differences ``d`` along x: independent pixel noise
    doubles in variance under a difference, smooth structure cancels.
    """
    d = np.diff(np.asarray(images, dtype=np.float64), axis=-1).ravel()
    return max(float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2)), _EPS)


def _bin(stack: np.ndarray, bin_px: int) -> np.ndarray:
    """Sum ``(c, n_tilt, ny, nx)`` over ``bin_px`` x ``bin_px`` blocks (edges cropped)."""
    c, t, ny, nx = stack.shape
    by, bx = ny // bin_px, nx // bin_px
    if by == 0 or bx == 0:
        raise EdxtomoInputError(f"projections {ny} x {nx} px are smaller than one {bin_px} px bin")
    crop = stack[:, :, : by * bin_px, : bx * bin_px].astype(np.float64)
    return crop.reshape(c, t, by, bin_px, bx, bin_px).sum(axis=(3, 5))


def _fit_scale(x, var, h, inlier, weights, sigma0_sq) -> tuple[float, np.ndarray, float]:
    """York (errors-in-variables) fit of ``h = s u + b_t``, ``u = sum_e weights_e x_e``.

    Minimises ``chi2 = sum (h - s u - b_t)^2 / (s^2 var(u) + sigma0^2)`` over the inlier
    bins: the profile likelihood of Gaussian errors in both the counts and the HAADF. The
    offsets are profiled out (weighted means per tilt), ``s`` by a bounded scalar search.
    Returns ``s``, ``b_t`` and ``chi2``.
    """
    u = np.tensordot(weights, x, axes=1)
    u_var = np.tensordot(weights**2, var, axes=1)
    mask = inlier.astype(float)

    def chi2(log_scale: float) -> tuple[float, np.ndarray]:
        scale = np.exp(log_scale)
        w = mask / (scale**2 * u_var + sigma0_sq)
        offset = (w * (h - scale * u)).sum(axis=(1, 2)) / w.sum(axis=(1, 2)).clip(_EPS)
        return float((w * (h - scale * u - offset[:, None, None]) ** 2).sum()), offset

    du = u - u.mean(axis=(1, 2), keepdims=True)
    guess = float((du * (h - h.mean(axis=(1, 2), keepdims=True)) * mask).sum()
                  / max(float((du**2 * mask).sum()), _EPS))
    center = np.log(max(guess, _EPS))
    found = minimize_scalar(lambda v: chi2(v)[0], bounds=(center - 2, center + 2),
                            method="bounded", options={"xatol": 1e-4})
    value, offset = chi2(found.x)
    return float(np.exp(found.x)), offset, value
