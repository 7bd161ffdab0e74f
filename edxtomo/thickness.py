"""Spherical shell-thickness maps of one particle, and their equal-area statistics.

Rays leave the particle's centre in every direction of a (theta, phi) grid. Theta is the
latitude, from -90 to 90 degrees inclusive; phi the longitude, in [0, 360). The direction of
``(theta, phi)`` in volume coordinates ``(z, y, x)`` is
``(sin theta, cos theta sin phi, cos theta cos phi)``, the convention the simulator uses.

Each element's volume is sampled along every ray by trilinear interpolation, at a step well
under one voxel. Where the sampled profile is above a threshold, the element is present. The
crossings of the threshold are located between samples by linear interpolation. The thickness
along a ray is the total length of the intervals above the threshold; the inner radius is the
first entry and the outer radius the last exit.

The default threshold is half of the element's level in that particle: a reconstruction
blurs a sharp boundary by a roughly symmetric point-spread function, and a symmetric blur of
a step crosses half of the step's height exactly at the step. A half-maximum edge therefore
keeps the true boundary of any shell thicker than the blur, whatever the blur's width.

Statistics weight each direction by its solid angle, so that they are means over the
sphere's surface and not over the (theta, phi) grid, which crowds rays at the poles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.particles import PARTICLE_CENTER, particle_regions
from edxtomo.statistics import INTERVAL_OK, INTERVAL_TOO_FEW, mean_interval

log = logging.getLogger(__name__)

THICKNESS_COLUMNS = (
    "thickness_mean_nm",
    "thickness_std_nm",
    "thickness_cv",
    "thickness_median_nm",
    "thickness_p05_nm",
    "thickness_p95_nm",
    "no_shell_fraction",
    "inner_radius_mean_nm",
    "outer_radius_mean_nm",
)
ROW_COLUMNS = (
    "particle",
    "element",
    *THICKNESS_COLUMNS,
    "element_level",
    "threshold_level",
    "center",
    "equivalent_diameter_nm",
    "sphericity",
    "flag",
)
FLAG_OK = "ok"
FLAG_TOUCHES_BORDER = "touches_border"
FLAG_ELEMENT_ABSENT = "element_absent"
FLAG_NO_PARTICLES = "no_particles"
SUMMARY_METRICS = (*THICKNESS_COLUMNS, "equivalent_diameter_nm", "sphericity")

# Trilinear interpolation mixes the 8 voxels around a point, so a sample above a positive
# threshold lies within sqrt(3) voxels of a voxel above it.
_TRILINEAR_REACH_VOX = np.sqrt(3.0)


@dataclass(frozen=True)
class ShellMaps:
    """Result of :func:`shell_thickness`; unpacks as ``thickness, inner, outer``.

    Attributes
    ----------
    thickness_nm : ndarray, shape (n_theta, n_phi)
        Total length in nm of the intervals above the threshold along each ray; 0 where the
        ray meets no shell.
    inner_radius_nm, outer_radius_nm : ndarray, shape (n_theta, n_phi)
        Distance in nm from the centre to the first entry and the last exit; NaN where the ray
        meets no shell. An element present at the centre (a core) has an inner radius of 0.
    theta_deg : ndarray, shape (n_theta,)
        Latitudes, -90 to 90 inclusive.
    phi_deg : ndarray, shape (n_phi,)
        Longitudes in [0, 360).
    reference_level : float
        The element's level in the particle, in volume units (see :func:`shell_thickness`);
        computed with an absolute threshold too.
    threshold_level : float
        The threshold actually applied, in volume units.
    """

    thickness_nm: np.ndarray
    inner_radius_nm: np.ndarray
    outer_radius_nm: np.ndarray
    theta_deg: np.ndarray
    phi_deg: np.ndarray
    reference_level: float
    threshold_level: float

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.thickness_nm, self.inner_radius_nm, self.outer_radius_nm))


def sphere_grid(step_deg: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The (theta, phi) grid of the ray directions.

    Parameters
    ----------
    step_deg : float
        Angular step in degrees; 180 / step_deg must be an integer.

    Returns
    -------
    theta_deg : ndarray, shape (180 / step_deg + 1,)
        Latitudes from -90 to 90 degrees inclusive.
    phi_deg : ndarray, shape (360 / step_deg,)
        Longitudes from 0 (inclusive) to 360 (exclusive).
    """
    n_half = 180.0 / step_deg
    if step_deg <= 0 or not np.isclose(n_half, round(n_half)):
        raise ValueError(f"step_deg must divide 180 degrees, got {step_deg}")
    n_half = int(round(n_half))
    theta_deg = np.linspace(-90.0, 90.0, n_half + 1)
    phi_deg = np.arange(2 * n_half) * (360.0 / (2 * n_half))
    return theta_deg, phi_deg


