"""A light, in-memory simulation: element count maps at a chosen dose, with no spectra.

:func:`simulate_acquisition` writes Velox files with whole spectra, which the extract stage
turns back into maps. Planning and the benchmarks need many specimens and doses, so this
module skips the spectra: :func:`phantom_volumes` draws and voxelises a preset's particles,
and :func:`count_series` projects them and draws Poisson counts straight into a
:class:`~edxtomo.io.TiltSeries` (gross window counts and the background under each line),
as the extract stage would deliver them. There is no stage drift: the series is aligned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edxtomo.io import HAADF, TiltSeries
from edxtomo.io.xray import atomic_number
from edxtomo.simulate.acquisition import HAADF_Z_EXPONENT
from edxtomo.simulate.phantoms import voxelize
from edxtomo.simulate.placement import build_specimen

HAADF_PEAK_ELECTRONS = 2000.0
"""Mean detected HAADF electrons at the brightest projected pixel."""
HAADF_BACKGROUND_ELECTRONS = 20.0
"""Mean HAADF electrons per pixel from the support film and the detector."""


def phantom_volumes(
    spec: Mapping[str, Any],
    volume_shape: tuple[int, int, int],
    tilt_max_deg: float,
    rng: np.random.Generator,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Draw, place and voxelise the particles of a specimen preset.

    Parameters
    ----------
    spec : mapping
        A parsed preset (``resources/specimens/*.yaml``): its ``specimen``,
        ``voxel_size_nm`` and ``supersample`` are read.
    volume_shape : (nz, ny, nx)
        Volume in voxels.
    tilt_max_deg : float
        Largest absolute tilt (deg): every particle stays in the field up to it.
    rng : numpy.random.Generator

    Returns
    -------
    particles : list of dict
        The placed particles (:func:`edxtomo.simulate.build_specimen`), centres in nm from
        the volume centre.
    densities : dict of str to ndarray, each (nz, ny, nx) float32
        Number density of each element in atoms/nm^3.
    """
    voxel = float(spec["voxel_size_nm"])
    particles = build_specimen(spec["specimen"], volume_shape, voxel, tilt_max_deg, rng)
    densities = voxelize(particles, volume_shape, voxel, int(spec.get("supersample") or 3))
    return particles, densities


def count_series(
    densities: Mapping[str, np.ndarray],
    angles_deg: np.ndarray,
    voxel_size_nm: float,
    counts_per_tilt: float,
    rng: np.random.Generator,
    background_fraction: float = 0.3,
) -> tuple[TiltSeries, np.ndarray]:
    """Poisson count maps of every element at a dose, plus a HAADF, as an aligned series.

    Each element's noise-free projections are scaled so that its mean net counts per tilt
    are ``counts_per_tilt``. The background under each line carries ``background_fraction``
    of those counts, half flat (film, detector) and half following the projected mass
    (bremsstrahlung); the element channel holds the gross counts (net plus background)
    and ``series.background`` the expected background, as from the extract stage.

    Parameters
    ----------
    densities : mapping of str to ndarray, each (nz, ny, nx)
        Element number densities (:func:`phantom_volumes`), in the order of the channels.
    angles_deg : ndarray, shape (n_tilt,)
        Tilt angles in degrees.
    voxel_size_nm : float
        Voxel edge = pixel size (nm).
    counts_per_tilt : float
        Mean net X-ray counts per element and tilt.
    rng : numpy.random.Generator
        Draws the counts, element by element in order, then the HAADF.
    background_fraction : float
        Background counts under each line over its net counts.

    Returns
    -------
    series : TiltSeries
        Channels ``(n_tilt, ny, nx)``: int32 counts per element and a float32 HAADF.
    expected : ndarray, shape (n_element, n_tilt, ny, nx)
        The noise-free net counts.
    """
    from edxtomo.tomo import project

    elements = list(densities)
    angles_deg = np.asarray(angles_deg, dtype=float)
    expected = project(np.stack([densities[e] for e in elements]), angles_deg, device="cpu")
    expected *= counts_per_tilt / expected.sum(axis=(2, 3), keepdims=True).mean(axis=1,
                                                                              keepdims=True)
    mass = expected.sum(axis=0)
    mass_shape = mass / mass.sum(axis=(1, 2), keepdims=True)
    flat = np.full_like(mass_shape, 1.0 / mass_shape[0].size)
    background = background_fraction * counts_per_tilt * 0.5 * (flat + mass_shape)
    channels = {e: rng.poisson(mean + background).astype(np.int32)
                for e, mean in zip(elements, expected, strict=True)}
    contrast = sum(atomic_number(e) ** HAADF_Z_EXPONENT * densities[e] for e in elements)
    haadf = project(contrast, angles_deg, device="cpu")
    channels[HAADF] = rng.poisson(HAADF_PEAK_ELECTRONS * haadf / haadf.max()
                                  + HAADF_BACKGROUND_ELECTRONS).astype(np.float32)
    series = TiltSeries(channels, angles_deg, voxel_size_nm, {},
                        {e: background.astype(np.float32) for e in elements})
    return series, expected
