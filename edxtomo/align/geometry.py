"""Geometry of the misalignment model, shared by estimation and application.

Image-centred coordinates ``r = (x_c, y_c)`` (x = column, y = row, centre at ``(n - 1) / 2``);
``R(a) = [[cos a, -sin a], [sin a, cos a]]`` acts on ``(x_c, y_c)``. See :mod:`edxtomo.align`
for the model itself.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _centre(shape: tuple[int, ...]) -> np.ndarray:
    """Centre ``(y, x)`` of the last two axes of ``shape``, in index units."""
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