def ray_directions(theta_deg: np.ndarray, phi_deg: np.ndarray) -> np.ndarray:
    """Unit vectors ``(z, y, x) = (sin t, cos t sin p, cos t cos p)``, shape (n_theta, n_phi, 3)."""
    theta, phi = np.meshgrid(np.deg2rad(theta_deg), np.deg2rad(phi_deg), indexing="ij")
    return np.stack(
        [np.sin(theta), np.cos(theta) * np.sin(phi), np.cos(theta) * np.cos(phi)], axis=-1
    )


def solid_angle_weights(n_theta: int, n_phi: int) -> np.ndarray:
    """Solid-angle fraction of each cell of the inclusive (theta, phi) grid; sums to 1.

    The cell of latitude ``theta_i`` spans ``theta_i +- step/2``, clipped to [-90, 90], and
    carries ``(sin(top) - sin(bottom)) / 2 / n_phi`` of the sphere. Inside the grid that is
    proportional to ``cos(theta_i)``; the pole rows get the caps of half-angle ``step/2``
    (``(1 - cos(step/2)) / 2``), not the zero that a bare ``cos(theta)`` would give.

    Returns
    -------
    ndarray, shape (n_theta, n_phi)
    """
    step = np.pi / (n_theta - 1)
    centres = np.linspace(-np.pi / 2, np.pi / 2, n_theta)
    top = np.minimum(centres + step / 2, np.pi / 2)
    bottom = np.maximum(centres - step / 2, -np.pi / 2)
    row = (np.sin(top) - np.sin(bottom)) / 2.0 / n_phi
    return np.repeat(row[:, None], n_phi, axis=1)


def weighted_quantile(
    values: np.ndarray, weights: np.ndarray, q: float | Sequence[float]
) -> np.ndarray:
    """Quantiles of ``values`` under ``weights`` (NaN values are ignored).

    Each value sits at the midpoint of its cumulative weight, and the quantile function
    interpolates linearly between them: with equal weights this is the Hazen definition
    (``numpy.percentile(..., method="hazen")``).

    Parameters
    ----------
    values, weights : ndarray
        Same shape; weights non-negative.
    q : float or sequence of float
        Quantiles in [0, 1].

    Returns
    -------
    ndarray
        One value per quantile (NaN when no value has a positive weight).
    """
    values = np.asarray(values, dtype=float).ravel()
    weights = np.asarray(weights, dtype=float).ravel()
    keep = np.isfinite(values) & (weights > 0)
    q = np.atleast_1d(np.asarray(q, dtype=float))
    if not keep.any():
        return np.full(q.shape, np.nan)
    order = np.argsort(values[keep])
    v, w = values[keep][order], weights[keep][order]
    cumulative = (np.cumsum(w) - w / 2.0) / w.sum()
    return np.interp(q, cumulative, v)


