"""Segmentation of a reconstructed specimen into particles, and their geometry.

The segmentation signal is the HAADF volume when there is one, otherwise the mean of the
element volumes, each divided by its maximum so that a weak element counts as much as a
strong one. The signal is smoothed by a small Gaussian first: sparse-count reconstructions
are speckled at the voxel scale, and a threshold of the raw voxels would give ragged masks
and spurious specks. The mask is thresholded (Otsu by default), its holes are filled
(particles have no internal cavities; a shell around a weak core stays one object), and
touching particles are split by a watershed of the distance transform. Objects below a
minimum volume are dropped.

Coordinates in the tables are in nm from the centre of voxel ``(0, 0, 0)``:
``z_nm = iz * voxel_size_nm``, and so on.
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

log = logging.getLogger(__name__)

PARTICLE_CENTER = "particle"
PARTICLE_COLUMNS = (
    "particle",
    "centroid_z_nm",
    "centroid_y_nm",
    "centroid_x_nm",
    "volume_nm3",
    "equivalent_diameter_nm",
    "sphericity",
    "touches_border",
)
THRESHOLD_METHODS = ("otsu", "li", "triangle")
# Gaussian width that rounds a binary mask's voxel staircase before marching cubes: the raw
# staircase inflates the surface area of a sphere by about 8%, this leaves under 1%.
_SURFACE_SMOOTHING_VOX = 1.0


@dataclass(frozen=True)
class Segmentation:
    """Result of :func:`segment_particles`.

    Attributes
    ----------
    labels : ndarray of int32, shape (nz, ny, nx)
        0 for background, 1..N for the particles (the ``particle`` column of ``table``).
    table : DataFrame
        One row per particle, the :data:`PARTICLE_COLUMNS`.
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
    channels = [haadf] if haadf is not None else list(volumes.values())
    if not channels:
        raise EdxtomoInputError("no volume to segment")
    signal = np.zeros(np.shape(channels[0]), dtype=np.float32)
    for channel in channels:
        channel = np.asarray(channel, dtype=np.float32)
        if channel.shape != signal.shape:
            raise EdxtomoInputError(
                f"volumes differ in shape: {channel.shape} versus {signal.shape}"
            )
        if smooth_sigma_vox > 0:
            channel = ndi.gaussian_filter(channel, smooth_sigma_vox)
        channel = np.clip(channel, 0.0, None)
        if normalize:
            top = channel.max()
            channel = channel / (top * len(channels)) if top > 0 else np.zeros_like(channel)
        signal += channel
    return signal


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
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import relabel_sequential, watershed

    if not voxel_size_nm > 0:
        raise ValueError(f"voxel_size_nm must be positive, got {voxel_size_nm}")
    signal = segmentation_signal(volumes, haadf, smooth_sigma_vox, normalize)
    if not signal.max() > signal.min():
        log.warning("the segmentation signal is constant (%.3g): no particles", signal.max())
        return _empty_segmentation(signal.shape, np.nan)
    level = threshold_value(signal, threshold)
    mask = ndi.binary_fill_holes(signal > level)
    components, n_components = ndi.label(mask)
    log.info("threshold %s = %.4g: %d connected objects", threshold, level, n_components)

    if split and n_components:
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
        labels = _merge_wide_necks(labels, distance, merge_neck_ratio)
        log.info("watershed with markers %.3g nm apart: %d markers, %d objects after merging "
                 "wide necks", min_distance_nm, len(peaks), len(np.unique(labels)) - 1)
    else:
        labels = components.astype(np.int32)

    counts = np.bincount(labels.ravel())
    small = np.flatnonzero(counts * voxel_size_nm**3 < min_volume_nm3)
    small = small[small > 0]
    if small.size:
        log.info("dropping %d objects under %.3g nm^3", small.size, min_volume_nm3)
        labels[np.isin(labels, small)] = 0
    labels = relabel_sequential(labels)[0].astype(np.int32)
    if labels.max() == 0:
        log.warning("no particle above the threshold %.4g (min volume %.3g nm^3)",
                    level, min_volume_nm3)
        return _empty_segmentation(signal.shape, level)
    table = particle_table(labels, voxel_size_nm)
    log.info("%d particles, equivalent diameters %s nm", len(table),
             np.round(table["equivalent_diameter_nm"].to_numpy(), 2))
    return Segmentation(labels, table, level)


