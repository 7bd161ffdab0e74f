"""Tilt-series alignment: stage drift, tilt-axis rotation and offset, projection matching.

Misalignment model (shared with :mod:`edxtomo.simulate`). With image-centred coordinates
``r = (x_c, y_c)`` (x = column, y = row, centre at ``(n - 1) / 2``), a feature at ``r`` in the
ideal projection of tilt ``i`` (tilt axis along y through the image centre) appears in the
measured image at ::

    r' = R(alpha) @ (r + (axis_offset_px, 0)) + (shift_x_px[i], shift_y_px[i])

with ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` acting on ``(x_c, y_c)``. Alignment estimates
``alpha`` (``axis_rotation_deg``), ``axis_offset_px`` and the per-tilt drift, then resamples
every image once: ``aligned(r) = measured(R(alpha) @ (r + (axis_offset_px, 0)) + shift[i])``.

What the data determine, and the conventions for what they do not:

- Moving the specimen by ``(dx, dz)`` in the volume changes the per-tilt x translation by
  ``dx cos(theta) + dz sin(theta)`` and keeps the series consistent, so that part is fixed by
  convention: the centre of mass of the aligned projections follows the tilt axis, i.e. the
  specimen's centre of mass sits at the centre of the reconstructed volume in x and z.
- A common y translation only moves the reconstruction along the axis: the y drift has zero
  mean.
- The x translation common to all tilts is reported as ``axis_offset_px``; the per-tilt
  ``shift_x_px, shift_y_px`` is ``R(alpha)`` applied to the remaining drift, which has zero
  mean along both axes.

Steps of :func:`align_series`, on a reference stack (HAADF when present, else the summed,
smoothed net X-ray counts) resampled to at most ``working_size_px`` pixels:

1. **Axis rotation**: a scan of ``alpha`` over ``[-axis_search_deg, axis_search_deg]`` on a
   coarse copy. Each candidate is aligned (steps 2 and 3, briefly) and scored by how well a
   SIRT reconstruction of fixed effort reprojects onto the band-passed views (consistency).
   Parabolas through the best candidates and their neighbours, then through finer candidates
   that start from the translations found nearest the estimate, refine ``alpha`` to a few
   hundredths of a degree on HAADF data. (Common lines, the views' profiles along the axis,
   see the rotation only through features that move across the axis; they misled on the
   etspy needle and the sQD1 series. Consistency sees both directions.)
2. **Translation**: sequential cross-correlation from the tilt nearest 0 degrees outwards,
   band-passed and edge-windowed, each view stretched by ``cos(theta_neighbour) / cos(theta)``
   perpendicular to the axis so that it matches the geometry of the neighbour it is registered
   to (skimage's upsampled phase cross-correlation, without whitening).
3. **Projection matching**: reconstruct (``edxtomo.tomo.sirt``), reproject, re-register every view
   against its reprojection, iterate until the updates are below the registration resolution.
   This removes the random walk that sequential registration leaves and works on EDX-only data.
4. **Apply** (:func:`apply_transforms`): one linear interpolation per image for every channel,
   every frame and every background stack. Linear weights are non-negative and sum to one, so
   counts stay non-negative and their total is kept (exactly for a translation, to about 1e-4
   with a rotation), except what drifts across the border of the field.

A view that does not resemble its neighbours (correlation with the neighbour it is registered
to below ``min_correlation``) is not registered: it is left out of the reconstructions, its
translation is interpolated in angle from the registered views, it is logged by angle and
flagged ``registered=False`` in the table. Projection matching compares it with reprojections
of the other views and registers it after all if it then passes. It is kept in the aligned
series so every stage sees the same angles; the reconstruction stage may drop flagged views.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.signal.windows import tukey
from skimage.registration import phase_cross_correlation
from tqdm.auto import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import HAADF, TiltSeries, atomic_path

log = logging.getLogger(__name__)

TRANSFORM_COLUMNS = (
    "angle_deg",
    "shift_x_px",
    "shift_y_px",
    "axis_rotation_deg",
    "axis_offset_px",
    "correlation",
    "registered",
)
REFINE_METHODS = ("projection_matching", "none")
EDX_REFERENCE = "edx"
MIN_TILTS = 3
# Fraction of each image edge that the Tukey window tapers before cross-correlation.
WINDOW_TAPER = 0.25
# Projection-matching updates per candidate while scanning the axis rotation.
SCAN_PM_ITERATIONS = 2
# Probability that pure noise passes the registration threshold (see chance_correlation).
CHANCE_PROBABILITY = 1e-4
# At most this many local refinements of the rotation, each from the translations of the last.
LOCAL_ROUNDS = 4
# The consistency score reconstructs with this many times sirt_iterations.
CONSISTENCY_SIRT_ROUNDS = 3


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


def _centre(shape: tuple[int, ...]) -> np.ndarray:
    return (np.asarray(shape[-2:], dtype=float) - 1) / 2


def _rotation_yx(alpha_deg: float) -> np.ndarray:
    """``R(alpha)`` of the module docstring, written for ``(y, x)`` index vectors."""
    a = np.deg2rad(alpha_deg)
    return np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])


def _rotate_xy(alpha_deg: float, vectors_xy: np.ndarray) -> np.ndarray:
    """``R(alpha) @ v`` for each row ``v = (x, y)`` of ``vectors_xy``."""
    a = np.deg2rad(alpha_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.asarray(vectors_xy, dtype=float) @ rot.T


def _warp(
    image: np.ndarray,
    alpha_deg: float,
    translation_xy: np.ndarray,
    *,
    stretch_x: float = 1.0,
    order: int = 1,
) -> np.ndarray:
    """``out(r) = image(R(alpha) @ (stretch_x * x_c, y_c) + translation)``, centred coordinates.

    ``translation_xy`` is in the measured image's frame, in pixels. Outside the field the
    image is taken as 0.
    """
    matrix = _rotation_yx(alpha_deg) @ np.diag([1.0, stretch_x])
    centre = _centre(image.shape)
    offset = centre + np.asarray(translation_xy, dtype=float)[::-1] - matrix @ centre
    return ndimage.affine_transform(
        image, matrix, offset, order=order, mode="constant", cval=0.0, prefilter=order > 1
    )


def _derotate(stack: np.ndarray, alpha_deg: float, q_xy: np.ndarray) -> np.ndarray:
    """Views brought into the axis frame: ``out_i(r) = stack_i(R(alpha) @ (r + q_i))``."""
    translations = _rotate_xy(alpha_deg, q_xy)
    return np.stack(
        [_warp(view, alpha_deg, t) for view, t in zip(stack, translations, strict=True)]
    )


@functools.lru_cache(maxsize=8)
def _band_pass(shape: tuple[int, int], reg: _Registration) -> tuple[np.ndarray, np.ndarray]:
    """Tukey edge window and difference-of-Gaussians transfer function for ``shape``."""
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
    :func:`_derotate`), and each view's correlation with the neighbour it was registered to
    (1 for the starting view). A view below ``min_correlation`` is skipped as a neighbour: the
    next view is registered to the last view that passed.
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


def _gauge(
    aligned: np.ndarray, angles_deg: np.ndarray, q: np.ndarray, registered: np.ndarray
) -> np.ndarray:
    """Fix what the data cannot: the specimen's x-z position and the mean y translation.

    The x centre of mass ``m_i`` of each aligned view (positive part) is fitted by
    ``x0 cos(theta) + z0 sin(theta)``, the track of a point at ``(x0, z0)``; adding that track
    to the x translations moves the specimen's centre of mass onto the axis. The y translation
    gets zero mean over the registered views.
    """
    x = np.arange(aligned.shape[2]) - (aligned.shape[2] - 1) / 2
    mass = np.clip(aligned, 0, None).sum(axis=1)
    total = mass.sum(axis=1)
    usable = registered & (total > 0)
    q = q.copy()
    if usable.sum() >= 2:
        com = (mass[usable] * x).sum(axis=1) / total[usable]
        theta = np.deg2rad(angles_deg)
        design = np.stack([np.cos(theta), np.sin(theta)], axis=1)
        coef, *_ = np.linalg.lstsq(design[usable], com, rcond=None)
        q[:, 0] += design @ coef
    q[:, 1] -= q[registered, 1].mean()
    return q


def _filtered_residual(reprojected: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Per view ``||F(p) - F(v)|| / ||F(v)||`` from spectra, F the registration filter.

    Band-passing leaves out the smooth part of the misfit, which mostly measures how far SIRT
    has converged, and keeps the detail that misalignment makes inconsistent.
    """
    axes = (-2, -1)
    num = np.linalg.norm(reprojected - views, axis=axes)
    return num / np.maximum(np.linalg.norm(views, axis=axes), 1e-30)


