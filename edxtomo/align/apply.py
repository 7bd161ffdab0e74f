"""Applying alignment transforms: resample every channel once; the transform table as TSV.

The table (columns :data:`TRANSFORM_COLUMNS`, one row per tilt, pixels of the input images)
is what :func:`edxtomo.align.estimate_transforms` returns and ``transforms.tsv`` holds. The
same table applied to every channel, frame and background stack keeps them registered to one
another (etspy's "align the HAADF, apply it to the other stacks").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from edxtomo.align.geometry import _rotate_xy, _warp
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import TiltSeries, atomic_path

TRANSFORM_COLUMNS = (
    "angle_deg",
    "shift_x_px",
    "shift_y_px",
    "axis_rotation_deg",
    "axis_offset_px",
    "correlation",
    "registered",
)


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
        returned by :func:`edxtomo.align.estimate_transforms` or :func:`read_transforms`).
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


def apply_to_series(series: TiltSeries, transforms: pd.DataFrame) -> TiltSeries:
    """Resample every channel (frames included) and every background stack of a series once.

    Parameters
    ----------
    series : TiltSeries
        The series the transforms were estimated on (same angles, same pixels).
    transforms : pandas.DataFrame
        One row per tilt, columns :data:`TRANSFORM_COLUMNS`.

    Returns
    -------
    TiltSeries
        Float32 stacks of the same shapes, linear interpolation (:func:`apply_transforms`);
        ``provenance["alignment"]`` holds the axis rotation and offset and the angles of the
        views flagged ``registered=False``.

    Raises
    ------
    EdxtomoInputError
        Angles or row count that do not match the series, a malformed table.
    """
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
