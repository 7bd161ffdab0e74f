"""The sphere of ray directions: the (theta, phi) grid and its solid-angle weights.

Theta is the latitude, from -90 to 90 degrees inclusive; phi the longitude, in [0, 360). The
direction of ``(theta, phi)`` in volume coordinates ``(z, y, x)`` is
``(sin theta, cos theta sin phi, cos theta cos phi)``, the convention the simulator uses.
Statistics weight each direction by its solid angle, so that they are means over the
sphere's surface and not over the grid, which crowds rays at the poles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AUTO_RAY_SPACING_VOX = 0.5
"""Largest spacing (voxels) of neighbouring rays on the largest particle's surface, ``auto``."""

FINEST_AUTO_STEP_DEG = 1.0
"""``auto`` never samples finer than this: rays 1.7 voxels apart at a radius of 100 voxels."""


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


def ray_step_deg(step_deg: float | str, radius_vox: float) -> float:
    """The angular step of the rays: ``step_deg`` itself, or the step that ``"auto"`` means.

    ``"auto"`` is the coarsest step of ``180 / n`` degrees that puts neighbouring rays at
    most :data:`AUTO_RAY_SPACING_VOX` apart where they leave a sphere of ``radius_vox``,
    and never finer than :data:`FINEST_AUTO_STEP_DEG`. A reconstruction holds no detail
    finer than 2 voxels (its Nyquist period), so rays half a voxel apart on the outermost
    surface sample every shell at least four times per resolvable period; a 1-degree grid
    samples a 10-voxel particle about three times finer than that, at eight times the cost.

    Parameters
    ----------
    step_deg : float or "auto"
        The ``analyze.step_deg`` option.
    radius_vox : float
        Radius of the largest particle (voxels); ``inf`` gives the finest step ``auto``
        takes.

    Returns
    -------
    float
        Degrees; 180 divided by it is an integer.
    """
    if step_deg != "auto":
        return float(step_deg)
    n_half = np.ceil(np.pi * radius_vox / AUTO_RAY_SPACING_VOX)  # inf for an infinite radius
    return max(180.0 / max(n_half, 1.0), FINEST_AUTO_STEP_DEG)


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
