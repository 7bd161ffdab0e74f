"""The aligned mean radial profile: ray profiles shifted onto a smooth shell radius.

The mean of the ray profiles averages the noise out, but a shell whose radius changes with
direction (an off-centre or elongated shell, the simulator's dipole and quadrupole) has its
peak at different radii on different rays, and their mean has a lower, wider peak: the
level read on it is low and the half-maximum reading too thick (an analytic 2-voxel shell
whose radius varies by 3 voxels +87%, a spherical one +51%, ``bench/README.md``). Here each
ray's profile is shifted by the shell's radius in its direction before the mean is taken.

The radius is read in three steps, each robust to noise:

1. The profiles are averaged over caps of neighbouring directions (a footprint of
   :data:`CAP_RADIUS_VOX` on the shell, and at least the ray grid's step), at the centres
   of a coarser grid.
2. Each cap's shift is where its profile correlates best with the mean profile (a matched
   filter over the whole profile, not its noisy edges), up to the width of the mean
   profile above half its peak either way.
3. The shifts are fitted by the real spherical harmonics of degree 1 and 2 (a displaced
   centre and an elongation, the shapes' lowest orders), evaluated at every ray.

The fit has eight free parameters, so it cannot follow noise: free per-cap shifts, each
chosen as the best of many, align the noise with the template and raise the level (on
SIRT at 800 counts by up to 40% with caps of 1 voxel, ``bench/README.md``). Steps 2-3
repeat with the aligned mean as the template.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from edxtomo.thickness.sphere import ray_directions, solid_angle_weights, sphere_grid

CAP_RADIUS_VOX = 2.0
"""Radius (voxels) of a cap's footprint on the shell: the Nyquist period, the finest detail
a reconstruction holds (see :func:`~edxtomo.thickness.sphere.ray_step_deg`)."""

ALIGN_ITERATIONS = 3
"""Rounds of shift estimation, each against the previous round's aligned mean."""


