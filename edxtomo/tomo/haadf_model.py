"""The HAADF model of the fused reconstruction: ``h = f_L(s sum_e Z_e^gamma c_e / k_e) + b_t``.

``f_L(x) = L (1 - exp(-x / L))`` is a HAADF that saturates towards ``L`` with thickness
(multiple scattering, scattering outside the detector's annulus); linear (``f(x) = x``) for
``L`` infinite, and to first order for thin specimens. :func:`fit_haadf_model` fits ``gamma``
(a grid over the prior range), the level ``L`` (a grid, infinite included), the scale ``s``
and an offset ``b_t`` per tilt to the raw data: the HAADF regressed on ``sum_e Z_e^gamma (y_e
- bg_e) / k_e``, on binned pixels, with the known Poisson variance of the counts removed from
the normal equation (errors in variables; without it the noisy counts bias ``s`` towards 0)
and bins of positive outliers (material the X-ray maps do not list) dropped. ``k_e`` is the
element's X-ray sensitivity (counts per atom, relative; Cliff-Lorimer 1/k-factors) and
``gamma`` the HAADF Z exponent (Schwartz et al., Nat. Commun. 15, 3555, 2024).
:mod:`edxtomo.tomo.fused` solves the reconstruction with it, on the HAADF that
:meth:`HaadfModel.linearise` maps back through ``f_L^-1``.
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
SATURATION_GRID = np.arange(0.0, 0.951, 0.05)
"""Candidates of ``peak / L``: 0 (linear) to 0.95, ``peak`` the brightest bin's mean pixel
signal above the median. A HAADF measured at ``peak / L = 0.5`` has lost 28% of its linear
signal there (``f_L^-1(0.5 L) = L ln 2``, and ``1 - 0.5 / ln 2 = 0.28``)."""
SATURATION_CHI2 = 10.83
"""A saturating HAADF is fitted only where it lowers the fit's chi2 by more than this: the
99.9% point of chi2 with one degree of freedom, so a linear HAADF passes for saturated 1 time
in 1000 (on the qd_demo dots at 48^3 its best saturation lowered chi2 by 0.3)."""
LINEARISE_MAX = 0.99
""":meth:`HaadfModel.linearise` inverts ``f_L`` up to this fraction of ``L`` (pixel noise
can cross ``L``); its weight there is ``(1 - 0.99)^2``."""


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
    saturation_level : float
        ``L``, HAADF units per pixel above the offset; ``inf``: linear.
    """

    gamma: float
    gamma_sd: float
    scale: float
    offset: np.ndarray
    noise_sigma: float
    coefficients: np.ndarray
    inlier_fraction: float
    saturation_level: float = np.inf

    def linearise(self, haadf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The HAADF above its offsets mapped back through ``f_L^-1``, and its weight.

        Parameters
        ----------
        haadf : ndarray, shape (n_tilt, ny, nx)
            Measured HAADF.

        Returns
        -------
        signal : ndarray, shape (n_tilt, ny, nx), float32
            ``f_L^-1(h - b_t) = -L ln(1 - (h - b_t) / L)``: linear in the projected
            ``s sum_e Z_e^gamma c_e / k_e``; ``h - b_t`` for a linear HAADF.
        weight : ndarray, shape (n_tilt, ny, nx), float32
            ``(f_L^-1)'^-2 = (1 - (h - b_t) / L)^2``: the HAADF noise grows by ``(f_L^-1)'``
            in the linearised signal, so its inverse variance shrinks by this factor.
        """
        above = np.asarray(haadf, dtype=np.float64) - self.offset[:, None, None]
        if not np.isfinite(self.saturation_level):
            return above.astype(np.float32), np.ones(above.shape, np.float32)
        fraction = np.minimum(above / self.saturation_level, LINEARISE_MAX)
        signal = -self.saturation_level * np.log1p(-fraction)
        return signal.astype(np.float32), ((1.0 - fraction) ** 2).astype(np.float32)


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
    """Fit ``gamma``, ``L``, ``s`` and ``b_t`` of the HAADF model to the raw projections.

    ``L`` and ``gamma`` alternate on their grids (:data:`SATURATION_GRID`, steps of
    :data:`GAMMA_STEP`); ``L`` stays infinite unless a finite one lowers chi2 by more than
    :data:`SATURATION_CHI2`.

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
    # the saturation grid in units of the brightest bin's mean pixel signal above the median
    # (a flat HAADF has no scale to saturate: linear only)
    peak = float(h.max() - np.median(h)) / bin_px**2
    inverse_levels = SATURATION_GRID / peak if peak > 0 else np.zeros(1)
    inlier = np.ones(h.shape, dtype=bool)
    sigma0_sq = float(np.var(h)) * 1e-3
    gamma, inverse_level = float(gammas[len(gammas) // 2]), 0.0
    for _ in range(4):
        # the level at the current gamma, then gamma at that level
        chi2 = [_fit_scale(x, var, h, inlier, z**gamma, sigma0_sq, v, bin_px**2)[2]
                for v in inverse_levels]
        saturated = int(np.argmin(chi2))
        inverse_level = (float(inverse_levels[saturated])
                         if chi2[0] - chi2[saturated] > SATURATION_CHI2 else 0.0)
        fits = [_fit_scale(x, var, h, inlier, z**g, sigma0_sq, inverse_level, bin_px**2)
                for g in gammas]
        best = int(np.argmin([f[2] for f in fits]))
        scale, offset, _ = fits[best]
        gamma = float(gammas[best])
        model, slope = _link(scale * np.tensordot(z**gamma, x, axes=1), inverse_level,
                             bin_px**2)
        u_var = (slope * scale) ** 2 * np.tensordot(z ** (2 * gamma), var, axes=1)
        misfit = h - model - offset[:, None, None]
        # misfit variance the counts' noise does not explain: HAADF noise and model error
        sigma0_sq = max(float(np.mean(misfit[inlier] ** 2 - u_var[inlier])), _EPS)
        inlier = misfit < OUTLIER_SIGMA * np.sqrt(u_var + sigma0_sq)
    chi2 = np.array([f[2] for f in fits])
    # spread of exp(-chi2 / 2) over the prior range: the data's uncertainty on gamma
    like = np.exp(-(chi2 - chi2.min()) / 2)
    gamma_sd = float(np.sqrt(np.sum(like * (gammas - gamma) ** 2) / like.sum()))
    if best in (0, len(gammas) - 1) and lo < hi:
        log.warning("HAADF gamma %.2f sits at the edge of the prior range %s: check "
                    "fused.sensitivity and fused.gamma_range", gamma, gamma_range)
    level = 1.0 / inverse_level if inverse_level > 0 else np.inf
    if inverse_level > 0:
        log.info("HAADF saturates: level L = %.4g per pixel above the offset, %.2f times the "
                 "brightest bin's signal", level, 1.0 / (inverse_level * peak))
    sigma = max(float(np.sqrt(sigma0_sq)) / bin_px, pixel_noise(haadf))
    return HaadfModel(gamma=gamma, gamma_sd=gamma_sd, scale=float(scale),
                      offset=offset / bin_px**2, noise_sigma=sigma,
                      coefficients=scale * z**gamma / k, inlier_fraction=float(inlier.mean()),
                      saturation_level=level)


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


def _link(linear: np.ndarray, inverse_level: float, n_px: int) -> tuple[np.ndarray, np.ndarray]:
    """``f_L`` on bins of ``n_px`` pixels, applied to their mean pixel, and its slope.

    ``linear`` sums ``n_px`` pixels; ``f_L(x) = -expm1(-x / L) L`` with ``1 / L =
    inverse_level`` (0: linear). Applying ``f_L`` to the bin's mean rather than to each
    pixel overestimates a bin whose pixels differ (``f_L`` is concave), by a second-order
    amount.
    """
    if inverse_level == 0:
        return linear, np.ones_like(linear)
    mean = linear / n_px
    return -np.expm1(-mean * inverse_level) / inverse_level * n_px, np.exp(-mean * inverse_level)


def _fit_scale(x, var, h, inlier, weights, sigma0_sq, inverse_level=0.0,
               n_px=1) -> tuple[float, np.ndarray, float]:
    """York (errors-in-variables) fit of ``h = f_L(s u) + b_t``, ``u = sum_e weights_e x_e``.

    Minimises ``chi2 = sum (h - f_L(s u) - b_t)^2 / (f_L'^2 s^2 var(u) + sigma0^2)`` over
    the inlier bins: the profile likelihood of Gaussian errors in both the counts and the
    HAADF. ``f_L`` is :func:`_link` on bins of ``n_px`` pixels. The offsets are profiled out
    (weighted means per tilt), ``s`` by a bounded scalar search. Returns ``s``, ``b_t`` and
    ``chi2``.
    """
    u = np.tensordot(weights, x, axes=1)
    u_var = np.tensordot(weights**2, var, axes=1)
    mask = inlier.astype(float)

    def chi2(log_scale: float) -> tuple[float, np.ndarray]:
        scale = np.exp(log_scale)
        model, slope = _link(scale * u, inverse_level, n_px)
        w = mask / ((slope * scale) ** 2 * u_var + sigma0_sq)
        offset = (w * (h - model)).sum(axis=(1, 2)) / w.sum(axis=(1, 2)).clip(_EPS)
        return float((w * (h - model - offset[:, None, None]) ** 2).sum()), offset

    du = u - u.mean(axis=(1, 2), keepdims=True)
    guess = float((du * (h - h.mean(axis=(1, 2), keepdims=True)) * mask).sum()
                  / max(float((du**2 * mask).sum()), _EPS))
    center = np.log(max(guess, _EPS))
    found = minimize_scalar(lambda v: chi2(v)[0], bounds=(center - 2, center + 2),
                            method="bounded", options={"xatol": 1e-4})
    value, offset = chi2(found.x)
    return float(np.exp(found.x)), offset, value
