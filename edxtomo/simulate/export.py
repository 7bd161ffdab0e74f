"""Float maps as other software exports them, from simulated counts (issue 15's test case).

An export is not counts: the maps were aligned by interpolation, often filtered, and scaled
(counts per second, per dose, or arbitrary units). Interpolation and filtering correlate the
noise of neighbouring pixels, which is what the float path of the denoiser must survive.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from edxtomo.io import TiltSeries

EXPORT_SCALE = 0.37
"""Factor of the exported maps over the counts (counts per second, say): not a lattice the
denoiser could take for counts, since the filter comes first."""


def exported_floats(
    series: TiltSeries,
    expected: np.ndarray,
    rng: np.random.Generator,
    *,
    order: int = 1,
    sigma_px: float = 1.0,
    scale: float = EXPORT_SCALE,
) -> tuple[TiltSeries, TiltSeries, Callable[[np.ndarray], np.ndarray]]:
    """The float maps of an export by other software, and the raw counts they came from.

    The expected net counts and the background of ``series`` are moved into a raw frame by
    a random sub-pixel shift (+-1.5 px) and axis rotation (+-3 deg) per tilt; Poisson
    counts are drawn there; the alignment moves them back by ``scipy.ndimage``
    interpolation of ``order``; the background is removed, a Gaussian filter of
    ``sigma_px`` applied and the maps multiplied by ``scale``.

    Parameters
    ----------
    series : TiltSeries
        The aligned truth frame: its background per element and its HAADF.
    expected : ndarray, shape (n_element, n_tilt, ny, nx)
        Expected net counts, in the order of ``series.elements``.
    rng : numpy.random.Generator
        Draws the misalignment, then the counts.
    order : int
        Spline order of the alignment's interpolation.
    sigma_px : float
        Standard deviation of the export's Gaussian filter, pixels.
    scale : float
        Factor of the exported maps over the counts.

    Returns
    -------
    raw : TiltSeries
        The raw-frame counts (with their background and the HAADF), for the count path.
    floats : TiltSeries
        The exported maps (provenance ``counts: false``) and the aligned HAADF.
    align : callable
        The alignment of a raw-frame ``(n_tilt, ny, nx)`` stack.
    """
    n_tilt = len(series.angles_deg)
    shifts, angles = rng.uniform(-1.5, 1.5, (n_tilt, 2)), rng.uniform(-3, 3, n_tilt)

    def to_raw(stack):
        return np.stack([ndimage.shift(ndimage.rotate(view, -a, reshape=False, order=order),
                                       -s, order=order)
                         for view, a, s in zip(stack.astype(float), angles, shifts,
                                               strict=True)])

    def align(stack):
        return np.stack([ndimage.rotate(ndimage.shift(view, s, order=order), a, reshape=False,
                                        order=order)
                         for view, a, s in zip(stack.astype(float), angles, shifts,
                                               strict=True)])

    raw, floats, backgrounds = {}, {}, {}
    for element, mean in zip(series.elements, expected, strict=True):
        backgrounds[element] = to_raw(np.broadcast_to(series.background[element], mean.shape)
                                      ).astype(np.float32)
        raw[element] = rng.poisson(np.clip(to_raw(mean) + backgrounds[element], 0, None))
        aligned = align(raw[element]) - align(backgrounds[element])
        floats[element] = (ndimage.gaussian_filter(aligned, (0, sigma_px, sigma_px)) * scale
                           ).astype(np.float32)
    haadf = series.channels["HAADF"]
    raw_series = TiltSeries({e: c.astype(np.int32) for e, c in raw.items()}
                            | {"HAADF": to_raw(haadf).astype(np.float32)},
                            series.angles_deg, series.pixel_size_nm, {}, backgrounds)
    float_series = TiltSeries(floats | {"HAADF": haadf}, series.angles_deg,
                              series.pixel_size_nm, {"counts": False})
    return raw_series, float_series, align
