"""Segmentation of a reconstructed specimen into particles.

The segmentation signal is the HAADF volume when there is one, otherwise the mean of the
element volumes, each divided by its maximum so that a weak element counts as much as a
strong one. The signal is smoothed by a small Gaussian first: sparse-count reconstructions
are speckled at the voxel scale, and a threshold of the raw voxels would give ragged masks
and spurious specks. The mask is thresholded (Otsu by default), its holes are filled
(particles have no internal cavities; a shell around a weak core stays one object), and
touching particles are split by a watershed of the distance transform. Objects below a
minimum volume are dropped.

Detection must be earned: a threshold always finds objects, even in pure noise (Otsu puts
its threshold inside the noise and the watershed cuts the result into hundreds of pieces).
Each object is therefore tested against the noise of the signal, measured in the data: its
mean must stand :data:`~edxtomo.particles.noise.SIGNIFICANCE_SIGMA` noise sigmas above the
background, both per voxel and as a mean over its independent noise cells (see
:func:`~edxtomo.particles.noise.object_significance`). Objects that fail are dropped and
counted in the log; when none passes the segmentation is empty, and when most fail a warning
says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import read_volume
from edxtomo.particles.geometry import empty_particle_table, particle_table
from edxtomo.particles.noise import SIGNIFICANCE_SIGMA, BackgroundNoise, object_significance

log = logging.getLogger(__name__)

THRESHOLD_METHODS = ("otsu", "li", "triangle")
# Counts of rejected objects above which a segmentation is said to cut into noise.
_NOISY_FRACTION = 0.5
_NOISY_COUNT = 10


@dataclass(frozen=True)
class Segmentation:
    """Result of :func:`segment_particles`.

    Attributes
    ----------
    labels : ndarray of int32, shape (nz, ny, nx)
        0 for background, 1..N for the particles (the ``particle`` column of ``table``).
    table : DataFrame
        One row per particle, the :data:`~edxtomo.particles.PARTICLE_COLUMNS`.
    threshold : float
        The threshold applied to the segmentation signal (NaN when the signal is empty).
    """

    labels: np.ndarray
    table: pd.DataFrame
    threshold: float


def load_specimen(
    paths: Mapping[str, str | os.PathLike],
) -> tuple[dict[str, np.ndarray], float]:
    """Read the volumes of one specimen and check that they fit together.

    Parameters
    ----------
    paths : mapping of str to path-like
        Channel name (element symbol or ``"HAADF"``) to a ``.tif`` or ``.hspy`` volume written
        by :func:`edxtomo.io.write_volume`.

    Returns
    -------
    volumes : dict of str to ndarray, each (nz, ny, nx) float32
    voxel_size_nm : float

    Raises
    ------
    EdxtomoInputError
        A file is unreadable or not a volume, or its shape or voxel size differs from the
        first file's; the message names the file.
    """
    if not paths:
        raise EdxtomoInputError("no volume files given")
    volumes: dict[str, np.ndarray] = {}
    first_path = first_shape = first_size = None
    for name, path in paths.items():
        volume, voxel_size_nm = read_volume(path)
        if first_path is None:
            first_path, first_shape, first_size = path, volume.shape, voxel_size_nm
        elif volume.shape != first_shape or not np.isclose(voxel_size_nm, first_size):
            raise EdxtomoInputError(
                f"{path}: shape {volume.shape} and voxel size {voxel_size_nm} nm differ from "
                f"{first_path} ({first_shape}, {first_size} nm)"
            )
        if not np.all(np.isfinite(volume)):
            raise EdxtomoInputError(f"{path}: the volume holds NaN or infinite values")
        volumes[name] = volume
    return volumes, float(first_size)


def segmentation_signal(
    volumes: Mapping[str, np.ndarray],
    haadf: np.ndarray | None = None,
    smooth_sigma_vox: float = 1.0,
    normalize: bool = True,
) -> np.ndarray:
    """The volume that is thresholded into particles.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
        Element volumes; ignored when ``haadf`` is given.
    haadf : ndarray, shape (nz, ny, nx), optional
        HAADF volume, used alone when present (its contrast covers every element).
    smooth_sigma_vox : float
        Gaussian sigma in voxels applied to each channel first (0: none).
    normalize : bool
        Divide each smoothed, non-negative channel by its maximum and average the channels,
        so the signal lies in [0, 1] and a numeric threshold is a fraction of it. With False,
        the channels are summed as they are and a threshold is in volume units.

    Returns
    -------
    ndarray, shape (nz, ny, nx), float32
    """
    return _signals(volumes, haadf, smooth_sigma_vox, normalize)[0]


def _signals(
    volumes: Mapping[str, np.ndarray],
    haadf: np.ndarray | None,
    smooth_sigma_vox: float,
    normalize: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`segmentation_signal`, and the same sum with negative values kept.

    The second, on the same scale, is the one whose noise is measured: clipping a noise
    field of zero mean at 0 would leave half its voxels at exactly 0 and its median
    absolute deviation 0. The two are equal where no channel is negative.
    """
    channels = [haadf] if haadf is not None else list(volumes.values())
    if not channels:
        raise EdxtomoInputError("no volume to segment")
    clipped = np.zeros(np.shape(channels[0]), dtype=np.float32)
    signed = np.zeros_like(clipped)
    for channel in channels:
        channel = np.asarray(channel, dtype=np.float32)
        if channel.shape != clipped.shape:
            raise EdxtomoInputError(
                f"volumes differ in shape: {channel.shape} versus {clipped.shape}"
            )
        if smooth_sigma_vox > 0:
            channel = ndi.gaussian_filter(channel, smooth_sigma_vox)
        if normalize:
            top = channel.max()
            channel = channel / (top * len(channels)) if top > 0 else np.zeros_like(channel)
        signed += channel
        clipped += np.clip(channel, 0.0, None)
    return clipped, signed