def _merge_wide_necks(labels: np.ndarray, distance: np.ndarray, ratio: float) -> np.ndarray:
    """Merge touching labels whose common boundary is nearly as wide as the smaller one."""
    n = int(labels.max())
    if n < 2:
        return labels
    inscribed = np.zeros(n + 1)
    inscribed[1:] = ndi.maximum(distance, labels, index=np.arange(1, n + 1))
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


def empty_particle_table() -> pd.DataFrame:
    """A particle table with the :data:`PARTICLE_COLUMNS` and no rows."""
    dtypes = dict.fromkeys(PARTICLE_COLUMNS, float) | {"particle": int, "touches_border": bool}
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})


def particle_table(labels: np.ndarray, voxel_size_nm: float) -> pd.DataFrame:
    """Geometry of every labelled particle.

    Parameters
    ----------
    labels : ndarray of int, shape (nz, ny, nx)
        0 background, positive labels the particles.
    voxel_size_nm : float

    Returns
    -------
    DataFrame
        :data:`PARTICLE_COLUMNS`, one row per label present, sorted by label: centroid in nm,
        ``volume_nm3`` (voxel count times the voxel volume), ``equivalent_diameter_nm`` (of
        the sphere of that volume), ``sphericity`` (see :func:`sphericity`) and
        ``touches_border`` (the particle has a voxel on a face of the volume).
    """
    rows = []
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == index
        coords = np.argwhere(mask) + [s.start for s in box]
        volume_nm3 = mask.sum() * voxel_size_nm**3
        touches = any(
            s.start == 0 or s.stop == size for s, size in zip(box, labels.shape, strict=True)
        )
        rows.append({
            "particle": index,
            **dict(zip(PARTICLE_COLUMNS[1:4], coords.mean(axis=0) * voxel_size_nm, strict=True)),
            "volume_nm3": volume_nm3,
            "equivalent_diameter_nm": (6.0 * volume_nm3 / np.pi) ** (1.0 / 3.0),
            "sphericity": sphericity(mask),
            "touches_border": bool(touches),
        })
    if not rows:
        return empty_particle_table()
    return pd.DataFrame(rows, columns=list(PARTICLE_COLUMNS))


def sphericity(mask: np.ndarray) -> float:
    """Sphericity ``pi^(1/3) (6 V)^(2/3) / A`` of a binary object; 1 for a sphere.

    ``A`` and ``V`` are the area and enclosed volume of one marching-cubes surface: the
    half level of the mask after a Gaussian of sigma 1 voxel, which rounds off the voxel
    staircase (the raw staircase inflates a sphere's area by about 8%). Taking both from the
    same closed surface keeps the value at most 1 (the isoperimetric inequality).

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)

    Returns
    -------
    float
        NaN for an object too small to carry a surface.
    """
    from skimage.measure import marching_cubes, mesh_surface_area

    pad = int(np.ceil(3 * _SURFACE_SMOOTHING_VOX)) + 1
    smooth = ndi.gaussian_filter(np.pad(mask.astype(float), pad), _SURFACE_SMOOTHING_VOX)
    if not smooth.max() > 0.5:
        return np.nan
    verts, faces, _, _ = marching_cubes(smooth, 0.5)
    area = mesh_surface_area(verts, faces)
    triangles = verts[faces]
    enclosed = abs(
        np.einsum("ij,ij->i", triangles[:, 0], np.cross(triangles[:, 1], triangles[:, 2])).sum()
    ) / 6.0
    return float(np.pi ** (1 / 3) * (6 * enclosed) ** (2 / 3) / area) if area > 0 else np.nan


def particle_regions(labels: np.ndarray, margin_vox: int = 3) -> np.ndarray:
    """Each particle's label grown by ``margin_vox`` voxels into the background.

    A background voxel within the margin goes to its nearest particle, so regions of touching
    particles never overlap. Cropping an element volume to a region keeps the blurred edge of
    the particle's shell and excludes its neighbours.

    Returns
    -------
    ndarray of int32, shape (nz, ny, nx)
    """
    from skimage.segmentation import expand_labels

    return expand_labels(labels, distance=margin_vox).astype(np.int32)