def shell_thickness(
    volume: np.ndarray,
    center_vox: Sequence[float],
    voxel_size_nm: float,
    step_deg: float = 1.0,
    threshold: float = 0.5,
    *,
    absolute: bool = False,
    reference_quantile: float = 0.9,
    sample_step_vox: float = 0.2,
    max_radius_vox: float | None = None,
    chunk_samples: int = 4_000_000,
) -> ShellMaps:
    """Thickness, inner and outer radius of an element's shell along rays from a centre.

    Parameters
    ----------
    volume : ndarray, shape (nz, ny, nx)
        One element's volume, best cropped to one particle with other particles zeroed
        (:func:`particle_shell_maps` does that). Outside the volume the value is 0.
    center_vox : sequence of 3 float
        Ray origin ``(z, y, x)`` in voxel indices (sub-voxel allowed).
    voxel_size_nm : float
        Isotropic voxel size in nm.
    step_deg : float
        Angular step of the grid (:func:`sphere_grid`).
    threshold : float
        With ``absolute=False`` (default), the fraction of the element's level in the particle
        above which the element is present: 0.5 puts the edge at half maximum, which is the
        true boundary of a step blurred by any symmetric point-spread function. The level is
        the solid-angle weighted ``reference_quantile`` of the maxima along the rays.
        With ``absolute=True``, the threshold in volume units.
    absolute : bool
        Interpret ``threshold`` in volume units.
    reference_quantile : float
        Quantile of the per-ray maxima that defines the level. The default 0.9 reads the level
        on the thick parts of a shell: thin parts (whose blurred peak is lower) and holes
        covering up to 90% of the sphere do not lower it, and hot spots covering under 10% of
        the directions do not raise it.
    sample_step_vox : float
        Radial sampling step in voxels.
    max_radius_vox : float, optional
        Longest ray in voxels; default: far enough to pass every positive voxel.
    chunk_samples : int
        Samples interpolated per batch, to bound memory (about 40 bytes each).

    Returns
    -------
    ShellMaps
        Thickness, inner and outer radius maps in nm, each ``(n_theta, n_phi)``; unpacks as
        ``thickness_nm, inner_radius_nm, outer_radius_nm``. With no shell at all (a relative
        threshold on a level of 0) the thickness is 0 and the radii NaN everywhere, and a
        warning is logged.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"volume must be (nz, ny, nx), got shape {volume.shape}")
    center = np.asarray(center_vox, dtype=float)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise ValueError(f"center_vox must be 3 finite (z, y, x) coordinates, got {center_vox}")
    if not voxel_size_nm > 0:
        raise ValueError(f"voxel_size_nm must be positive, got {voxel_size_nm}")
    if not sample_step_vox > 0:
        raise ValueError(f"sample_step_vox must be positive, got {sample_step_vox}")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    theta_deg, phi_deg = sphere_grid(step_deg)
    n_theta, n_phi = theta_deg.size, phi_deg.size
    weights = solid_angle_weights(n_theta, n_phi).ravel()

    if max_radius_vox is None:
        max_radius_vox = _support_radius(volume, center)
    radii = np.arange(0.0, max_radius_vox + sample_step_vox, sample_step_vox)
    profiles = _ray_profiles(
        volume, center, ray_directions(theta_deg, phi_deg).reshape(-1, 3), radii, chunk_samples
    )

    reference = float(weighted_quantile(profiles.max(axis=1), weights, reference_quantile)[0])
    level = float(threshold) if absolute else threshold * reference
    shape = (n_theta, n_phi)
    if not level > 0:
        log.warning(
            "no shell: the threshold level is %.3g (reference level %.3g); thickness set to 0",
            level, reference,
        )
        nan = np.full(shape, np.nan)
        return ShellMaps(np.zeros(shape), nan, nan.copy(), theta_deg, phi_deg, reference, level)
    n_rays = profiles.shape[0]
    thickness, inner, outer = np.empty(n_rays), np.empty(n_rays), np.empty(n_rays)
    rays_per_chunk = max(1, chunk_samples // radii.size)
    for start in range(0, n_rays, rays_per_chunk):
        part = slice(start, start + rays_per_chunk)
        thickness[part], inner[part], outer[part] = _intervals(profiles[part], radii, level)
    return ShellMaps(
        thickness.reshape(shape) * voxel_size_nm,
        inner.reshape(shape) * voxel_size_nm,
        outer.reshape(shape) * voxel_size_nm,
        theta_deg,
        phi_deg,
        reference,
        level,
    )


def _support_radius(volume: np.ndarray, center: np.ndarray) -> float:
    """Distance from ``center`` past which every sample of a positive threshold is zero."""
    positive = np.argwhere(volume > 0)
    if positive.size == 0:
        return 1.0
    farthest = np.sqrt(((positive - center) ** 2).sum(axis=1)).max()
    return float(farthest + _TRILINEAR_REACH_VOX)


def _ray_profiles(
    volume: np.ndarray,
    center: np.ndarray,
    directions: np.ndarray,
    radii: np.ndarray,
    chunk_samples: int,
) -> np.ndarray:
    """Trilinear samples of ``volume`` at ``center + r * direction``: (n_rays, n_radii)."""
    n_rays = directions.shape[0]
    profiles = np.empty((n_rays, radii.size), dtype=np.float32)
    rays_per_chunk = max(1, chunk_samples // radii.size)
    for start in range(0, n_rays, rays_per_chunk):
        d = directions[start : start + rays_per_chunk]
        coords = center[:, None, None] + d.T[:, :, None] * radii[None, None, :]
        profiles[start : start + d.shape[0]] = ndi.map_coordinates(
            volume, coords.reshape(3, -1), order=1, mode="constant", cval=0.0
        ).reshape(d.shape[0], radii.size)
    return profiles


def _intervals(
    profiles: np.ndarray, radii: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Total length, first entry and last exit (voxels) of the runs above ``level``.

    Crossings between two samples are placed by linear interpolation. A ray above the level
    at its origin enters at 0; a ray still above it at its last sample exits there.
    """
    above = profiles > level
    n_rays = profiles.shape[0]
    p0, p1 = profiles[:, :-1].astype(float), profiles[:, 1:].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = radii[:-1] + (radii[1] - radii[0]) * (level - p0) / (p1 - p0)
    # entries[:, k]: the run that starts at radius index k; exits[:, k]: the run that ends
    # after index k.
    entries = np.zeros_like(above)
    entries[:, 0] = above[:, 0]
    entries[:, 1:] = above[:, 1:] & ~above[:, :-1]
    exits = np.zeros_like(above)
    exits[:, :-1] = above[:, :-1] & ~above[:, 1:]
    exits[:, -1] = above[:, -1]
    entry_r = np.zeros(above.shape)
    entry_r[:, 1:] = np.where(entries[:, 1:], crossing, 0.0)
    exit_r = np.full(above.shape, radii[-1])
    exit_r[:, :-1] = np.where(exits[:, :-1], crossing, 0.0)
    thickness = (exit_r * exits).sum(axis=1) - (entry_r * entries).sum(axis=1)
    has_shell = entries.any(axis=1)
    rows = np.arange(n_rays)
    first = entries.argmax(axis=1)
    last = above.shape[1] - 1 - exits[:, ::-1].argmax(axis=1)
    inner = np.where(has_shell, entry_r[rows, first], np.nan)
    outer = np.where(has_shell, exit_r[rows, last], np.nan)
    return thickness, inner, outer