def crossing_rays(profiles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rays whose maximum exceeds half of the weighted mean profile's peak: (n_rays,) bool.

    The others pass through holes in the shell; all rays when none qualifies.
    """
    mean = weights @ profiles / weights.sum()
    crossing = profiles.max(axis=1) > mean.max() / 2
    return crossing if crossing.any() else np.ones(profiles.shape[0], dtype=bool)


def shift_profiles(profiles: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """``profiles[i](r + shifts[i])`` by linear interpolation, 0 past either end.

    Parameters
    ----------
    profiles : ndarray, shape (n, n_radii)
    shifts : ndarray, shape (n,)
        In samples.

    Returns
    -------
    ndarray, shape (n, n_radii)
    """
    n_radii = profiles.shape[1]
    padded = np.concatenate([profiles, np.zeros((profiles.shape[0], 1), profiles.dtype)], axis=1)
    position = np.arange(n_radii)[None, :] + shifts[:, None]
    below = np.floor(position).astype(int)
    fraction = position - below

    def take(index):
        index = np.where((index < 0) | (index >= n_radii), n_radii, index)  # the zero column
        return np.take_along_axis(padded, index, axis=1)

    return (1.0 - fraction) * take(below) + fraction * take(below + 1)


def aligned_mean_profile(
    profiles: np.ndarray, weights: np.ndarray, directions: np.ndarray, sample_step_vox: float,
    step_deg: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The mean profile of the rays that cross the shell, each shifted onto a common radius.

    Parameters
    ----------
    profiles : ndarray, shape (n_rays, n_radii)
        Samples along each ray, ``sample_step_vox`` apart from the centre outwards.
    weights : ndarray, shape (n_rays,)
        Solid-angle weights of the rays.
    directions : ndarray, shape (n_rays, 3)
        Unit vectors of the rays.
    sample_step_vox : float
        Radial step of the samples (voxels).
    step_deg : float
        Angular step of the ray grid (degrees).

    Returns
    -------
    aligned : ndarray, shape (n_radii,)
        The solid-angle weighted mean of ``profiles[i](r + shifts[i])`` over the crossing
        rays; its peak is the element's level.
    shifts : ndarray, shape (n_rays,)
        Each ray's shift in samples (defined for every ray; weighted mean 0 over the
        crossing rays): the shell lies near ``r + shifts[i]`` on ray ``i`` where it lies
        near ``r`` in ``aligned``.
    """
    crossing = crossing_rays(profiles, weights)
    rays, ray_weights = profiles[crossing], weights[crossing]
    aligned = ray_weights @ rays / ray_weights.sum()
    if not aligned.max() > 0:  # no element: nothing to align
        return aligned, np.zeros(profiles.shape[0])
    peak_vox = np.argmax(aligned) * sample_step_vox
    half_angle = min(np.pi, max(CAP_RADIUS_VOX / max(peak_vox, 1e-9), np.deg2rad(step_deg)))
    caps, cap_weights, cap_directions = _cap_profiles(profiles, weights, directions,
                                                      half_angle, step_deg)
    keep = crossing_rays(caps, cap_weights)
    caps, cap_weights = caps[keep], cap_weights[keep]
    cap_basis, ray_basis = _harmonics(cap_directions[keep]), _harmonics(directions)
    max_shift = int(np.count_nonzero(aligned > aligned.max() / 2))
    root = np.sqrt(cap_weights)[:, None]
    shifts = np.zeros(profiles.shape[0])
    for _ in range(ALIGN_ITERATIONS):
        best = _best_shifts(caps, aligned, max_shift)
        coefficients = np.linalg.lstsq(cap_basis * root, best * root[:, 0], rcond=None)[0]
        coefficients[0] = 0.0  # a common shift moves every radius alike: the mean stays put
        shifts = ray_basis @ coefficients
        aligned = ray_weights @ shift_profiles(rays, shifts[crossing]) / ray_weights.sum()
    return aligned, shifts


def _cap_profiles(
    profiles: np.ndarray, weights: np.ndarray, directions: np.ndarray, half_angle_rad: float,
    step_deg: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solid-angle weighted mean profiles over caps of ``half_angle_rad`` about the centres
    of a grid at half that angle (never finer than ``step_deg``): profiles
    ``(n_caps, n_radii)``, the centres' solid-angle weights and unit vectors."""
    n_half = int(np.ceil(180.0 / max(np.rad2deg(half_angle_rad) / 2, step_deg)))
    theta_deg, phi_deg = sphere_grid(180.0 / n_half)
    cap_weights = solid_angle_weights(theta_deg.size, phi_deg.size).ravel()
    centres = ray_directions(theta_deg, phi_deg).reshape(-1, 3)
    members = cKDTree(directions).query_ball_point(centres, r=2 * np.sin(half_angle_rad / 2))
    rows = np.repeat(np.arange(len(members)), [len(m) for m in members])
    columns = np.concatenate([np.asarray(m, dtype=int) for m in members])
    cap_sum = sparse.csr_matrix((weights[columns], (rows, columns)),
                                shape=(len(centres), len(directions)))
    totals = np.asarray(cap_sum.sum(axis=1)).ravel()
    return (cap_sum @ profiles) / totals[:, None], cap_weights, centres


def _best_shifts(profiles: np.ndarray, template: np.ndarray, max_shift: int) -> np.ndarray:
    """Shift ``k`` (samples, within +-max_shift) maximising sum_r profile(r + k) template(r),
    refined between samples by a parabola through the peak: (n,)."""
    n_fft = 2 * profiles.shape[1]
    correlation = np.fft.irfft(np.fft.rfft(profiles, n_fft, axis=1)
                               * np.conj(np.fft.rfft(template, n_fft)), n_fft, axis=1)
    lags = np.arange(-max_shift, max_shift + 1)
    correlation = correlation[:, lags % n_fft]
    best = correlation.argmax(axis=1)
    middle = np.clip(best, 1, lags.size - 2)
    rows = np.arange(best.size)
    left, centre, right = (correlation[rows, middle + k] for k in (-1, 0, 1))
    curvature = left - 2 * centre + right
    interior = (best == middle) & (curvature < 0)
    offset = np.where(interior, 0.5 * (left - right) / np.where(interior, curvature, 1.0), 0.0)
    return lags[best] + offset


def _harmonics(directions: np.ndarray) -> np.ndarray:
    """Real spherical harmonics of degree 0 to 2 (unnormalised) at unit vectors: (n, 9)."""
    z, y, x = directions.T
    return np.stack([np.ones_like(z), x, y, z, x * y, x * z, y * z, x * x - y * y,
                     3 * z * z - 1], axis=1)
