"""Equal-area statistics of a thickness map, its sinusoidal projection and its histogram."""

from __future__ import annotations

import numpy as np

from edxtomo.thickness.rays import ShellMaps
from edxtomo.thickness.sphere import solid_angle_weights, sphere_grid, weighted_quantile

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