def shell_statistics(maps: ShellMaps, min_thickness_nm: float = 0.0) -> dict[str, float]:
    """Solid-angle weighted statistics of one thickness map.

    Directions with no shell count as thickness 0 in the thickness statistics (as in the
    map), so a patchy shell has a lower mean and a higher CV than a complete one; their share
    is ``no_shell_fraction``. The radii are averaged over the directions with a shell.

    Parameters
    ----------
    maps : ShellMaps
        From :func:`shell_thickness`.
    min_thickness_nm : float
        A direction whose thickness is at most this counts as having no shell.

    Returns
    -------
    dict
        The :data:`THICKNESS_COLUMNS`: ``thickness_mean_nm``, ``thickness_std_nm``,
        ``thickness_cv`` (std / mean, NaN for a zero mean), ``thickness_median_nm``,
        ``thickness_p05_nm``, ``thickness_p95_nm`` (weighted), ``no_shell_fraction`` (of the
        sphere's solid angle), ``inner_radius_mean_nm``, ``outer_radius_mean_nm`` (NaN when
        no direction has a shell).
    """
    t = maps.thickness_nm
    w = solid_angle_weights(*t.shape)
    mean = float((w * t).sum())
    std = float(np.sqrt((w * (t - mean) ** 2).sum()))
    median, p05, p95 = weighted_quantile(t, w, [0.5, 0.05, 0.95])
    shell = t > min_thickness_nm
    shell_weight = float(w[shell].sum())
    return {
        "thickness_mean_nm": mean,
        "thickness_std_nm": std,
        "thickness_cv": std / mean if mean > 0 else np.nan,
        "thickness_median_nm": float(median),
        "thickness_p05_nm": float(p05),
        "thickness_p95_nm": float(p95),
        "no_shell_fraction": float(w[~shell].sum()),
        "inner_radius_mean_nm": _masked_mean(maps.inner_radius_nm, w, shell, shell_weight),
        "outer_radius_mean_nm": _masked_mean(maps.outer_radius_nm, w, shell, shell_weight),
    }


