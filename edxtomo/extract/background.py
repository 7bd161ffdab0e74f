"""The background model: bremsstrahlung under each integration window, per tilt and pixel.

Background (``method="windows"``)
    The element channel holds the **gross** counts in the integration window: integers with
    their Poisson statistics (the deep stage splits them). The expected bremsstrahlung under
    the window goes to ``TiltSeries.background[element]`` and net counts are
    ``gross - background`` (:meth:`~edxtomo.io.TiltSeries.net_counts`). Per pixel, the
    background windows hold almost no counts at ~1000 counts per element per tilt, so the
    background is estimated with a low-noise model:

    1. From the spectrum summed over all pixels and tilts, the background under each
       integration window, ``B_e``: a straight line through the counts of its background
       channels on both sides, or, with channels on one side only, Kramers' continuum
       scaled to them (:func:`window_background`).
    2. Its ratio to the continuum counts ``C`` (the counts in the union of all background
       windows of the series): ``r_e = B_e / C``. The bremsstrahlung keeps its spectral
       shape from pixel to pixel and tilt to tilt; only its level varies.
    3. Per tilt and pixel, ``background = r_e * smooth(c)``, where ``c`` is the continuum
       count map of the tilt and ``smooth`` a Gaussian filter of ``background_sigma_px``
       that keeps its sum. The map sums to the tilt's continuum, so the totals per tilt are
       exact in expectation, and the smoothing removes most of the per-pixel noise.

    Background windows are ``"auto"``
    (:func:`~edxtomo.extract.windows.auto_background_windows`), explicit keV windows per
    element, or ``"none"`` (no subtraction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def window_background(
    spectrum: np.ndarray,
    integration: tuple[int, int],
    background: Sequence[tuple[int, int]],
    energy_keV: np.ndarray,
    beam_energy_keV: float,
) -> float:
    """Background counts under an integration window, from background windows of a spectrum.

    With background channels on both sides of the window, a straight line fitted (least
    squares) to their counts interpolates under the window. With channels on one side only,
    a fitted slope would extrapolate noise (and any weak line in the windows), so the
    continuum is taken to follow Kramers' law instead, counts per channel proportional to
    ``(E0 - E) / E``, scaled to the counts of the background channels. The result is summed
    over the integration channels, clipped at zero per channel.

    Parameters
    ----------
    spectrum : ndarray, shape (n_channel,)
    integration : (int, int)
        Channel range ``[start, stop)`` of the integration window.
    background : sequence of (int, int)
        Channel ranges of the background windows.
    energy_keV : ndarray, shape (n_channel,)
        Energy of each channel.
    beam_energy_keV : float
        ``E0`` of Kramers' law.
    """
    pieces = [np.arange(a, b) for a, b in background if b > a]
    if not pieces:
        return 0.0
    channels = np.concatenate(pieces)
    counts = np.asarray(spectrum, dtype=np.float64)[channels]
    target = np.arange(*integration)
    if channels.min() < integration[0] and channels.max() >= integration[1]:
        slope, intercept = np.polyfit(channels, counts, 1)
        line = intercept + slope * target
    else:
        kramers = (beam_energy_keV - energy_keV) / np.maximum(energy_keV, 1e-3)
        line = counts.sum() / kramers[channels].sum() * kramers[target]
    return float(np.clip(line, 0, None).sum())


def smooth_continuum(continuum: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-smoothed continuum map with its sum kept, float64 ``(ny, nx)``."""
    from scipy.ndimage import gaussian_filter

    continuum = np.asarray(continuum, dtype=np.float64)
    total = continuum.sum()
    if sigma_px <= 0 or total == 0:
        return continuum
    smooth = gaussian_filter(continuum, sigma_px, mode="reflect")
    return smooth * (total / smooth.sum())


def background_maps(
    ratios: Mapping[str, float], continuum: np.ndarray, sigma_px: float
) -> dict[str, np.ndarray]:
    """Expected background counts per pixel in each element's integration window.

    Parameters
    ----------
    ratios : mapping of str to float
        Per element, background counts under its window per continuum count, ``r_e``.
    continuum : ndarray, shape (n_tilt, ny, nx)
        Continuum counts (background windows) per tilt and pixel.
    sigma_px : float
        Gaussian smoothing of the continuum, in pixels.

    Returns
    -------
    dict of str to ndarray
        float32 ``(n_tilt, ny, nx)`` per element.
    """
    smooth = np.stack([smooth_continuum(c, sigma_px) for c in continuum])
    return {element: (ratio * smooth).astype(np.float32) for element, ratio in ratios.items()}
