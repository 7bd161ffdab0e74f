"""Cross-correlation registration: band-pass, chance level, sequential neighbour registration.

Every registration compares edge-windowed, difference-of-Gaussians band-passed images through
skimage's upsampled cross-correlation (not whitened: whitening amplifies the noise of X-ray
counts). :func:`_sequential` chains such registrations from the tilt nearest 0 degrees
outwards; a view whose correlation stays below the threshold is not registered, and when
fewer than two views register at all, :class:`RegistrationFailed` is raised.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from edxtomo.align.geometry import _rotate_xy, _warp
from edxtomo.errors import EdxtomoInputError

# Fraction of each image edge that the Tukey window tapers before cross-correlation.
WINDOW_TAPER = 0.25
# Probability that pure noise passes the registration threshold (see chance_correlation).
CHANCE_PROBABILITY = 1e-4


class RegistrationFailed(EdxtomoInputError):
    """Fewer than two views register: they do not correlate with their neighbours.

    The one failure the axis-rotation scan expects (and skips) at a candidate rotation; at
    the final rotation it is the user's error, since the reference channel shows nothing the
    views share.
    """


@dataclass(frozen=True)
class _Registration:
    """Settings shared by every registration, in pixels of the image being registered."""

    low_px: float
    high_px: float
    upsample: int
    stretch: bool
    min_correlation: float
    sirt_iterations: int
    device: str


@functools.lru_cache(maxsize=8)
def _band_pass(shape: tuple[int, int], reg: _Registration) -> tuple[np.ndarray, np.ndarray]:
    """Tukey edge window and difference-of-Gaussians transfer function for ``shape``."""
    # imported here: scipy.signal pulls in scipy.stats (a second per process), and every
    # job that only applies transforms imports this package
    from scipy.signal.windows import tukey

    window = np.outer(tukey(shape[0], WINDOW_TAPER), tukey(shape[1], WINDOW_TAPER))
    k2 = np.fft.fftfreq(shape[0])[:, None] ** 2 + np.fft.fftfreq(shape[1])[None, :] ** 2
    transfer = np.exp(-2 * np.pi**2 * reg.low_px**2 * k2) - np.exp(
        -2 * np.pi**2 * reg.high_px**2 * k2
    )
    return window, transfer


def chance_correlation(
    shape: tuple[int, int], low_px: float, high_px: float, smooth_px: float = 0.0
) -> float:
    """Correlation that two unrelated noise images reach by chance in a registration.

    White noise smoothed by a Gaussian of ``smooth_px``, windowed and band-passed as in
    registration, gives a correlation coefficient at one shift with variance
    ``var = sum T^4 / (sum T^2)^2 * N sum w^4 / (sum w^2)^2`` (T the total transfer function,
    w the window, N pixels), i.e. about ``K = 1 / var`` independent samples. The best of about
    ``K`` trial shifts exceeds ``sqrt(var) * sqrt(2 ln(K / p))`` with probability about ``p``;
    ``p = 1e-4`` here. Checked on Poisson noise run through the whole sequential registration
    (resampling, warps, stretch): the largest of 32 registrations stayed below this level at
    64, 128 and 256 px. Default filters: 0.20 for 256 px counts registered at 128 px, 0.35
    for 128 px counts, 0.68 at 64 px, so small images need more signal to register.
    """
    reg = _Registration(low_px, high_px, 1, False, 0.0, 1, "cpu")
    window, transfer = _band_pass(tuple(shape), reg)
    k2 = np.fft.fftfreq(shape[0])[:, None] ** 2 + np.fft.fftfreq(shape[1])[None, :] ** 2
    power = (transfer * np.exp(-2 * np.pi**2 * smooth_px**2 * k2)) ** 2
    window_factor = window.size * (window**4).sum() / (window**2).sum() ** 2
    variance = (power**2).sum() / power.sum() ** 2 * window_factor
    samples = max(1.0 / variance, 2.0)
    return float(np.sqrt(variance * 2 * np.log(samples / CHANCE_PROBABILITY)))


def _spectrum(image: np.ndarray, reg: _Registration) -> np.ndarray:
    """Fourier transform of the edge-windowed, band-passed image, for registration.

    The window comes first, so the periodic band-pass sees no edges; the window-weighted mean
    is subtracted before it, else every image would carry the window's shape.
    """
    window, transfer = _band_pass(image.shape, reg)
    level = (image * window).sum() / window.sum()
    return np.fft.fft2((image - level) * window) * transfer


def _register(
    reference: np.ndarray, moving: np.ndarray, reg: _Registration
) -> tuple[np.ndarray, float]:
    """Translation that brings ``moving`` onto ``reference``, and their correlation.

    Both are spectra from :func:`_spectrum`. Returns ``d_xy`` such that ``moving(r - d) ~
    reference(r)`` (skimage's upsampled cross-correlation, not whitened: whitening amplifies
    the noise of X-ray counts), and the Pearson correlation of the filtered images after
    the shift, computed in Fourier space.
    """
    shift_yx, _, _ = phase_cross_correlation(
        reference, moving, space="fourier", upsample_factor=reg.upsample, normalization=None
    )
    shifted = ndimage.fourier_shift(moving, shift_yx)
    denominator = np.linalg.norm(reference) * np.linalg.norm(moving)
    correlation = float(np.vdot(shifted, reference).real / denominator) if denominator else 0.0
    return np.asarray(shift_yx, dtype=float)[::-1], correlation


def _sequential(
    stack: np.ndarray, angles_deg: np.ndarray, alpha_deg: float, reg: _Registration
) -> tuple[np.ndarray, np.ndarray]:
    """Translations by cross-correlation of neighbours, from the tilt nearest 0 outwards.

    Returns ``q`` (n_tilt, 2), the (x, y) translation of each view in the axis frame (see
    :func:`edxtomo.align.geometry._derotate`), and each view's correlation with the neighbour
    it was registered to (1 for the starting view). A view below ``min_correlation`` is
    skipped as a neighbour: the next view is registered to the last view that passed.
    """
    n_tilt = len(angles_deg)
    cos = np.cos(np.deg2rad(angles_deg))
    q = np.zeros((n_tilt, 2))
    correlation = np.ones(n_tilt)
    start = int(np.argmin(np.abs(angles_deg)))
    identity = np.zeros(2)
    for direction in (1, -1):
        anchor = start
        anchor_view = _spectrum(_warp(stack[start], alpha_deg, identity), reg)
        for i in range(start + direction, n_tilt if direction > 0 else -1, direction):
            k = cos[i] / cos[anchor] if reg.stretch else 1.0
            guess = np.array([k * q[anchor, 0], q[anchor, 1]])
            moving = _spectrum(
                _warp(stack[i], alpha_deg, _rotate_xy(alpha_deg, guess[None])[0], stretch_x=k),
                reg,
            )
            d, correlation[i] = _register(anchor_view, moving, reg)
            q[i] = [k * (q[anchor, 0] - d[0]), q[anchor, 1] - d[1]]
            if correlation[i] >= reg.min_correlation:
                anchor = i
                aligned = _warp(stack[i], alpha_deg, _rotate_xy(alpha_deg, q[i][None])[0])
                anchor_view = _spectrum(aligned, reg)
    return q, correlation


def _check_registered(
    correlation: np.ndarray, reg: _Registration, image_shape: tuple[int, int]
) -> np.ndarray:
    """The registered views (``correlation >= min_correlation``), at least two of them.

    Raises
    ------
    RegistrationFailed
        Fewer than 2 views register; the message gives the threshold and the correlations.
    """
    registered = correlation >= reg.min_correlation
    if registered.sum() < 2:
        ny, nx = image_shape
        raise RegistrationFailed(
            f"fewer than 2 of {len(correlation)} views correlate with their neighbours above "
            f"{reg.min_correlation:.3f} (the larger of min_correlation and what noise reaches "
            f"by chance in {nx} x {ny} px working images); "
            f"correlations {np.round(correlation, 3).tolist()}; check the reference channel"
        )
    return registered


def _fill_unregistered(
    q: np.ndarray, angles_deg: np.ndarray, registered: np.ndarray
) -> np.ndarray:
    """Replace the translations of unregistered views by interpolation in angle."""
    if registered.all():
        return q
    q = q.copy()
    for axis in range(2):
        q[~registered, axis] = np.interp(
            angles_deg[~registered], angles_deg[registered], q[registered, axis]
        )
    return q