def threshold_value(signal: np.ndarray, threshold: str | float = "otsu") -> float:
    """Threshold of ``signal``: an automatic method's value, or the number given.

    Parameters
    ----------
    signal : ndarray
    threshold : {"otsu", "li", "triangle"} or float
        Method of :mod:`skimage.filters`, or a value on the signal's scale.
    """
    if isinstance(threshold, str):
        from skimage import filters

        method = threshold.lower()
        if method not in THRESHOLD_METHODS:
            raise EdxtomoInputError(
                f"unknown threshold method {threshold!r}; use one of {THRESHOLD_METHODS} or a "
                "number"
            )
        return float(getattr(filters, f"threshold_{method}")(signal))
    return float(threshold)


def segment_particles(
    volumes: Mapping[str, np.ndarray],
    voxel_size_nm: float,
    *,
    haadf: np.ndarray | None = None,
    threshold: str | float = "otsu",
    normalize: bool = True,
    smooth_sigma_vox: float = 1.0,
    split: bool = True,
    min_distance_nm: float | None = None,
    merge_neck_ratio: float = 0.9,
    min_volume_nm3: float = 20.0,
) -> Segmentation:
    """Segment a specimen into particles.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
        Element volumes of the specimen.
    voxel_size_nm : float
        Isotropic voxel size in nm.
    haadf : ndarray, shape (nz, ny, nx), optional
        HAADF volume; segmented instead of the elements when given.
    threshold : {"otsu", "li", "triangle"} or float
        Threshold of the :func:`segmentation_signal`: an automatic method, or a number
        (a fraction of the maximum with ``normalize``, volume units without).
    normalize : bool
        See :func:`segmentation_signal`.
    smooth_sigma_vox : float
        Gaussian sigma in voxels applied before thresholding (0: none).
    split : bool
        Split touching particles by a watershed of the distance transform.
    min_distance_nm : float, optional
        Smallest distance between the centres of two particles that are split apart (the
        watershed's markers are distance-transform maxima at least this far apart). Default:
        half the radius of the largest sphere that fits in the mask, which splits touching
        particles up to a ratio of about 2 in radius.
    merge_neck_ratio : float
        After the watershed, two touching pieces are merged back when the neck between them
        (the largest inscribed radius on their common boundary) is at least this fraction of
        the smaller piece's inscribed radius: particles that touch meet at a narrow neck,
        whereas the pieces of a rod or of an irregular particle meet at their full width.
    min_volume_nm3 : float
        Objects smaller than this are dropped.

    Returns
    -------
    Segmentation
        Labels (int32, renumbered 1..N) and the particle table. An empty segmentation gives
        an all-zero label volume and an empty table (with a logged warning), not an error.

    Notes
    -----
    Every object must stand above the noise: its significance
    (:func:`~edxtomo.particles.object_significance`, the table's ``significance_sigma``)
    must reach :data:`~edxtomo.particles.SIGNIFICANCE_SIGMA`. The others are dropped and
    counted in the log. When none is left the segmentation is empty, with a warning that
    the signal is consistent with noise; when more than 10 objects, and more than half of
    them, are dropped, a warning says that the threshold cuts into the noise.
    """
    if not voxel_size_nm > 0:
        raise ValueError(f"voxel_size_nm must be positive, got {voxel_size_nm}")
    signal, signed = _signals(volumes, haadf, smooth_sigma_vox, normalize)
    if not signal.max() > signal.min():
        log.warning("the segmentation signal is constant (%.3g): no particles", signal.max())
        return _empty_segmentation(signal.shape, np.nan)
    level = threshold_value(signal, threshold)
    labels = _label_objects(signal > level, voxel_size_nm, split, min_distance_nm,
                            merge_neck_ratio)
    log.info("threshold %s = %.4g: %d objects", threshold, level, _count_labels(labels))
    labels = _drop_small(labels, voxel_size_nm, min_volume_nm3)
    if not labels.any():
        log.warning("no particle above the threshold %.4g (min volume %.3g nm^3)",
                    level, min_volume_nm3)
        return _empty_segmentation(signal.shape, level)
    labels, significance = _drop_noise(signed, labels, level, smooth_sigma_vox)
    if not labels.any():
        return _empty_segmentation(signal.shape, level)
    table = particle_table(labels, voxel_size_nm, significance)
    log.info("%d particles, equivalent diameters %s nm, significance %s sigma", len(table),
             np.round(table["equivalent_diameter_nm"].to_numpy(), 2),
             np.round(table["significance_sigma"].to_numpy(), 1))
    return Segmentation(labels, table, level)


