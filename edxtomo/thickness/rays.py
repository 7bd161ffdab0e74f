"""Shell thickness along rays from a particle's centre.

Each element's volume is sampled along every ray by trilinear interpolation, at a step well
under one voxel. Where the sampled profile is above a threshold, the element is present. The
crossings of the threshold are located between samples by linear interpolation. The thickness
along a ray is the total length of the intervals above the threshold (noise dips inside a
shell bridged, see below); the inner radius is the first entry and the outer radius the last
exit.

The default threshold is half of the element's level in that particle: a reconstruction
blurs a sharp boundary by a roughly symmetric point-spread function, and a symmetric blur of
a step crosses half of the step's height exactly at the step. A half-maximum edge therefore
keeps the true boundary of any shell thicker than the blur, whatever the blur's width.

The level is the element's plateau, read on the mean radial profile (``reference=
"mean_profile"``, default): the solid-angle weighted mean of the profiles of the rays that
cross the shell, whose peak is the level of the shell averaged over its surface. Averaging
thousands of rays cancels the noise. The earlier reference, the 90th percentile of the
per-ray maxima (``"ray_maxima"``), is raised by noise, since a noisy ray's maximum is a
noise peak: on TV-KL and SIRT volumes at 800 counts per element and tilt it read the shells
70 to 90% too thin, the mean profile 5 to 33% (``bench/thickness.py --specimens``).
Limits: a shell thinner than about twice the blur has a blurred peak below its true level,
so its half-maximum width reads too thick (+35% for a 2-voxel ZnS shell on ``deep``). And a
shell whose radius changes with direction has its peak at different radii on different
rays, so their mean has a lower, wider peak (an analytic 2-voxel shell whose radius varies
by 3 voxels: +87% where a spherical one reads +51%).

``reference="aligned_profile"`` removes that smear: each ray's profile is shifted onto the
shell's radius in its direction before the mean is taken, the radius a smooth (degree 2)
function of direction fitted to the profiles of caps of neighbouring rays, which keeps the
mean's noise averaging (:mod:`edxtomo.thickness.alignment`; the same shell +60%, its level
within 3% of the noise-free one under white noise of 0.3 of it). It is not the default: on
SIRT and TV-KL volumes, whose shells the missing wedge and the noise distort far more than
the truth's anisotropy, it raises the level and reads the shells thinner than the mean
profile: on TV-KL at 800 counts 1.4-5.4 points, further from the truth (``bench/README.md``).

On a noisy volume a ray's profile dips under the level inside the shell, and counting only
the runs above it read the shell too thin: Zn, the thickest shell and the one with the
fewest counts per voxel, 13.6% thin on SIRT at 3000 counts (``bench/intervals_coverage.py``;
the element's level was not the cause: the mean profile's plateaus of ZnSe and ZnS both lie
far above half its peak). A dip is therefore bridged when every sample of it lies at radii
where the element's mean profile is above the level: the element is present there on
average, so the dip is noise. A real gap between two layers of one element (a core and an
outer shell) lies where the mean profile is under the level too, and is kept. Bridging
takes the outermost of the several crossings that noise makes at an edge, which reads a
noisy shell slightly thick: on those SIRT volumes (seeds 0-5) Zn -0.9%, S +1.1% and Se
+2.8%, against -13.6%, -2.4% and +1.4% without it.

``reference="profile_fit"`` addresses the first limit: the half-maximum reading (with the
mean-profile level) only decides which rays cross a shell and starts a fit of a blurred
shell to each of those rays (:mod:`edxtomo.thickness.profile_fit`), whose edges are the
shell's true radii whatever the contrast, where the blur is a Gaussian (exact on analytic
shells). On simulated SIRT and fast-budget ``deep`` volumes it read the thin ZnS shell no
better than the mean profile (``bench/README.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from edxtomo.thickness.alignment import aligned_mean_profile, crossing_rays, shift_profiles
from edxtomo.thickness.profile_fit import fit_blur, fit_shells
from edxtomo.thickness.sphere import (
    ray_directions,
    solid_angle_weights,
    sphere_grid,
    weighted_quantile,
)

log = logging.getLogger(__name__)

REFERENCES = ("mean_profile", "ray_maxima", "profile_fit", "aligned_profile")
"""The element's level (and edge) readings of :func:`shell_thickness`."""

# The fit reads every other sample of the 0.2-voxel profiles: trilinear samples closer than
# a voxel are strongly correlated, so the denser samples add cost and little information.
_FIT_STEP_VOX = 0.4

