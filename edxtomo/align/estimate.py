"""Estimating the alignment transforms of a tilt series (nothing is resampled for output here).

Steps of :func:`estimate_transforms`, on a reference stack (HAADF when present, else the
summed, smoothed net X-ray counts) resampled to at most ``working_size_px`` pixels:

1. **Axis rotation** (:mod:`edxtomo.align.rotation`): a consistency scan of ``alpha`` over
   ``[-axis_search_deg, axis_search_deg]`` on a coarse copy, unless ``axis_rotation_deg`` is
   given.
2. **Translation** (:mod:`edxtomo.align.registration`): sequential cross-correlation from
   the tilt nearest 0 degrees outwards, band-passed and edge-windowed, each view stretched by
   ``cos(theta_neighbour) / cos(theta)`` perpendicular to the axis so that it matches the
   geometry of the neighbour it is registered to.
3. **Projection matching** (:mod:`edxtomo.align.matching`): reconstruct, reproject,
   re-register every view against its reprojection, iterate until the updates are below the
   registration resolution.

The result is the transform table that :func:`edxtomo.align.apply_transforms` applies.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from edxtomo.align.apply import apply_transforms
from edxtomo.align.geometry import _centre, _rotate_xy
from edxtomo.align.matching import _align_at
from edxtomo.align.registration import _Registration, chance_correlation
from edxtomo.align.rotation import _scan_rotation
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import HAADF, TiltSeries
from edxtomo.options.align import AlignOptions

log = logging.getLogger(__name__)

EDX_REFERENCE = "edx"
MIN_TILTS = 3


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


def _working_copy(
    stack: np.ndarray, size_px: int, smooth_px: float, options: AlignOptions, device: str
) -> tuple[np.ndarray, float, _Registration]:
    """The reference resampled to at most ``size_px`` per side, background level removed,
    with its binning factor and the registration settings in its pixels."""
    ny, nx = stack.shape[1:]
    factor = max(ny, nx) / size_px if max(ny, nx) > size_px else 1.0
    images = _resample(stack, factor, smooth_px)
    images -= _border_level(images)[:, None, None]
    low_px, high_px = options.bandpass_px
    # Noise smoothing in working pixels: the reference's, the resampling's, and up to
    # 0.5 px from the linear interpolation of each warp.
    smoothing = np.hypot(np.hypot(smooth_px, 0.5 * factor if factor > 1 else 0.0) / factor, 0.5)
    chance = chance_correlation(images.shape[1:], low_px / factor, high_px / factor, smoothing)
    reg = _Registration(
        low_px=low_px / factor, high_px=high_px / factor, upsample=int(options.upsample),
        stretch=options.stretch, min_correlation=max(options.min_correlation, chance),
        sirt_iterations=options.sirt_iterations, device=device,
    )
    return images, factor, reg


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
    """Split axis-frame translations into axis offset and zero-mean drift (see
    :mod:`edxtomo.align`)."""
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


def estimate_transforms(
    series: TiltSeries,
    options: AlignOptions,
    *,
    device: str = "auto",
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Estimate the alignment transforms of a tilt series from its reference stack.

    Parameters
    ----------
    series : TiltSeries
        Unaligned series; angles sorted ascending, at least 3 tilts.
    options : AlignOptions
        Reference, registration filters, rotation search and projection-matching settings
        (:class:`edxtomo.options.align.AlignOptions`; units in pixels of ``series`` and
        degrees).
    device : {"auto", "cpu", "cuda"}
        Device of the SIRT reconstructions; resolved first, so a GPU requested where none
        exists fails before any work.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    transforms : pandas.DataFrame
        One row per tilt, columns :data:`edxtomo.align.TRANSFORM_COLUMNS` (pixels of the
        input images). A view whose correlation stays below the threshold (the larger of
        ``min_correlation`` and :func:`chance_correlation` at the working size) has
        ``registered=False`` and a translation interpolated in angle.
    diagnostics : dict
        ``reference``, ``angles_deg``, ``sinogram_row`` and ``sinogram_before`` /
        ``sinogram_after`` (n_tilt, nx): the reference (smoothed by ``smooth_px``) before and
        after resampling with ``transforms``, along the row where the aligned specimen is
        densest, ``pm_residual`` (n_iter, n_tilt), ``correlation`` (n_tilt,),
        ``axis_scan_deg`` and ``axis_scan_residual``, ``binning`` (original pixels per
        working pixel).

    Raises
    ------
    EdxtomoInputError
        Fewer than 3 tilts, unsorted angles, NaN or infinite values, a constant or empty
        reference image (the message names the tilt angle), an unknown reference channel,
        ``bandpass_px`` not increasing, a device that does not exist.
    RegistrationFailed
        (a subclass of EdxtomoInputError) Fewer than 2 views register, at the given axis
        rotation or at every rotation of the search.
    """
    from edxtomo.tomo.device import resolve_device

    device = str(resolve_device(device))
    _check_series(series)
    name, stack = reference_stack(series, options.reference)
    smooth_px = options.smooth_px
    if smooth_px is None:
        smooth_px = 0.0 if name == HAADF else 2.0
    angles = series.angles_deg

    images, factor, reg = _working_copy(stack, options.working_size_px, smooth_px, options,
                                        device)
    log.info(
        "aligning %d tilts on the %s reference, %d x %d px at %.3g px per working pixel "
        "(SIRT on %s); views register above correlation %.3f", len(angles), name,
        *images.shape[1:], factor, device, reg.min_correlation,
    )
    if options.axis_rotation_deg is None:
        coarse, _, coarse_reg = _working_copy(
            stack, min(options.scan_size_px, options.working_size_px), smooth_px, options,
            device,
        )
        alpha, scan_deg, scan_residual = _scan_rotation(
            coarse, angles, coarse_reg, options.axis_search_deg, options.axis_step_deg,
            progress,
        )
        log.info("axis rotation %.2f deg (consistency scan over +-%g deg)", alpha,
                 options.axis_search_deg)
    else:
        alpha = float(options.axis_rotation_deg)
        scan_deg, scan_residual = np.array([]), np.array([])
    iterations = options.pm_iterations if options.refine == "projection_matching" else 0
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
    smoothing = (0, smooth_px, smooth_px)
    before = ndimage.gaussian_filter(stack, smoothing)
    after = ndimage.gaussian_filter(apply_transforms(stack, transforms).astype(np.float64),
                                    smoothing)
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
        "alignment estimated: axis rotation %.2f deg, axis offset %.2f px, shifts up to "
        "%.1f px, %d/%d views registered", alpha, transforms["axis_offset_px"].iloc[0],
        np.abs(transforms[["shift_x_px", "shift_y_px"]].to_numpy()).max(), registered.sum(),
        len(angles),
    )
    return transforms, diagnostics