def _masked_mean(values: np.ndarray, w: np.ndarray, mask: np.ndarray, total: float) -> float:
    return float((w[mask] * values[mask]).sum() / total) if total > 0 else np.nan


def sinusoidal_projection(
    map_2d: np.ndarray, n_x: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample a (theta, phi) map onto the sinusoidal (equal-area) projection.

    The point at latitude theta and longitude phi goes to ``x = (phi - 180) cos(theta)``,
    ``y = theta``; equal areas on the sphere get equal areas in the image, and the map is an
    ellipse-like lens with NaN outside. Each row is resampled by periodic linear
    interpolation in phi.

    Parameters
    ----------
    map_2d : ndarray, shape (n_theta, n_phi)
        A map on the :func:`sphere_grid` (theta -90 to 90, phi from 0).
    n_x : int, optional
        Image columns; default ``n_phi``.

    Returns
    -------
    image : ndarray, shape (n_theta, n_x)
        Row i is latitude ``theta_deg[i]`` (south pole first); NaN outside the projection.
    theta_deg : ndarray, shape (n_theta,)
    x_deg : ndarray, shape (n_x,)
        Column centres in degrees of longitude at the equator, in (-180, 180).
    """
    n_theta, n_phi = map_2d.shape
    theta_deg, phi_deg = sphere_grid(180.0 / (n_theta - 1))
    n_x = n_phi if n_x is None else n_x
    dx = 360.0 / n_x
    x_deg = -180.0 + dx * (np.arange(n_x) + 0.5)
    cos_t = np.cos(np.deg2rad(theta_deg))[:, None]
    half_width = np.maximum(180.0 * cos_t, dx / 2)  # the pole rows keep their centre pixel
    inside = np.abs(x_deg)[None, :] <= half_width
    with np.errstate(divide="ignore"):
        phi = np.where(inside, 180.0 + x_deg[None, :] / np.maximum(cos_t, 1e-12), 0.0)
    position = (phi / (360.0 / n_phi)) % n_phi
    left = np.floor(position).astype(int) % n_phi
    frac = position - np.floor(position)
    rows = np.arange(n_theta)[:, None]
    image = (1 - frac) * map_2d[rows, left] + frac * map_2d[rows, (left + 1) % n_phi]
    return np.where(inside, image, np.nan), theta_deg, x_deg


def thickness_histogram(
    thickness_nm: np.ndarray, bins: int | np.ndarray = 30
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of a thickness map by solid angle.

    Parameters
    ----------
    thickness_nm : ndarray, shape (n_theta, n_phi)
    bins : int or ndarray
        Number of bins over ``[0, max]``, or the bin edges in nm.

    Returns
    -------
    fraction : ndarray, shape (n_bins,)
        Fraction of the sphere's solid angle in each bin (sums to 1 over the range).
    edges_nm : ndarray, shape (n_bins + 1,)
    """
    w = solid_angle_weights(*thickness_nm.shape)
    if np.ndim(bins) == 0:
        top = float(np.nanmax(thickness_nm)) if np.any(thickness_nm > 0) else 1.0
        bins = np.linspace(0.0, top, int(bins) + 1)
    return np.histogram(thickness_nm, bins=bins, weights=w)


def particle_center(
    volumes: Mapping[str, np.ndarray], mask: np.ndarray, center: str = PARTICLE_CENTER
) -> np.ndarray:
    """Centre of a particle in voxel coordinates, from its mask or one element.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
        Element volumes (cropped like ``mask``).
    mask : ndarray of bool, shape (nz, ny, nx)
        The particle's voxels.
    center : str
        ``"particle"``: centroid of ``mask``. An element symbol (``"In"`` for the core,
        ``"Se"`` for the first shell): centroid of that element inside the mask, weighted by
        its value, over the voxels above half of its 99th percentile there (so background
        inside the mask does not pull the centre towards the mask's centroid).

    Returns
    -------
    ndarray, shape (3,)
        ``(z, y, x)`` in voxel indices.
    """
    if not mask.any():
        raise ValueError("the particle mask is empty")
    if center == PARTICLE_CENTER:
        return np.argwhere(mask).mean(axis=0)
    if center not in volumes:
        raise EdxtomoInputError(
            f"centre element {center!r} is not among the volumes {sorted(volumes)}"
        )
    values = np.where(mask, np.clip(volumes[center], 0.0, None), 0.0)
    level = np.percentile(values[mask], 99)
    if not level > 0:
        log.warning("centre element %s is absent from the particle; using its mask", center)
        return np.argwhere(mask).mean(axis=0)
    values = np.where(values > level / 2, values, 0.0)
    return np.asarray(ndi.center_of_mass(values), dtype=float)


def particle_shell_maps(
    volumes: Mapping[str, np.ndarray],
    regions: np.ndarray,
    labels: np.ndarray,
    particle: int,
    voxel_size_nm: float,
    *,
    elements: Sequence[str] | None = None,
    center: str = PARTICLE_CENTER,
    **options,
) -> tuple[dict[str, ShellMaps], np.ndarray]:
    """Shell maps of every element of one particle.

    Each element volume is cropped to the particle's region (its label grown by a margin,
    :func:`edxtomo.particles.particle_regions`) and zeroed outside it, so rays never reach a
    neighbour.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
    regions : ndarray of int, shape (nz, ny, nx)
        Particle regions from :func:`edxtomo.particles.particle_regions`.
    labels : ndarray of int, shape (nz, ny, nx)
        The segmentation, for the centre of the particle.
    particle : int
        Label of the particle.
    voxel_size_nm : float
    elements : sequence of str, optional
        Elements to measure; default all of ``volumes``.
    center : str
        See :func:`particle_center`.
    **options
        Passed to :func:`shell_thickness` (``step_deg``, ``threshold``, ...).

    Returns
    -------
    maps : dict of str to ShellMaps
    center_vox : ndarray, shape (3,)
        The centre in voxel indices of the full volume.
    """
    elements = list(elements) if elements is not None else list(volumes)
    region = regions == particle
    box = ndi.find_objects(region.astype(np.int8))[0]
    offset = np.array([s.start for s in box], dtype=float)
    inside = region[box]
    cropped = {
        name: np.where(inside, np.asarray(vol, dtype=np.float32)[box], np.float32(0))
        for name, vol in volumes.items()
        if name in elements or name == center
    }
    center_vox = particle_center(cropped, labels[box] == particle, center)
    maps = {
        name: shell_thickness(cropped[name], center_vox, voxel_size_nm, **options)
        for name in elements
    }
    return maps, center_vox + offset


def particle_thickness_table(
    volumes: Mapping[str, np.ndarray],
    labels: np.ndarray,
    particles: pd.DataFrame,
    voxel_size_nm: float,
    *,
    elements: Sequence[str] | None = None,
    center: str = PARTICLE_CENTER,
    margin_vox: int = 3,
    min_thickness_nm: float = 0.0,
    absent_fraction: float = 0.2,
    **options,
) -> tuple[pd.DataFrame, dict[tuple[int, str], ShellMaps]]:
    """One row of shell statistics per particle and element, with a flag column.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
        Element volumes of one specimen.
    labels : ndarray of int, shape (nz, ny, nx)
        Segmentation from :func:`edxtomo.particles.segment_particles`.
    particles : DataFrame
        Its particle table (:data:`edxtomo.particles.PARTICLE_COLUMNS`).
    voxel_size_nm : float
    elements : sequence of str, optional
        Elements to measure; default all of ``volumes``.
    center : str
        ``"particle"`` or an element symbol, see :func:`particle_center`.
    margin_vox : int
        Voxels by which each particle's region extends beyond its label.
    min_thickness_nm : float
        See :func:`shell_statistics`.
    absent_fraction : float
        An element whose level in a particle is below this fraction of its highest level
        over all particles is absent from that particle: its thickness statistics are NaN
        (a relative threshold on noise would measure noise) and its ``no_shell_fraction`` 1.
    **options
        Passed to :func:`shell_thickness` (``step_deg``, ``threshold``, ``absolute``, ...).

    Returns
    -------
    rows : DataFrame
        :data:`ROW_COLUMNS`. ``flag`` is ``ok``, or ``;``-joined ``touches_border`` (the
        particle is cut by the volume's edge: its shell may be truncated) and
        ``element_absent``. With no particle, one row per element flagged ``no_particles``
        with NaN statistics.
    maps : dict of (int, str) to ShellMaps
        The maps behind each row, keyed by (particle, element).
    """
    elements = list(elements) if elements is not None else list(volumes)
    missing = [name for name in elements if name not in volumes]
    if missing:
        raise EdxtomoInputError(f"no volume for element(s) {missing}; have {sorted(volumes)}")
    if particles.empty:
        log.warning("no particles: the thickness table holds one flagged row per element")
        return _no_particle_rows(elements, center), {}

    regions = particle_regions(labels, margin_vox)
    all_maps: dict[tuple[int, str], ShellMaps] = {}
    numbers = particles["particle"].astype(int)
    for particle in tqdm(numbers, desc="shell thickness", unit="particle"):
        maps, center_vox = particle_shell_maps(
            volumes, regions, labels, particle, voxel_size_nm,
            elements=elements, center=center, **options,
        )
        all_maps.update({(particle, name): m for name, m in maps.items()})
        log.info("particle %d: centre (z, y, x) = %s vox", particle, np.round(center_vox, 2))

    rows = []
    highest = {
        name: max(all_maps[(p, name)].reference_level for p in particles["particle"])
        for name in elements
    }
    for record in particles.to_dict("records"):
        particle = int(record["particle"])
        for name in elements:
            maps = all_maps[(particle, name)]
            flags = [FLAG_TOUCHES_BORDER] if record["touches_border"] else []
            absent = not maps.reference_level > absent_fraction * highest[name]
            if absent:
                flags.append(FLAG_ELEMENT_ABSENT)
                log.warning("particle %d: element %s is absent (level %.3g, highest %.3g)",
                            particle, name, maps.reference_level, highest[name])
                stats = dict.fromkeys(THICKNESS_COLUMNS, np.nan) | {"no_shell_fraction": 1.0}
            else:
                stats = shell_statistics(maps, min_thickness_nm)
                log.info("particle %d, %s: thickness %.2f +- %.2f nm, no shell on %.1f%%",
                         particle, name, stats["thickness_mean_nm"], stats["thickness_std_nm"],
                         100 * stats["no_shell_fraction"])
            if record["touches_border"]:
                log.warning("particle %d touches the volume's border", particle)
            rows.append({
                "particle": particle,
                "element": name,
                **stats,
                "element_level": maps.reference_level,
                "threshold_level": maps.threshold_level,
                "center": center,
                "equivalent_diameter_nm": record["equivalent_diameter_nm"],
                "sphericity": record["sphericity"],
                "flag": ";".join(flags) or FLAG_OK,
            })
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS)), all_maps


