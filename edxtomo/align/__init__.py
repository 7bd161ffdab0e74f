"""Tilt-series alignment: stage drift, tilt-axis rotation and offset, projection matching.

Estimating and applying are kept apart, as etspy keeps ``calculate_shifts`` and
``apply_shifts`` apart: :func:`estimate_transforms` looks at one reference stack and returns
a transform table (one row per tilt); :func:`apply_transforms` and :func:`apply_to_series`
resample any stack, or every channel, frame and background stack of a series, with that
table. :func:`align_series` does both. The table is also a file (:func:`write_transforms`,
:func:`read_transforms`), so other stages apply the same alignment to their own stacks (the
deep pipeline applies it to denoised raw counts).

Where things live:

- ``geometry.py``: the misalignment model below as code (rotation, warp of one image).
- ``registration.py``: band-passed cross-correlation, the chance level of a correlation
  (:func:`chance_correlation`), sequential registration of neighbouring views, and
  :class:`RegistrationFailed` when fewer than two views register.
- ``matching.py``: translations at a fixed rotation: sequential registration, the gauge
  (what the data do not determine), projection matching.
- ``rotation.py``: the search for the axis rotation (consistency scan and parabola fits).
- ``estimate.py``: :func:`estimate_transforms`, the order of the steps, the reference stack
  (:func:`reference_stack`), checks of the series, the transform table and diagnostics.
- ``apply.py``: :func:`apply_transforms`, :func:`apply_to_series`, the TSV table I/O.

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

Applying uses one linear interpolation per image for every channel, every frame and every
background stack. Linear weights are non-negative and sum to one, so counts stay
non-negative and their total is kept (exactly for a translation, to about 1e-4 with a
rotation), except what drifts across the border of the field.

A view that does not resemble its neighbours (correlation with the neighbour it is registered
to below ``min_correlation``) is not registered: it is left out of the reconstructions, its
translation is interpolated in angle from the registered views, it is logged by angle and
flagged ``registered=False`` in the table. Projection matching compares it with reprojections
of the other views and registers it after all if it then passes. It is kept in the aligned
series so every stage sees the same angles; the reconstruction stage may drop flagged views.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from edxtomo.align.apply import (
    TRANSFORM_COLUMNS,
    apply_to_series,
    apply_transforms,
    read_transforms,
    write_transforms,
)
from edxtomo.align.estimate import EDX_REFERENCE, estimate_transforms, reference_stack
from edxtomo.align.registration import RegistrationFailed, chance_correlation
from edxtomo.io import TiltSeries
from edxtomo.options.align import AlignOptions

__all__ = [
    "EDX_REFERENCE",
    "TRANSFORM_COLUMNS",
    "AlignOptions",
    "RegistrationFailed",
    "align_series",
    "apply_to_series",
    "apply_transforms",
    "chance_correlation",
    "estimate_transforms",
    "read_transforms",
    "reference_stack",
    "write_transforms",
]


def align_series(
    series: TiltSeries,
    options: AlignOptions | None = None,
    *,
    device: str = "auto",
    progress: bool = True,
) -> tuple[TiltSeries, pd.DataFrame, dict[str, Any]]:
    """Align a tilt series and apply the same transform to every channel.

    :func:`estimate_transforms` on the reference stack, then :func:`apply_to_series`.

    Parameters
    ----------
    series : TiltSeries
        Unaligned series; angles sorted ascending, at least 3 tilts.
    options : AlignOptions, optional
        Alignment options; ``None``: the defaults.
    device : {"auto", "cpu", "cuda"}
        Device of the SIRT reconstructions inside the estimation.
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
        See :func:`estimate_transforms`.

    Raises
    ------
    EdxtomoInputError
        See :func:`estimate_transforms`.
    """
    options = AlignOptions() if options is None else options
    transforms, diagnostics = estimate_transforms(
        series, options, device=device, progress=progress
    )
    return apply_to_series(series, transforms), transforms, diagnostics