# Trilinear interpolation mixes the 8 voxels around a point, so a sample above a positive
# threshold lies within sqrt(3) voxels of a voxel above it.
_TRILINEAR_REACH_VOX = np.sqrt(3.0)


@dataclass(frozen=True)
class ShellMaps:
    """Result of :func:`shell_thickness`; unpacks as ``thickness, inner, outer``.

    Attributes
    ----------
    thickness_nm : ndarray, shape (n_theta, n_phi)
        Total length in nm of the intervals above the threshold along each ray, a dip under
        it bridged where the element's mean profile is above it (see the module notes); 0
        where the ray meets no shell.
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
    blur_nm : float
        With ``reference="profile_fit"``, the blur width (Gaussian sigma, nm) of the fit;
        NaN otherwise.
    """

    thickness_nm: np.ndarray
    inner_radius_nm: np.ndarray
    outer_radius_nm: np.ndarray
    theta_deg: np.ndarray
    phi_deg: np.ndarray
    reference_level: float
    threshold_level: float
    blur_nm: float = float("nan")

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.thickness_nm, self.inner_radius_nm, self.outer_radius_nm))


def shell_thickness(
    volume: np.ndarray,
    center_vox: Sequence[float],
    voxel_size_nm: float,
    step_deg: float = 1.0,
    threshold: float = 0.5,
    *,
    absolute: bool = False,
    reference_quantile: float = 0.9,
    reference: str = "mean_profile",
    sample_step_vox: float = 0.2,
    max_radius_vox: float | None = None,
    chunk_samples: int = 4_000_000,
    min_blur_vox: float = 0.0,
    blur_vox: float | None = None,
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
        set by ``reference``. With ``absolute=True``, the threshold in volume units.
    absolute : bool
        Interpret ``threshold`` in volume units.
    reference_quantile : float
        With ``reference="ray_maxima"``, the quantile of the per-ray maxima that defines the
        level.
    reference : {"mean_profile", "ray_maxima", "profile_fit", "aligned_profile"}
        The element's level: the peak of the solid-angle weighted mean profile over the rays
        whose maximum exceeds half of the all-ray mean profile's peak (rays through holes in
        the shell left out), robust to noise (see the module notes); or the
        ``reference_quantile`` of the per-ray maxima, which noise raises.
        ``"aligned_profile"``: the peak of that mean after each ray's profile is shifted by
        the shell's radius in its direction, a smooth function of direction fitted to
        profiles averaged over caps of neighbouring rays
        (:func:`~edxtomo.thickness.alignment.aligned_mean_profile`); a dip is then bridged
        where the aligned mean, shifted back onto the ray, is above the level. ``"profile_fit"``:
        the mean-profile reading, then a blurred shell fitted to every ray that crosses the
        shell (:mod:`edxtomo.thickness.profile_fit`) gives its radii and thickness; rays
        whose fit fails keep the threshold reading. Needs a relative threshold.
    sample_step_vox : float
        Radial sampling step in voxels.
    max_radius_vox : float, optional
        Longest ray in voxels; default: far enough to pass every positive voxel.
    chunk_samples : int
        Samples interpolated per batch, to bound memory (about 40 bytes each).
    min_blur_vox : float
        With ``"profile_fit"``: the known resolution (Gaussian sigma, voxels), the smallest
        blur width the fit may take.
    blur_vox : float, optional
        With ``"profile_fit"``: the blur width (Gaussian sigma, voxels) to use instead of
        fitting it to this element's rays (:func:`particle_shell_maps` shares one per
        particle).

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
    directions = ray_directions(theta_deg, phi_deg).reshape(-1, 3)
    profiles = _ray_profiles(volume, center, directions, radii, chunk_samples)

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if absolute and reference == "profile_fit":
        raise ValueError("reference='profile_fit' needs a relative threshold (absolute=False)")
    method = reference
    if method == "aligned_profile":
        expected, shifts = aligned_mean_profile(profiles, weights, directions, sample_step_vox,
                                                step_deg)
        reference = float(expected.max())
    else:
        reference = _reference_level(profiles, weights, reference, reference_quantile)
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
    present = _mean_profile(profiles, weights) > level
    rays_per_chunk = max(1, chunk_samples // radii.size)
    for start in range(0, n_rays, rays_per_chunk):
        part = slice(start, start + rays_per_chunk)
        if method == "aligned_profile":  # each ray's expected profile: the aligned mean, shifted
            chunk = profiles[part].shape
            present = shift_profiles(np.broadcast_to(expected, chunk), -shifts[part]) > level
        thickness[part], inner[part], outer[part] = _intervals(profiles[part], radii, level,
                                                               present)
    if method != "profile_fit":
        blur_vox = np.nan
    else:
        blur_vox = _fit_rays(profiles, radii, reference, thickness, inner, outer,
                             min_blur_vox, blur_vox)
    return ShellMaps(
        thickness.reshape(shape) * voxel_size_nm,
        inner.reshape(shape) * voxel_size_nm,
        outer.reshape(shape) * voxel_size_nm,
        theta_deg,
        phi_deg,
        reference,
        level,
        blur_vox * voxel_size_nm,
    )


def _fit_rays(profiles: np.ndarray, radii: np.ndarray, level: float, thickness: np.ndarray,
              inner: np.ndarray, outer: np.ndarray, min_blur_vox: float,
              blur_vox: float | None) -> float:
    """Replace, in place, the threshold reading of the rays that cross a shell by the fit.

    Returns the blur width (voxels) of the fit, ``blur_vox`` when given; NaN when no ray
    crosses a shell.
    """
    crossing = np.flatnonzero(np.isfinite(inner))
    if crossing.size == 0:
        return np.nan
    stride = max(1, int(round(_FIT_STEP_VOX / (radii[1] - radii[0]))))
    data, sampled = profiles[crossing, ::stride], radii[::stride]
    start = (np.full(crossing.size, level), inner[crossing], outer[crossing])
    sigma = (fit_blur(data, sampled, *start, min_sigma_vox=min_blur_vox) if blur_vox is None
             else max(float(blur_vox), min_blur_vox))
    fit = fit_shells(data, sampled, *start, sigma)
    good = crossing[fit.converged]
    inner[good], outer[good] = fit.inner_vox[fit.converged], fit.outer_vox[fit.converged]
    thickness[good] = outer[good] - inner[good]
    log.info("shell fit: blur sigma %.2f voxel; %d of %d rays fitted, the others read at the "
             "threshold", sigma, good.size, crossing.size)
    return sigma


def _reference_level(profiles: np.ndarray, weights: np.ndarray, reference: str,
                     quantile: float) -> float:
    """The element's level in the particle from its ray profiles ``(n_rays, n_radii)``."""
    if reference == "ray_maxima":
        return float(weighted_quantile(profiles.max(axis=1), weights, quantile)[0])
    return float(_mean_profile(profiles, weights).max())


def _mean_profile(profiles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Solid-angle weighted mean of the profiles of the rays that cross the shell: (n_radii,).

    The rays whose maximum is under half of the all-ray mean profile's peak (holes in the
    shell) are left out; all rays when none is above it.
    """
    crossing = crossing_rays(profiles, weights)
    return weights[crossing] @ profiles[crossing] / weights[crossing].sum()


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
    profiles: np.ndarray, radii: np.ndarray, level: float, present: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Total length, first entry and last exit (voxels) of the runs above ``level``.

    Crossings between two samples are placed by linear interpolation. A ray above the level
    at its origin enters at 0; a ray still above it at its last sample exits there. With
    ``present`` (bool, shape (n_radii,) or (n_rays, n_radii)), a dip under the level between
    two runs whose every sample lies where ``present`` holds is bridged (see
    :func:`_bridge_dips`).
    """
    above = profiles > level
    if present is not None:
        above = _bridge_dips(above, present)
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


def _bridge_dips(above: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``above`` with every gap between two runs bridged where the gap lies within ``present``.

    Parameters
    ----------
    above : ndarray of bool, shape (n_rays, n_radii)
        Samples above the level.
    present : ndarray of bool, shape (n_radii,) or (n_rays, n_radii)
        Radii where the element's mean profile (or each ray's expected profile) is above the
        level.

    Returns
    -------
    ndarray of bool, shape (n_rays, n_radii)
    """
    inside = (np.logical_or.accumulate(above, axis=1)
              & np.logical_or.accumulate(above[:, ::-1], axis=1)[:, ::-1])
    gap = inside & ~above
    # Samples of one gap share the number of runs entered before them.
    run = np.cumsum(above & ~np.pad(above, ((0, 0), (1, 0)))[:, :-1], axis=1)
    rows = np.broadcast_to(np.arange(above.shape[0])[:, None], above.shape)
    blocked = np.zeros((above.shape[0], above.shape[1] + 1), dtype=bool)
    blocked[rows[gap & ~present], run[gap & ~present]] = True
    return above | (gap & ~blocked[rows, run])