def _no_particle_rows(elements: Sequence[str], center: str) -> pd.DataFrame:
    rows = [
        dict.fromkeys(ROW_COLUMNS, np.nan)
        | {"element": name, "center": center, "flag": FLAG_NO_PARTICLES}
        for name in elements
    ]
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS)).astype({"particle": "Int64"})


def stack_shell_maps(maps: Mapping[tuple[int, str], ShellMaps]) -> dict[str, np.ndarray]:
    """The maps of :func:`particle_thickness_table` as arrays, e.g. for ``numpy.savez``.

    Returns
    -------
    dict
        ``particle`` (n_particle,) int, ``element`` (n_element,) str, ``theta_deg``
        (n_theta,), ``phi_deg`` (n_phi,), and ``thickness_nm``, ``inner_radius_nm``,
        ``outer_radius_nm``, each (n_particle, n_element, n_theta, n_phi), NaN where a
        (particle, element) pair has no map. Empty maps give zero-length arrays.
    """
    particles = sorted({p for p, _ in maps})
    elements = list(dict.fromkeys(e for _, e in maps))
    first = next(iter(maps.values()), None)
    theta_deg, phi_deg = (first.theta_deg, first.phi_deg) if first else sphere_grid(1.0)
    shape = (len(particles), len(elements), theta_deg.size, phi_deg.size)
    arrays: dict[str, np.ndarray] = {
        "particle": np.asarray(particles, dtype=np.int64),
        "element": np.asarray(elements, dtype=str),
        "theta_deg": theta_deg,
        "phi_deg": phi_deg,
    }
    for name in ("thickness_nm", "inner_radius_nm", "outer_radius_nm"):
        stacked = np.full(shape, np.nan)
        for (particle, element), m in maps.items():
            stacked[particles.index(particle), elements.index(element)] = getattr(m, name)
        arrays[name] = stacked
    return arrays