def _label_objects(
    mask: np.ndarray,
    voxel_size_nm: float,
    split: bool,
    min_distance_nm: float | None,
    merge_neck_ratio: float,
) -> np.ndarray:
    """Connected objects of ``mask`` (holes filled), split by the watershed when ``split``.

    See :func:`segment_particles` for the parameters. Returns int32 labels, 0 background.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = ndi.binary_fill_holes(mask)
    components, n_components = ndi.label(mask)
    if not (split and n_components):
        return components.astype(np.int32)
    distance = ndi.distance_transform_edt(mask, sampling=voxel_size_nm)
    if min_distance_nm is None:
        min_distance_nm = 0.5 * float(distance.max())
    min_distance_vox = max(1, int(round(min_distance_nm / voxel_size_nm)))
    peaks = peak_local_max(
        distance, min_distance=min_distance_vox, labels=components, exclude_border=False
    )
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask).astype(np.int32)
    log.info("%d connected objects; watershed with markers %.3g nm apart: %d markers",
             n_components, min_distance_nm, len(peaks))
    return _merge_wide_necks(labels, distance, merge_neck_ratio)


def _count_labels(labels: np.ndarray) -> int:
    """Number of distinct positive labels present."""
    return int(np.count_nonzero(np.bincount(labels.ravel())[1:]))


def _drop_small(labels: np.ndarray, voxel_size_nm: float, min_volume_nm3: float) -> np.ndarray:
    """``labels`` with the objects under ``min_volume_nm3`` set to 0 (not renumbered)."""
    counts = np.bincount(labels.ravel())
    small = (counts > 0) & (counts * voxel_size_nm**3 < min_volume_nm3)
    small[0] = False
    if small.any():
        log.info("dropping %d objects under %.3g nm^3", np.count_nonzero(small), min_volume_nm3)
        labels = np.where(small[labels], 0, labels)
    return labels


def _drop_noise(
    signal: np.ndarray, labels: np.ndarray, threshold: float, smooth_sigma_vox: float
) -> tuple[np.ndarray, np.ndarray]:
    """Drop the objects that do not stand above the noise; warn when many or all fail.

    Parameters
    ----------
    signal : ndarray, shape (nz, ny, nx)
        The segmentation signal with negative values kept (see :func:`_signals`).
    labels : ndarray of int32, shape (nz, ny, nx)
        Objects, 0 background; numbers may have gaps.
    threshold : float
        The segmentation threshold on the signal's scale, for the log.
    smooth_sigma_vox : float
        Gaussian smoothing of the signal: an object's blurred edge reaches 4 sigmas, and the
        background is measured one voxel beyond that.

    Returns
    -------
    labels : ndarray of int32, shape (nz, ny, nx)
        The objects kept, renumbered 1..N in their order.
    significance : ndarray, shape (N,)
        Their :func:`~edxtomo.particles.object_significance`.
    """
    from skimage.segmentation import relabel_sequential

    margin_vox = int(np.ceil(4 * smooth_sigma_vox)) + 1
    significance, counts, noise = object_significance(signal, labels, margin_vox)
    present = counts > 0
    present[0] = False
    keep = present & (significance >= SIGNIFICANCE_SIGMA)
    _log_verdict(noise, threshold, int(np.count_nonzero(present)), int(np.count_nonzero(keep)))
    labels = relabel_sequential(np.where(keep[labels], labels, 0))[0].astype(np.int32)
    return labels, significance[keep]


def _log_verdict(noise: BackgroundNoise, threshold: float, n_objects: int, n_kept: int) -> None:
    """Log the noise and the objects dropped as noise; warn when all are, or most of many."""
    log.info("background %.4g, noise sigma %.3g, correlation volume %.3g voxels: the "
             "threshold is %.1f sigma above the background", noise.level, noise.sigma,
             noise.correlation_volume_vox, noise.sigmas_above(threshold))
    n_noise = n_objects - n_kept
    if n_noise:
        log.info("dropping %d of %d objects as noise (significance under %.3g sigma)",
                 n_noise, n_objects, SIGNIFICANCE_SIGMA)
    if not n_kept:
        log.warning("none of the %d objects stands %.3g sigma above the noise: the signal is "
                    "consistent with noise, no particles. Check the reconstruction, "
                    "analyze.threshold and analyze.segment_on", n_objects, SIGNIFICANCE_SIGMA)
    elif n_noise > max(_NOISY_FRACTION * n_objects, _NOISY_COUNT):
        log.warning("%d of %d objects are noise (under %.3g sigma): the threshold %.4g, %.1f "
                    "noise sigmas above the background, cuts into the noise; %d particles "
                    "kept. Try a higher analyze.threshold, or analyze.segment_on: auto (the "
                    "HAADF)", n_noise, n_objects, SIGNIFICANCE_SIGMA, threshold,
                    noise.sigmas_above(threshold), n_kept)


def _merge_wide_necks(labels: np.ndarray, distance: np.ndarray, ratio: float) -> np.ndarray:
    """Merge touching labels whose common boundary is nearly as wide as the smaller one."""
    n = int(labels.max())
    if n < 2:
        return labels
    # Largest distance per label (ndi.maximum sorts the whole volume: 10x slower at 256^3).
    inscribed = np.zeros(n + 1)
    np.maximum.at(inscribed, labels.ravel(), distance.ravel())
    keys, necks = [], []
    for axis in range(labels.ndim):
        head = [slice(None)] * labels.ndim
        tail = [slice(None)] * labels.ndim
        head[axis], tail[axis] = slice(None, -1), slice(1, None)
        a, b = labels[tuple(head)], labels[tuple(tail)]
        touching = (a != b) & (a > 0) & (b > 0)
        low, high = np.minimum(a, b)[touching], np.maximum(a, b)[touching]
        keys.append(low.astype(np.int64) * (n + 1) + high)
        necks.append(np.minimum(distance[tuple(head)], distance[tuple(tail)])[touching])
    keys, necks = np.concatenate(keys), np.concatenate(necks)
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for key in np.unique(keys):
        low, high = divmod(int(key), n + 1)
        neck = necks[keys == key].max()
        if neck >= ratio * min(inscribed[low], inscribed[high]):
            parent[root(high)] = root(low)
    return np.array([root(i) for i in range(n + 1)], dtype=np.int32)[labels]


def _empty_segmentation(shape: tuple[int, ...], level: float) -> Segmentation:
    return Segmentation(np.zeros(shape, dtype=np.int32), empty_particle_table(), level)