def _project_match(
    stack: np.ndarray,
    angles_deg: np.ndarray,
    alpha_deg: float,
    q: np.ndarray,
    correlation: np.ndarray,
    reg: _Registration,
    iterations: int,
    progress: bool,
    log_level: int = logging.DEBUG,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projection matching: reconstruct, reproject, re-register each view, iterate.

    Each round reconstructs the registered views (``correlation >= min_correlation``) with the
    current translations, records the residual, registers every view against its reprojection
    and applies the update, unless all updates are below the registration resolution
    ``1 / upsample`` or ``iterations`` updates were made. The reconstruction of one round is
    refined by the next: ``sirt_iterations`` SIRT updates of the residual ``b - A x`` are added
    to ``x`` (then clipped at 0), so it keeps converging while the views move.

    A view left out of the reconstruction is compared with a reprojection that owes nothing to
    it, so its correlation is updated and it joins once it passes. A view inside the
    reconstruction is partly fitted by it (few views, underdetermined), so its correlation with
    the reprojection is not evidence and its neighbour correlation is kept.

    Returns
    -------
    q : ndarray, (n_tilt, 2)
        Translations in the axis frame, gauge fixed.
    correlation : ndarray, (n_tilt,)
    residual : ndarray, (n_round, n_tilt)
        Band-passed relative reprojection residual per round and view; the last row belongs
        to the returned translations.
    """
    from edxtomo.tomo import project, sirt

    options = {"progress": False, "log_every": reg.sirt_iterations, "device": reg.device}
    correlation = correlation.copy()
    volume = None
    history = []
    update = np.zeros_like(q)
    bar = tqdm(
        total=iterations + 1, desc="projection matching", unit="it", disable=not progress
    )
    with bar:
        for it in range(iterations + 1):
            registered = correlation >= reg.min_correlation
            views = _derotate(stack, alpha_deg, q)
            used = angles_deg[registered]
            if volume is None:
                volume = sirt(views[registered], used, reg.sirt_iterations, **options)
            else:
                misfit = views[registered] - project(volume, used, device=reg.device)
                volume += sirt(misfit, used, reg.sirt_iterations, nonneg=False, **options)
                np.clip(volume, 0, None, out=volume)
            reprojected = project(volume, angles_deg, device=reg.device)
            view_spectra = np.stack([_spectrum(v, reg) for v in views])
            model_spectra = np.stack([_spectrum(p, reg) for p in reprojected])
            history.append(_filtered_residual(model_spectra, view_spectra))
            for i in range(len(angles_deg)):
                update[i], match = _register(model_spectra[i], view_spectra[i], reg)
                if not registered[i]:
                    correlation[i] = match
            largest = float(np.abs(update[registered]).max())
            mean_residual = float(history[-1][registered].mean())
            bar.update()
            bar.set_postfix(residual=f"{mean_residual:.4g}", update=f"{largest:.3f}")
            log.log(
                log_level,
                "projection matching round %d: mean residual %.4g, largest update %.3f px",
                it + 1, mean_residual, largest,
            )
            if it == iterations or largest <= 1.0 / reg.upsample:
                break
            q = q - update
            registered = correlation >= reg.min_correlation
            q = _fill_unregistered(q, angles_deg, registered)
            q = _gauge(_derotate(stack, alpha_deg, q), angles_deg, q, registered)
    q = _fill_unregistered(q, angles_deg, correlation >= reg.min_correlation)
    return q, correlation, np.asarray(history)


def _align_at(
    stack: np.ndarray,
    angles_deg: np.ndarray,
    alpha_deg: float,
    reg: _Registration,
    pm_iterations: int,
    progress: bool = False,
    log_level: int = logging.DEBUG,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequential registration, gauge, then projection matching, for a fixed rotation.

    Returns the translations ``q`` (n_tilt, 2) in the axis frame, the correlations (n_tilt,)
    and the projection-matching residuals (n_round, n_tilt), empty without it.
    """
    q, correlation = _sequential(stack, angles_deg, alpha_deg, reg)
    registered = correlation >= reg.min_correlation
    if registered.sum() < 2:
        raise EdxtomoInputError(
            f"fewer than 2 of {len(angles_deg)} views correlate with their neighbours above "
            f"{reg.min_correlation:.3f} (the larger of min_correlation and what noise reaches "
            f"by chance in {stack.shape[2]} x {stack.shape[1]} px working images); "
            f"correlations {np.round(correlation, 3).tolist()}; check the reference channel"
        )
    q = _fill_unregistered(q, angles_deg, registered)
    q = _gauge(_derotate(stack, alpha_deg, q), angles_deg, q, registered)
    residual = np.empty((0, len(angles_deg)))
    if pm_iterations > 0:
        q, correlation, residual = _project_match(
            stack, angles_deg, alpha_deg, q, correlation, reg, pm_iterations, progress,
            log_level,
        )
    return q, correlation, residual


def _consistency(
    stack: np.ndarray,
    angles_deg: np.ndarray,
    alpha_deg: float,
    q: np.ndarray,
    registered: np.ndarray,
    reg: _Registration,
) -> float:
    """Mean band-passed residual of a fixed-effort SIRT of the registered, aligned views.

    The same number of SIRT iterations for every candidate rotation, so the scores differ by
    how consistent the views are, not by how far the reconstruction converged.
    """
    from edxtomo.tomo import project, sirt

    views = _derotate(stack, alpha_deg, q)[registered]
    used = angles_deg[registered]
    volume = sirt(
        views, used, CONSISTENCY_SIRT_ROUNDS * reg.sirt_iterations, progress=False,
        log_every=CONSISTENCY_SIRT_ROUNDS * reg.sirt_iterations, device=reg.device,
    )
    reprojected = project(volume, used, device=reg.device)
    residual = _filtered_residual(
        np.stack([_spectrum(p, reg) for p in reprojected]),
        np.stack([_spectrum(v, reg) for v in views]),
    )
    return float(residual.mean())


def _parabola_vertex(alphas: np.ndarray, values: np.ndarray) -> float:
    """Abscissa of the vertex of the parabola through three points, clipped to their span."""
    (a0, a1, a2), (s0, s1, s2) = alphas, values
    num = (a1 - a0) ** 2 * (s1 - s2) - (a1 - a2) ** 2 * (s1 - s0)
    den = (a1 - a0) * (s1 - s2) - (a1 - a2) * (s1 - s0)
    if den == 0 or not np.isfinite(den):
        return float(alphas[np.argmin(values)])
    return float(np.clip(a1 - 0.5 * num / den, a0, a2))


def _scan_rotation(
    stack: np.ndarray,
    angles_deg: np.ndarray,
    reg: _Registration,
    search_deg: float,
    step_deg: float,
    progress: bool,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Axis rotation that makes the series most consistent.

    Each candidate rotation is aligned (sequential registration and a short projection
    matching) and scored by :func:`_consistency`. Candidates: a grid of ``step_deg`` over
    ``+-search_deg``; the two half steps beside the best; the parabola through the best and
    its neighbours gives an estimate. Then three candidates ``step_deg / 6`` apart around that
    estimate, each started from the translations of the best candidate so that they differ
    only by the rotation, give the answer by a last parabola.

    Returns the rotation and the scanned rotations with their scores (sorted by rotation).
    """
    scores: dict[float, float] = {}
    solutions: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def evaluate(alpha: float, start: tuple[np.ndarray, np.ndarray] | None = None) -> float:
        try:
            if start is None:
                q, correlation, _ = _align_at(
                    stack, angles_deg, alpha, reg, SCAN_PM_ITERATIONS
                )
            else:
                translations, correlation = start
                q, correlation, _ = _project_match(
                    stack, angles_deg, alpha, _rotate_xy(-alpha, translations), correlation,
                    reg, SCAN_PM_ITERATIONS, progress=False,
                )
        except EdxtomoInputError:  # too few views register at this rotation
            return np.inf
        registered = correlation >= reg.min_correlation
        solutions[alpha] = (_rotate_xy(alpha, q), correlation)
        value = _consistency(stack, angles_deg, alpha, q, registered, reg)
        log.debug("axis rotation %.3f deg: consistency residual %.6g", alpha, value)
        return value

    n_steps = max(int(np.ceil(search_deg / step_deg)), 1)
    grid = np.linspace(-search_deg, search_deg, 2 * n_steps + 1)
    half = (grid[1] - grid[0]) / 2
    for alpha in tqdm(grid, desc="axis rotation scan", unit="angle", disable=not progress):
        scores[float(alpha)] = evaluate(float(alpha))
    best = min(scores, key=scores.get)
    if not np.isfinite(scores[best]):
        raise EdxtomoInputError(
            f"no axis rotation within +-{search_deg} deg lets 2 or more views register "
            f"(correlation threshold {reg.min_correlation:.3f}); check the reference channel"
        )
    if abs(best) >= search_deg:
        log.warning(
            "the best axis rotation (%.1f deg) is at the edge of the search range +-%.1f deg; "
            "increase axis_search_deg", best, search_deg,
        )
    for alpha in (best - half, best + half):
        scores[alpha] = evaluate(alpha)
    trio = np.array([best - half, best, best + half])
    estimate = _parabola_vertex(trio, np.array([scores[a] for a in trio]))
    fine = step_deg / 6
    start = solutions[best]
    for _ in range(LOCAL_ROUNDS):
        trio = estimate + np.array([-fine, 0.0, fine])
        local = np.array([evaluate(a, start) for a in trio])
        start = solutions.get(trio[1], start)
        previous, estimate = estimate, _parabola_vertex(trio, local)
        log.debug("axis rotation refined to %.3f deg", estimate)
        if abs(estimate - previous) < 0.05:
            break
    scanned = sorted(scores.items())
    return estimate, np.array([a for a, _ in scanned]), np.array([v for _, v in scanned])


def _resample(stack: np.ndarray, factor: float, smooth_px: float) -> np.ndarray:
    """Smooth and sample every image on a grid ``factor`` times coarser, centres kept.

    Working pixel ``j`` sits at original centred coordinate ``factor * (j - (m - 1) / 2)``, so
    translations measured on the result scale back by ``factor`` exactly.
    """
    sigma = np.hypot(smooth_px, 0.5 * factor if factor > 1 else 0.0)
    smoothed = ndimage.gaussian_filter(stack, (0, sigma, sigma)) if sigma > 0 else stack
    if factor == 1:
        return smoothed.astype(np.float32)
    shape = tuple(max(int(round(n / factor)), 1) for n in stack.shape[1:])
    matrix = np.diag([factor, factor])
    offset = _centre(stack.shape) - factor * _centre(shape)
    return np.stack([
        ndimage.affine_transform(image, matrix, offset, output_shape=shape, order=1)
        for image in smoothed
    ]).astype(np.float32)


def _border_level(stack: np.ndarray) -> np.ndarray:
    """Mean of each image over its outer frame (1/16 of the size): the background level.

    Subtracting it makes the zeros that warping brings in from outside the field match the
    background, so they add no edges. The mean, not the median: sparse, smoothed counts are
    skewed and their median sits below the background.
    """
    width = max(stack.shape[-1] // 16, 2)
    frame = np.ones(stack.shape[1:], dtype=bool)
    frame[width:-width, width:-width] = False
    return stack[:, frame].mean(axis=1)


def _check_series(series: TiltSeries) -> None:
    angles = series.angles_deg
    if series.n_tilt < MIN_TILTS:
        raise EdxtomoInputError(
            f"alignment needs at least {MIN_TILTS} tilts, got {series.n_tilt} "
            f"(angles {angles.tolist()} deg)"
        )
    if not np.all(np.isfinite(angles)) or np.any(np.diff(angles) <= 0):
        raise EdxtomoInputError(
            f"tilt angles must be finite and strictly increasing, got {angles.tolist()} deg"
        )
    if min(series.image_shape) < 8:
        raise EdxtomoInputError(
            f"images of {series.image_shape} px are too small to align (at least 8 x 8)"
        )
    stacks = {
        **{f"channel {k!r}": v for k, v in series.channels.items()},
        **{f"background {k!r}": v for k, v in series.background.items()},
    }
    for label, data in stacks.items():
        finite = np.isfinite(data.reshape(data.shape[0], -1)).all(axis=1)
        if not finite.all():
            raise EdxtomoInputError(
                f"{label} has NaN or infinite values at tilt(s) {angles[~finite].tolist()} deg"
            )


def reference_stack(series: TiltSeries, reference: str = "auto") -> tuple[str, np.ndarray]:
    """The stack that alignment registers, before smoothing.

    Parameters
    ----------
    series : TiltSeries
    reference : str
        ``"auto"``: HAADF when the series has it, else ``"edx"``. ``"edx"``: the net counts
        (gross minus background) summed over all elements. Or any channel name.

    Returns
    -------
    name : str
        The reference used.
    stack : ndarray, shape (n_tilt, ny, nx), float64
        Frame-summed.

    Raises
    ------
    EdxtomoInputError
        Unknown reference, or an image of the reference that is constant (e.g. empty).
    """
    if reference == "auto":
        reference = HAADF if series.haadf is not None else EDX_REFERENCE
    if reference == EDX_REFERENCE:
        if not series.elements:
            raise EdxtomoInputError("reference 'edx' needs element channels; the series has none")
        stack = sum(series.net_counts(name).astype(np.float64) for name in series.elements)
    elif reference in series.channels:
        stack = series.summed(reference).astype(np.float64)
    else:
        raise EdxtomoInputError(
            f"unknown alignment reference {reference!r}; expected 'auto', {EDX_REFERENCE!r} or "
            f"one of the channels {list(series.channels)}"
        )
    flat = stack.reshape(len(stack), -1)
    constant = flat.max(axis=1) == flat.min(axis=1)
    if constant.any():
        raise EdxtomoInputError(
            f"the {reference} reference image is constant (empty) at tilt(s) "
            f"{series.angles_deg[constant].tolist()} deg: nothing to register"
        )
    return reference, stack


def align_series(
    series: TiltSeries,
    *,
    reference: str = "auto",
    refine: str = "projection_matching",
    upsample: int = 20,
    bandpass_px: tuple[float, float] = (2.0, 32.0),
    smooth_px: float | None = None,
    stretch: bool = True,
    axis_rotation_deg: float | None = None,
    axis_search_deg: float = 15.0,
    axis_step_deg: float = 5.0,
    pm_iterations: int = 10,
    sirt_iterations: int = 20,
    min_correlation: float = 0.3,
    working_size_px: int = 128,
    scan_size_px: int = 64,
    device: str = "auto",
    progress: bool = True,
) -> tuple[TiltSeries, pd.DataFrame, dict[str, Any]]:
    """Align a tilt series and apply the same transform to every channel.

    Parameters
    ----------
    series : TiltSeries
        Unaligned series; angles sorted ascending, at least 3 tilts.
    reference : str
        Stack to register: ``"auto"`` (HAADF when present, else the summed net X-ray counts),
        ``"edx"``, or a channel name.
    refine : {"projection_matching", "none"}
        After sequential cross-correlation, refine by projection matching or stop.
    upsample : int
        Sub-pixel factor of the cross-correlation (``1 / upsample`` working pixels).
    bandpass_px : (float, float)
        Difference-of-Gaussians band-pass before cross-correlation: sigmas in original
        pixels of the smoothing and of the background removed.
    smooth_px : float, optional
        Gaussian smoothing (sigma, original pixels) of the reference before anything else.
        Default: 0 for a HAADF reference, 2 for X-ray counts (Poisson noise).
    stretch : bool
        Stretch each view by ``cos(theta_neighbour) / cos(theta)`` perpendicular to the axis
        before correlating it with its neighbour.
    axis_rotation_deg : float, optional
        Known in-plane rotation of the tilt axis; skips the search.
    axis_search_deg, axis_step_deg : float
        Range (+-) and grid step of the axis-rotation search, degrees.
    pm_iterations : int
        Maximum projection-matching iterations (it stops earlier once the updates are below
        the registration resolution).
    sirt_iterations : int
        SIRT iterations per projection-matching iteration.
    min_correlation : float
        A view whose correlation (band-passed, after registration) with its neighbour stays
        below this, or below what noise reaches by chance at the working size
        (:func:`chance_correlation`: 0.2 for 256 px X-ray maps registered at 128 px), is
        flagged unregistered. EDX views at 500 to 1,000 counts per element score 0.8 or more.
    working_size_px : int
        Registration runs on the reference resampled to at most this many pixels per side.
    scan_size_px : int
        Size of the coarser copy used for the axis-rotation search.
    device : {"auto", "cpu", "cuda"}
        Device of the SIRT reconstructions.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    aligned : TiltSeries
        Every channel (frames included) and every background stack resampled once, float32,
        same shapes; ``provenance["alignment"]`` summarises the result.
    transforms : pandas.DataFrame
        One row per tilt, columns :data:`TRANSFORM_COLUMNS` (pixels of the input images).
    diagnostics : dict
        ``reference``, ``angles_deg``, ``sinogram_row`` and ``sinogram_before`` /
        ``sinogram_after`` (n_tilt, nx): the reference (smoothed by ``smooth_px``) before and
        after alignment, along the row where the aligned specimen is densest,
        ``pm_residual`` (n_iter, n_tilt), ``correlation`` (n_tilt,), ``axis_scan_deg`` and
        ``axis_scan_residual``, ``binning`` (original pixels per working pixel).

    Raises
    ------
    EdxtomoInputError
        Fewer than 3 tilts, unsorted angles, NaN or infinite values, a constant or empty
        reference image (the message names the tilt angle), bad options.
    """
    _check_series(series)
    if refine not in REFINE_METHODS:
        raise EdxtomoInputError(f"unknown refine {refine!r}; expected one of {REFINE_METHODS}")
    low_px, high_px = bandpass_px
    if not 0 <= low_px < high_px:
        raise EdxtomoInputError(f"bandpass_px must be (low, high) with 0 <= low < high, got "
                                f"{bandpass_px}")
    for option, value, smallest in (
        ("upsample", upsample, 1), ("pm_iterations", pm_iterations, 0),
        ("sirt_iterations", sirt_iterations, 1), ("working_size_px", working_size_px, 16),
        ("scan_size_px", scan_size_px, 16),
    ):
        if int(value) != value or value < smallest:
            raise EdxtomoInputError(f"{option} must be an integer >= {smallest}, got {value}")
    if not (axis_search_deg > 0 and axis_step_deg > 0):
        raise EdxtomoInputError(
            f"axis_search_deg and axis_step_deg must be positive, got {axis_search_deg} and "
            f"{axis_step_deg}; pass axis_rotation_deg to fix the rotation instead"
        )
    if not -1 <= min_correlation < 1 or (smooth_px is not None and smooth_px < 0):
        raise EdxtomoInputError(
            f"min_correlation must be in [-1, 1) and smooth_px >= 0, got {min_correlation} "
            f"and {smooth_px}"
        )
    name, stack = reference_stack(series, reference)
    if smooth_px is None:
        smooth_px = 0.0 if name == HAADF else 2.0
    angles = series.angles_deg
    ny, nx = series.image_shape

    def working(size: int) -> tuple[np.ndarray, float, _Registration]:
        factor = max(ny, nx) / size if max(ny, nx) > size else 1.0
        images = _resample(stack, factor, smooth_px)
        images -= _border_level(images)[:, None, None]
        # Noise smoothing in working pixels: the reference's, the resampling's, and up to
        # 0.5 px from the linear interpolation of each warp.
        smoothing = np.hypot(np.hypot(smooth_px, 0.5 * factor if factor > 1 else 0.0) / factor,
                             0.5)
        chance = chance_correlation(images.shape[1:], low_px / factor, high_px / factor,
                                    smoothing)
        reg = _Registration(
            low_px=low_px / factor, high_px=high_px / factor, upsample=int(upsample),
            stretch=stretch, min_correlation=max(min_correlation, chance),
            sirt_iterations=sirt_iterations, device=device,
        )
        return images, factor, reg

    images, factor, reg = working(working_size_px)
    log.info(
        "aligning %d tilts on the %s reference, %d x %d px at %.3g px per working pixel; "
        "views register above correlation %.3f", len(angles), name, *images.shape[1:], factor,
        reg.min_correlation,
    )
    if axis_rotation_deg is None:
        coarse, _, coarse_reg = working(min(scan_size_px, working_size_px))
        alpha, scan_deg, scan_residual = _scan_rotation(
            coarse, angles, coarse_reg, axis_search_deg, axis_step_deg, progress
        )
        log.info("axis rotation %.2f deg (consistency scan over +-%g deg)", alpha,
                 axis_search_deg)
    else:
        alpha, scan_deg, scan_residual = float(axis_rotation_deg), np.array([]), np.array([])
    iterations = pm_iterations if refine == "projection_matching" else 0
    q, correlation, pm_residual = _align_at(
        images, angles, alpha, reg, iterations, progress, logging.INFO
    )
    registered = correlation >= reg.min_correlation
    if not registered.all():
        log.warning(
            "%d view(s) could not be registered (correlation below %.2f) at tilt(s) %s deg; "
            "their shifts are interpolated from the neighbouring views and they are flagged "
            "registered=False", (~registered).sum(), reg.min_correlation,
            angles[~registered].tolist(),
        )
    transforms = _transforms_table(angles, q * factor, alpha, correlation, registered)
    aligned = _apply_to_series(series, transforms)
    before = ndimage.gaussian_filter(stack, (0, smooth_px, smooth_px))
    after = ndimage.gaussian_filter(reference_stack(aligned, name)[1], (0, smooth_px, smooth_px))
    row = _densest_row(after)
    diagnostics = {
        "reference": name,
        "angles_deg": angles.copy(),
        "sinogram_row": row,
        "sinogram_before": before[:, row, :].astype(np.float32),
        "sinogram_after": after[:, row, :].astype(np.float32),
        "pm_residual": pm_residual,
        "correlation": correlation,
        "axis_scan_deg": scan_deg,
        "axis_scan_residual": scan_residual,
        "binning": factor,
    }
    log.info(
        "alignment done: axis rotation %.2f deg, axis offset %.2f px, shifts up to %.1f px, "
        "%d/%d views registered", alpha, transforms["axis_offset_px"].iloc[0],
        np.abs(transforms[["shift_x_px", "shift_y_px"]].to_numpy()).max(), registered.sum(),
        len(angles),
    )
    return aligned, transforms, diagnostics


def _densest_row(stack: np.ndarray) -> int:
    """Row (y index) with the most positive signal summed over tilts and x, lightly smoothed."""
    profile = np.clip(stack - np.median(stack), 0, None).sum(axis=(0, 2))
    return int(np.argmax(ndimage.gaussian_filter1d(profile, 2.0)))


def _transforms_table(
    angles_deg: np.ndarray,
    q_xy: np.ndarray,
    alpha_deg: float,
    correlation: np.ndarray,
    registered: np.ndarray,
) -> pd.DataFrame:
    """Split axis-frame translations into axis offset and zero-mean drift (module docstring)."""
    offset = float(q_xy[:, 0].mean())
    drift = _rotate_xy(alpha_deg, q_xy - [offset, 0.0])
    return pd.DataFrame({
        "angle_deg": angles_deg,
        "shift_x_px": drift[:, 0],
        "shift_y_px": drift[:, 1],
        "axis_rotation_deg": float(alpha_deg),
        "axis_offset_px": offset,
        "correlation": correlation,
        "registered": registered.astype(bool),
    })


def _check_transforms(transforms: pd.DataFrame, where: str) -> None:
    missing = [c for c in TRANSFORM_COLUMNS if c not in transforms.columns]
    if missing:
        raise EdxtomoInputError(f"{where}: missing transform column(s) {missing}")
    numbers = transforms[list(TRANSFORM_COLUMNS[:5])].to_numpy(dtype=float)
    if not np.isfinite(numbers).all():
        raise EdxtomoInputError(f"{where}: non-finite values in the transform table")
    for column in ("axis_rotation_deg", "axis_offset_px"):
        if transforms[column].nunique() > 1:
            raise EdxtomoInputError(f"{where}: {column} must be one value for the whole series")


def apply_transforms(
    stack: np.ndarray,
    transforms: pd.DataFrame,
    *,
    angles_deg: np.ndarray | None = None,
    order: int = 1,
) -> np.ndarray:
    """Resample every image of a stack with its tilt's alignment transform, once.

    ``out(r) = stack(R(alpha) @ (r + (axis_offset_px, 0)) + (shift_x_px, shift_y_px))`` in
    image-centred coordinates; outside the measured field the result is 0.

    Parameters
    ----------
    stack : ndarray, shape (n_tilt, ny, nx) or (n_tilt, n_frame, ny, nx)
        Images in the pixels the transforms were measured in (counts or intensities).
    transforms : pandas.DataFrame
        One row per tilt, in the stack's order, columns :data:`TRANSFORM_COLUMNS` (as
        returned by :func:`align_series` or :func:`read_transforms`).
    angles_deg : ndarray, optional
        The stack's tilt angles; when given they must match ``transforms["angle_deg"]``.
    order : int
        Spline order. 1 (linear, default) keeps counts non-negative and their sum; higher
        orders are sharper and are clipped at 0.

    Returns
    -------
    ndarray, float32, same shape as ``stack``
        Every frame of a tilt gets that tilt's transform.

    Raises
    ------
    EdxtomoInputError
        Wrong shape, a row count or angles that do not match, a malformed table.
    """
    _check_transforms(transforms, "transforms")
    data = np.asarray(stack)
    if data.ndim not in (3, 4) or data.shape[0] != len(transforms):
        raise EdxtomoInputError(
            f"stack of shape {data.shape} does not match {len(transforms)} transform rows; "
            "expected (n_tilt, ny, nx) or (n_tilt, n_frame, ny, nx)"
        )
    table_angles = transforms["angle_deg"].to_numpy(dtype=float)
    if angles_deg is not None and not np.allclose(angles_deg, table_angles, atol=1e-3):
        raise EdxtomoInputError(
            f"stack angles {np.asarray(angles_deg).tolist()} deg differ from the transform "
            f"table's {table_angles.tolist()} deg"
        )
    alpha = float(transforms["axis_rotation_deg"].iloc[0])
    offset = float(transforms["axis_offset_px"].iloc[0])
    drift = transforms[["shift_x_px", "shift_y_px"]].to_numpy(dtype=float)
    translations = _rotate_xy(alpha, np.array([[offset, 0.0]])) + drift
    out = np.empty(data.shape, dtype=np.float32)
    for i, translation in enumerate(translations):
        for index in np.ndindex(data.shape[1:-2]):
            image = data[(i, *index)].astype(np.float64)
            out[(i, *index)] = _warp(image, alpha, translation, order=order)
    if order > 1:
        np.clip(out, 0, None, out=out)
    return out


def _apply_to_series(series: TiltSeries, transforms: pd.DataFrame) -> TiltSeries:
    angles = series.angles_deg
    channels = {
        name: apply_transforms(data, transforms, angles_deg=angles)
        for name, data in series.channels.items()
    }
    background = {
        name: apply_transforms(data, transforms, angles_deg=angles)
        for name, data in series.background.items()
    }
    provenance = dict(series.provenance)
    provenance["alignment"] = {
        "axis_rotation_deg": float(transforms["axis_rotation_deg"].iloc[0]),
        "axis_offset_px": float(transforms["axis_offset_px"].iloc[0]),
        "unregistered_angles_deg": angles[~transforms["registered"].to_numpy()].tolist(),
        "interpolation": "linear, one resampling per image",
    }
    return TiltSeries(channels, angles.copy(), series.pixel_size_nm, provenance, background)


def write_transforms(transforms: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the transform table as TSV (columns :data:`TRANSFORM_COLUMNS`), atomically."""
    _check_transforms(transforms, str(path))
    with atomic_path(path) as tmp:
        transforms[list(TRANSFORM_COLUMNS)].to_csv(
            tmp, sep="\t", index=False, float_format="%.6f"
        )


def read_transforms(path: str | os.PathLike) -> pd.DataFrame:
    """Read a transform table written by :func:`write_transforms`.

    Raises
    ------
    EdxtomoInputError
        Unreadable file, missing columns, non-finite values, or a ``registered`` column that
        is not true/false; the message names the file.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise EdxtomoInputError(f"{path}: cannot read the transform table ({exc})") from exc
    _check_transforms(table, str(path))
    if table["registered"].dtype != bool:
        text = table["registered"].astype(str).str.strip().str.lower()
        if not text.isin(["true", "false"]).all():
            raise EdxtomoInputError(f"{path}: column 'registered' must hold True or False")
        table["registered"] = text == "true"
    return table[list(TRANSFORM_COLUMNS)]