def summarize_samples(
    rows: pd.DataFrame,
    by: Sequence[str] = ("sample", "method", "element"),
    include_flags: Sequence[str] = (FLAG_OK,),
) -> pd.DataFrame:
    """Per-sample summaries over particles: mean and spread of each particle statistic.

    Parameters
    ----------
    rows : DataFrame
        Concatenated :func:`particle_thickness_table` rows with the ``by`` columns added.
    by : sequence of str
        Grouping columns (those absent from ``rows`` are skipped).
    include_flags : sequence of str
        Rows whose ``flag`` is one of these enter the statistics; the others are counted in
        ``n_excluded``.

    Returns
    -------
    DataFrame
        One row per group: the ``by`` columns, ``n_particles`` (rows used), ``n_excluded``,
        ``interval_flag`` (``ok``, or ``fewer_than_2_particles`` when no interval can be
        given), then for every metric ``m`` of :data:`SUMMARY_METRICS`, ``mean_m`` (mean
        over particles), ``mean_ci95_low_m`` and ``mean_ci95_high_m`` (Student t 95%
        interval of that mean, ``n - 1`` degrees of freedom, from
        :func:`edxtomo.statistics.mean_interval`; NaN for fewer than two particles with a
        finite value) and ``sd_m`` (sample standard deviation over particles, NaN for fewer
        than two). A group with no usable particle has NaN statistics.
    """
    keys = [key for key in by if key in rows.columns]
    if not keys:
        raise ValueError(f"none of the grouping columns {list(by)} is in the table")
    used = rows["flag"].isin(list(include_flags))
    records = []
    for group, frame in rows.groupby(keys, sort=True, dropna=False):
        good = frame[used.loc[frame.index]]
        record = dict(zip(keys, group, strict=True))
        record["n_particles"] = len(good)
        record["n_excluded"] = int(frame["particle"].notna().sum()) - len(good)
        record["interval_flag"] = INTERVAL_OK if len(good) > 1 else INTERVAL_TOO_FEW
        for metric in SUMMARY_METRICS:
            values = good[metric].astype(float)
            mean, low, high = mean_interval(values.to_numpy())
            record[f"mean_{metric}"] = mean
            record[f"mean_ci95_low_{metric}"] = low
            record[f"mean_ci95_high_{metric}"] = high
            record[f"sd_{metric}"] = values.std(ddof=1) if len(good) > 1 else np.nan
        records.append(record)
    return pd.DataFrame(records)
