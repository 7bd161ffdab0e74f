"""Geometry of segmented particles: the particle table, sphericity and particle regions.

Coordinates in the tables are in nm from the centre of voxel ``(0, 0, 0)``:
``z_nm = iz * voxel_size_nm``, and so on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

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
    "significance_sigma",
)
# Gaussian width that rounds a binary mask's voxel staircase before marching cubes: the raw
# staircase inflates the surface area of a sphere by about 8%, this leaves under 1%.
_SURFACE_SMOOTHING_VOX = 1.0


def empty_particle_table() -> pd.DataFrame:
    """A particle table with the :data:`PARTICLE_COLUMNS` and no rows."""
    dtypes = dict.fromkeys(PARTICLE_COLUMNS, float) | {"particle": int, "touches_border": bool}
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})


def particle_table(
    labels: np.ndarray,
    voxel_size_nm: float,
    significance_sigma: np.ndarray | None = None,
) -> pd.DataFrame:
    """Geometry of every labelled particle.

    Parameters
    ----------
    labels : ndarray of int, shape (nz, ny, nx)
        0 background, positive labels the particles.
    voxel_size_nm : float
    significance_sigma : ndarray, shape (n_present,), optional
        Each present label's significance (:func:`~edxtomo.particles.object_significance`),
        in label order; NaN when not given.

    Returns
    -------
    DataFrame
        :data:`PARTICLE_COLUMNS`, one row per label present, sorted by label: centroid in nm,
        ``volume_nm3`` (voxel count times the voxel volume), ``equivalent_diameter_nm`` (of
        the sphere of that volume), ``sphericity`` (see :func:`sphericity`),
        ``touches_border`` (the particle has a voxel on a face of the volume) and
        ``significance_sigma``.
    """
    boxes = [(index, box) for index, box in enumerate(ndi.find_objects(labels), start=1)
             if box is not None]
    if significance_sigma is None:
        significance_sigma = np.full(len(boxes), np.nan)
    rows = []
    for (index, box), significance in zip(boxes, significance_sigma, strict=True):
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
            "significance_sigma": float(significance),
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
