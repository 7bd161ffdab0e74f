"""A blurred spherical shell fitted to every ray's profile: thickness free of blur and contrast.

A reconstruction blurs a shell of level ``a`` between radii ``r_in`` and ``r_out``. Taking
the blur as an isotropic 3D Gaussian of width ``sigma``, the profile along a ray from the
shell's centre is exactly ``a * (F(r; r_out) - F(r; r_in))``, with ``F(r; R)`` the blurred
ball of radius ``R``::

    F(r; R) = (erf(u_-) + erf(u_+)) / 2 - sigma / (r sqrt(2 pi)) * (exp(-u_-^2) - exp(-u_+^2)),
    u_-/+ = (R -/+ r) / (sqrt(2) sigma)

(a core is the case ``r_in = 0``). Fitting ``a``, ``r_in`` and ``r_out`` per ray with
``sigma`` shared by all the rays of a particle's element gives the thickness
``r_out - r_in`` with the blur and the lowered peak of a thin shell removed by
construction: a half-maximum edge reads a 2-voxel shell blurred by 1 voxel about 35% too
thick, the fit reads it unbiased. ``sigma`` is the width that minimises the summed squared
misfit over a subset of the rays (a golden-section search; the rays of a thick shell
constrain it, a thin shell's rays alone trade width against blur), bounded below by a known
resolution when one is given. Locally the model also holds for a shell whose radius
changes slowly with direction.

Every ray is fitted at once: a Levenberg-Marquardt iteration on ``(a, r_in, r_out)``
batched over the rays (3 x 3 normal equations per ray). A ray whose fit fails (no
convergence, a level <= 0, an edge outside the ray) keeps its half-maximum reading, and the
fraction of such rays is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erf

_SQRT_2PI = np.float32(np.sqrt(2.0 * np.pi))
_R_FLOOR_VOX = 1e-3  # r = 0 is the limit of the formula; 1e-3 keeps it finite and exact
_SIGMA_RANGE_VOX = (0.3, 3.0)
_SIGMA_TOLERANCE_VOX = 0.03
_SIGMA_RAYS = 500
_ITERATIONS = 40
_STEP_TOLERANCE_VOX = 5e-3


@dataclass(frozen=True)
class ShellFit:
    """Per-ray fit of :func:`fit_shells`.

    Attributes
    ----------
    level, inner_vox, outer_vox : ndarray, shape (n_rays,)
        Fitted level (volume units) and radii (voxels).
    converged : ndarray of bool, shape (n_rays,)
        The fit converged to a level > 0 and ``0 <= inner < outer <= longest radius``.
    sigma_vox : float
        The blur width used, in voxels.
    """

    level: np.ndarray
    inner_vox: np.ndarray
    outer_vox: np.ndarray
    converged: np.ndarray
    sigma_vox: float


def blurred_ball(radii: np.ndarray, radius: np.ndarray, sigma: float,
                 slope: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """A ball of radius ``radius`` and level 1 blurred by a 3D Gaussian, at distance ``radii``.

    Parameters
    ----------
    radii : ndarray, shape (n_radii,)
        Distances from the ball's centre (voxels, >= 0).
    radius : ndarray, shape (n_rays,)
        Ball radius per ray (voxels, >= 0).
    sigma : float
        Gaussian standard deviation (voxels).
    slope : bool
        Also return the derivative with respect to ``radius``.

    Returns
    -------
    ndarray, shape (n_rays, n_radii)
        The blurred ball; with ``slope``, a tuple (ball, derivative).
    """
    r = np.maximum(radii, _R_FLOOR_VOX).astype(np.float32)[None, :]
    big = np.asarray(radius, dtype=np.float32)[:, None]
    sigma = np.float32(sigma)
    scale = np.float32(1.0 / (np.sqrt(2.0) * sigma))
    minus, plus = (big - r) * scale, (big + r) * scale
    gauss = np.exp(-(minus**2)) - np.exp(-(plus**2))
    ball = np.float32(0.5) * (erf(minus) + erf(plus)) - (sigma / _SQRT_2PI) * gauss / r
    if not slope:
        return ball
    return ball, big * gauss / (r * (sigma * _SQRT_2PI))


def blurred_shell(radii: np.ndarray, level: np.ndarray, inner_vox: np.ndarray,
                  outer_vox: np.ndarray, sigma: float) -> np.ndarray:
    """The model profile ``level * (F(r; outer) - F(r; inner))`` per ray: (n_rays, n_radii)."""
    shell = blurred_ball(radii, outer_vox, sigma) - blurred_ball(radii, inner_vox, sigma)
    return np.asarray(level, dtype=np.float32)[:, None] * shell


def fit_shells(profiles: np.ndarray, radii: np.ndarray, level: np.ndarray,
               inner_vox: np.ndarray, outer_vox: np.ndarray, sigma: float) -> ShellFit:
    """Least-squares fit of :func:`blurred_shell` to every profile at a fixed blur.

    Levenberg-Marquardt on ``(level, inner, outer)``, batched over the rays; a ray leaves
    the batch once its radii move by less than 0.005 voxel in an accepted step, or when
    no step lowers its misfit any more (damping past 1e8).

    Parameters
    ----------
    profiles : ndarray, shape (n_rays, n_radii)
        The sampled ray profiles (volume units).
    radii : ndarray, shape (n_radii,)
        Sample distances (voxels), evenly spaced from 0.
    level, inner_vox, outer_vox : ndarray, shape (n_rays,)
        Starting values (e.g. the half-maximum reading).
    sigma : float
        Blur width (voxels).

    Returns
    -------
    ShellFit
    """
    data = np.asarray(profiles, dtype=np.float32)
    params = np.stack([level, inner_vox, outer_vox], axis=1).astype(float)
    params[:, 1] = np.maximum(params[:, 1], 0.0)
    damping = np.full(len(data), 1e-3)
    cost = _cost(data, radii, params, sigma)
    active = np.arange(len(data))
    for _ in range(_ITERATIONS):
        if active.size == 0:
            break
        now = params[active]
        trial = _constrain(now + _lm_step(data[active], radii, now, sigma, damping[active]),
                           radii[-1])
        trial_cost = _cost(data[active], radii, trial, sigma)
        better = trial_cost < cost[active]
        moved = np.abs(trial - now)[:, 1:].max(axis=1)
        params[active[better]] = trial[better]
        cost[active[better]] = trial_cost[better]
        damping[active] = np.where(better, damping[active] / 3, damping[active] * 4)
        done = (better & (moved < _STEP_TOLERANCE_VOX)) | (damping[active] > 1e8)
        active = active[~done]
    fitted_level, inner, outer = params.T
    converged = (np.isfinite(params).all(axis=1) & (fitted_level > 0) & (outer > inner)
                 & (outer < radii[-1]))
    converged[active] = False
    return ShellFit(fitted_level, inner, outer, converged, float(sigma))


def _cost(data, radii, params, sigma) -> np.ndarray:
    model = blurred_shell(radii, params[:, 0], params[:, 1], params[:, 2], sigma)
    return ((data - model) ** 2).sum(axis=1)


def _lm_step(data, radii, params, sigma, damping) -> np.ndarray:
    """Levenberg-Marquardt step of every ray: (n_rays, 3)."""
    level, inner, outer = params.T
    ball_in, slope_in = blurred_ball(radii, inner, sigma, slope=True)
    ball_out, slope_out = blurred_ball(radii, outer, sigma, slope=True)
    basis = ball_out - ball_in
    jacobian = np.stack([basis, -level[:, None] * slope_in, level[:, None] * slope_out],
                        axis=2)
    residual = data - level[:, None] * basis
    normal = np.einsum("nri,nrj->nij", jacobian, jacobian)
    gradient = np.einsum("nri,nr->ni", jacobian, residual)
    diagonal = np.einsum("nii->ni", normal)
    normal = normal + (damping[:, None] * np.maximum(diagonal, 1e-12))[:, :, None] * np.eye(3)
    return np.linalg.solve(normal, gradient[:, :, None])[:, :, 0]


def _constrain(params: np.ndarray, longest_vox: float) -> np.ndarray:
    """Keep ``0 <= inner`` and radii within twice the ray; order is checked at the end."""
    out = params.copy()
    out[:, 1] = np.clip(out[:, 1], 0.0, 2 * longest_vox)
    out[:, 2] = np.clip(out[:, 2], 0.0, 2 * longest_vox)
    return out


def fit_blur(profiles: np.ndarray, radii: np.ndarray, level: np.ndarray, inner_vox: np.ndarray,
             outer_vox: np.ndarray, min_sigma_vox: float = 0.0) -> float:
    """The blur width (voxels) that minimises the summed misfit of :func:`fit_shells`.

    A golden-section search over ``sigma`` on up to 500 evenly chosen rays (the rays
    given; pass only rays that cross the shell), each fitted at every trial width.

    Parameters
    ----------
    profiles : ndarray, shape (n_rays, n_radii)
    radii : ndarray, shape (n_radii,)
    level, inner_vox, outer_vox : ndarray, shape (n_rays,)
        Starting values of the per-ray fits.
    min_sigma_vox : float
        Known resolution (voxels): the search starts there.

    Returns
    -------
    float
    """
    pick = np.linspace(0, len(profiles) - 1, min(len(profiles), _SIGMA_RAYS)).astype(int)
    args = (profiles[pick], radii, level[pick], inner_vox[pick], outer_vox[pick])

    def misfit(sigma: float) -> float:
        fit = fit_shells(*args, sigma)
        model = blurred_shell(radii, fit.level, fit.inner_vox, fit.outer_vox, sigma)
        return float(((args[0] - model) ** 2).sum())

    low, high = max(_SIGMA_RANGE_VOX[0], min_sigma_vox), _SIGMA_RANGE_VOX[1]
    if low >= high:
        return low
    golden = (np.sqrt(5.0) - 1) / 2
    a, b = high - golden * (high - low), low + golden * (high - low)
    cost_a, cost_b = misfit(a), misfit(b)
    while high - low > _SIGMA_TOLERANCE_VOX:
        if cost_a <= cost_b:
            high, b, cost_b = b, a, cost_a
            a = high - golden * (high - low)
            cost_a = misfit(a)
        else:
            low, a, cost_a = a, b, cost_b
            b = low + golden * (high - low)
            cost_b = misfit(b)
    return (low + high) / 2
