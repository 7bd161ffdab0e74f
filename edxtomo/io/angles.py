"""Tilt angles: the IMOD ``.rawtlt`` reader and the one check of every angle list.

Angles come from file metadata, a ``.rawtlt`` file or an explicit list in the sample
sheet; the projector and the reconstructions take them too. All of them go through
:func:`check_angles`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError


def read_rawtlt(path: str | os.PathLike) -> np.ndarray:
    """Read an IMOD ``.rawtlt`` file: one tilt angle in degrees per line.

    Returns
    -------
    ndarray, shape (n_tilt,)
        Angles in file order.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise EdxtomoInputError(f"{path}: cannot read the angles file ({exc})") from exc
    angles = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            angles.append(float(line.split()[0]))
        except ValueError as exc:
            raise EdxtomoInputError(
                f"{path}, line {line_no}: {line.strip()!r} is not an angle in degrees"
            ) from exc
    if not angles:
        raise EdxtomoInputError(f"{path}: no tilt angles in the file")
    return np.asarray(angles, dtype=float)


def check_angles(
    angles_deg: Any,
    n_tilt: int | None = None,
    *,
    source: str = "angles_deg",
    unique: bool = False,
) -> np.ndarray:
    """Tilt angles as a finite float64 vector; raise on anything a reconstruction cannot use.

    Parameters
    ----------
    angles_deg : array-like, shape (n_tilt,)
        Tilt angles in degrees.
    n_tilt : int, optional
        Number of images (projections) the angles belong to; the counts must match.
    source : str
        What the angles came from (a file, a parameter), named in every error message.
    unique : bool
        Also reject repeated angles. A tilt series acquires each angle once, so its readers
        set this; the projector and the reconstructions accept repeats.

    Returns
    -------
    ndarray, shape (n_tilt,), float64
        The angles, in the given order.

    Raises
    ------
    EdxtomoInputError
        Angles that are empty or not 1D, non-finite, not ``n_tilt`` of them, or (with
        ``unique``) repeated.
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.ndim != 1 or angles.size == 0:
        raise EdxtomoInputError(
            f"{source}: tilt angles must be a non-empty 1D sequence, got shape {angles.shape}"
        )
    if not np.all(np.isfinite(angles)):
        raise EdxtomoInputError(
            f"{source}: tilt angles must be finite numbers, got non-finite values in "
            f"{angles.tolist()}"
        )
    if n_tilt is not None and angles.size != n_tilt:
        raise EdxtomoInputError(
            f"{source}: {angles.size} tilt angles given for {n_tilt} projections; the counts "
            "must match"
        )
    if unique:
        values, counts = np.unique(angles, return_counts=True)
        if np.any(counts > 1):
            raise EdxtomoInputError(
                f"{source}: duplicate tilt angles {values[counts > 1].tolist()} deg"
            )
    return angles
