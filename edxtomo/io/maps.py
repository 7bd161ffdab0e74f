"""The maps route: ready element maps (one stack per element) plus their tilt angles.

For data already extracted elsewhere: any HyperSpy-readable stacks (TIFF, ``.hspy``, ...)
and the angles from an IMOD ``.rawtlt`` file or an explicit list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.io.angles import check_angles, read_rawtlt
from edxtomo.io.raw import _PIXEL_SIZE_RTOL, _load_signal, pixel_size_nm_of
from edxtomo.io.series import HAADF, TiltSeries


def load_maps_series(
    pattern: str,
    angles_path: str | os.PathLike | None = None,
    elements: list[str] | None = None,
    pixel_size_nm: float | None = None,
    angles_deg: list[float] | None = None,
) -> TiltSeries:
    """Read ready element maps (one stack per element) and their angles as a TiltSeries.

    Parameters
    ----------
    pattern : str
        Path with an ``{element}`` placeholder, e.g. ``data/sqd1/{element}.tif``; each file
        is any HyperSpy-readable stack of shape ``(n_tilt, ny, nx)``. ``{element}=HAADF`` is
        read as the HAADF channel when that file exists.
    angles_path : path-like, optional
        IMOD ``.rawtlt`` file, one angle per image in file order.
    elements : list of str, optional
        Element symbols; default every file that matches the pattern.
    pixel_size_nm : float, optional
        Pixel size in nm; required when the files carry no calibrated length unit.
    angles_deg : list of float, optional
        Tilt angles in degrees, overriding ``angles_path``.

    Returns
    -------
    TiltSeries
        Sorted by angle. Integer maps stay integer counts (``counts: true`` in the channel
        provenance); float maps are marked ``counts: false``. No background (the maps are
        taken as they are).
    """
    import glob
    import re

    if "{element}" not in pattern:
        raise EdxtomoInputError(f"maps pattern {pattern!r} has no {{element}} placeholder")
    if elements is None:
        head, tail = pattern.split("{element}", 1)
        matcher = re.compile(re.escape(head) + r"([A-Z][a-z]?)" + re.escape(tail) + "$")
        found = (matcher.match(p) for p in glob.glob(pattern.replace("{element}", "*")))
        elements = sorted({m.group(1) for m in found if m})
        if not elements:
            raise EdxtomoInputError(f"maps pattern {pattern!r}: no element file matches it")
    if angles_deg is not None and len(angles_deg) > 0:
        angles, angles_source = np.asarray(angles_deg, dtype=float), "angles_deg"
    elif angles_path is not None:
        angles, angles_source = read_rawtlt(angles_path), str(angles_path)
    else:
        raise EdxtomoInputError(f"maps pattern {pattern!r}: give an angles file or angles_deg")
    angles = check_angles(angles, source=angles_source, unique=True)
    names = list(elements)
    haadf_path = Path(pattern.replace("{element}", HAADF))
    if HAADF not in names and haadf_path.is_file():
        names.insert(0, HAADF)
    channels, pixel_sizes, provenance = {}, {}, {"route": "maps", "channels": {}}
    for name in names:
        path = Path(pattern.replace("{element}", name))
        signal = _load_signal(path)
        data = np.asarray(signal.data)
        if data.ndim != 3:
            raise EdxtomoInputError(
                f"{path}: expected a stack of shape (n_tilt, ny, nx), got shape {data.shape}"
            )
        if data.shape[0] != angles.size:
            raise EdxtomoInputError(
                f"{path}: {data.shape[0]} images but {angles.size} tilt angles in "
                f"{angles_source}"
            )
        _check_finite(data, path)
        first = next(iter(channels.values()), None)
        if first is not None and first.shape != data.shape:
            raise EdxtomoInputError(
                f"{path}: shape {data.shape} differs from {names[0]}'s {first.shape}"
            )
        size = pixel_size_nm_of(list(signal.axes_manager.signal_axes), path)
        if size is not None:
            pixel_sizes[path] = size
        channels[name] = data
        provenance["channels"][name] = {
            "source_file": str(path),
            "counts": bool(np.issubdtype(data.dtype, np.integer)),
        }
    if pixel_size_nm is None:
        if not pixel_sizes:
            raise EdxtomoInputError(
                f"maps {pattern!r}: the files carry no pixel size; give pixel_size_nm"
            )
        reference = next(iter(pixel_sizes.values()))
        for path, size in pixel_sizes.items():
            if not np.isclose(size, reference, rtol=_PIXEL_SIZE_RTOL, atol=0):
                raise EdxtomoInputError(
                    f"{path}: pixel size {size:.6g} nm differs from {reference:.6g} nm"
                )
        pixel_size_nm = reference
    order = np.argsort(angles, kind="stable")
    provenance["angles_source"] = angles_source
    return TiltSeries(
        {name: data[order] for name, data in channels.items()},
        angles[order],
        float(pixel_size_nm),
        provenance,
    )


def _check_finite(stack: np.ndarray, path: Path) -> None:
    """Raise, naming the file and the first image, when a map holds NaN or infinite values."""
    if np.issubdtype(stack.dtype, np.integer):
        return
    bad = ~np.isfinite(stack)
    if bad.any():
        images = np.flatnonzero(bad.any(axis=(1, 2)))
        raise EdxtomoInputError(
            f"{path}: {int(bad.sum())} NaN or infinite values, in image(s) "
            f"{(images + 1).tolist()[:10]} (1-based); fill or mask them before reconstruction"
        )
