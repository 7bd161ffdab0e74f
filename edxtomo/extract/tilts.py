"""The tilts of one series: consistency of their headers, and which angle each file is.

Pure functions over :class:`~edxtomo.io.Acquisition` headers (:func:`~edxtomo.io.read_header`),
so a workflow can run them when it plans, and the extract stage runs the same ones.

Angles that cannot be scrambled (:func:`order_tilts`)
    A file that records its stage tilt is paired with that tilt, whatever its name or its
    place in a list: a sample sheet's ``angles_deg`` is then checked against the tilts
    (sorted against sorted, within :data:`ANGLE_TOLERANCE_DEG`), never paired by position.
    Only files that record no tilt take the sheet's angles by position, in natural order of
    their paths (``t2`` before ``t10``, :func:`natural_key`). A missing tilt is never read
    as 0 deg.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import Acquisition, check_angles

log = logging.getLogger(__name__)

#: Largest difference (deg) between a tilt that a file records and the sheet's angle for it.
#: The stage readout (Stage.AlphaTilt) differs from the nominal angle of the tilt scheme by
#: the goniometer's setting error and backlash, about 0.1 deg; tilt steps are 1 deg or
#: more, so 0.5 deg tolerates the readout and still catches a pairing shifted by one step.
ANGLE_TOLERANCE_DEG = 0.5
#: Relative tolerances of pixel size and beam energy between tilts: both are nominal
#: settings, written identically into every file of one series; 0.1 % allows for rounding.
PIXEL_SIZE_RTOL = 1e-3
BEAM_ENERGY_RTOL = 1e-3
#: Largest difference (eV) between the detector resolutions of two tilts: a recorded
#: calibration of one detector is the same number in every file.
RESOLUTION_ATOL_EV = 0.5
#: Files named in full in a message; further ones are counted.
_NAMED_FILES = 6

ANGLES_FROM_METADATA = "metadata (Stage.tilt_alpha)"


def natural_key(path: str | os.PathLike) -> tuple:
    """Sort key that orders the numbers inside names by value: ``t2`` before ``t10``.

    The path is split into runs of digits and of other characters; digit runs compare as
    integers, the others case-insensitively; the path itself breaks ties (``t01``, ``t1``).
    """
    text = str(path)
    parts = re.split(r"(\d+)", text)
    return (tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), text)


def _files(paths: Sequence[str | os.PathLike]) -> str:
    """Paths for a message: the first few in full, then how many more."""
    named = ", ".join(str(p) for p in paths[:_NAMED_FILES])
    more = len(paths) - _NAMED_FILES
    return f"{named} and {more} more" if more > 0 else named


# ---------------------------------------------------------------------------------------------
# Consistency
# ---------------------------------------------------------------------------------------------


def check_acquisitions(
    acquisitions: Sequence[Acquisition], *, keep_frames: bool = False,
    pixel_size_given: bool = False,
) -> None:
    """Check that the tilts of one series were acquired alike.

    Every file must match the first in image shape, pixel size (unless the sheet gives
    one), energy axis, beam energy, detector resolution, EDS detectors (where both record
    them) and, when frames are kept, number of frames.

    Parameters
    ----------
    acquisitions : sequence of Acquisition
        The headers of the series, any order.
    keep_frames : bool
        Frames are kept: every tilt needs the same number.
    pixel_size_given : bool
        The pixel size comes from the sample sheet: the files' sizes are not compared.

    Raises
    ------
    EdxtomoInputError
        Naming the file that differs, its value and the first file's.
    """
    if not acquisitions:
        raise EdxtomoInputError("no raw files given for the tilt series")
    first = acquisitions[0]
    for other in acquisitions[1:]:
        difference = _difference(first, other, keep_frames, pixel_size_given)
        if difference:
            raise EdxtomoInputError(f"{other.path}: {difference}")


def _difference(
    first: Acquisition, other: Acquisition, keep_frames: bool, pixel_size_given: bool
) -> str | None:
    """What in ``other`` differs from ``first``, as the rest of a message; None if nothing."""
    of_first = f"of {first.path}"
    if other.image_shape != first.image_shape:
        return f"image shape {other.image_shape} differs from {first.image_shape} {of_first}"
    if (not pixel_size_given and None not in (first.pixel_size_nm, other.pixel_size_nm)
            and not np.isclose(other.pixel_size_nm, first.pixel_size_nm, rtol=PIXEL_SIZE_RTOL)):
        return (f"pixel size {other.pixel_size_nm:.6g} nm differs from "
                f"{first.pixel_size_nm:.6g} nm {of_first}")
    if not _same_energy_axis(first, other):
        return (f"energy axis ({other.n_channel} channels, {other.energy_offset_keV:g} + "
                f"{other.energy_scale_keV:g} keV/channel) differs from that {of_first} "
                f"({first.n_channel} channels, {first.energy_offset_keV:g} + "
                f"{first.energy_scale_keV:g} keV/channel)")
    if not np.isclose(other.beam_energy_keV, first.beam_energy_keV, rtol=BEAM_ENERGY_RTOL):
        return (f"beam energy {other.beam_energy_keV:g} kV differs from "
                f"{first.beam_energy_keV:g} kV {of_first}: one series is acquired at one "
                "voltage (line intensities and usable lines depend on it)")
    if abs(other.resolution_mnka_eV - first.resolution_mnka_eV) > RESOLUTION_ATOL_EV:
        return (f"detector resolution {other.resolution_mnka_eV:g} eV (Mn Ka) differs from "
                f"{first.resolution_mnka_eV:g} eV {of_first}")
    if first.detectors and other.detectors and other.detectors != first.detectors:
        return (f"EDS detectors {', '.join(other.detectors)} differ from "
                f"{', '.join(first.detectors)} {of_first}: the solid angle, hence the counts "
                "per atom, would change from tilt to tilt")
    if keep_frames and other.n_frame != first.n_frame:
        return (f"{other.n_frame} frames but {first.path} has {first.n_frame}; frames can only "
                "be kept when every tilt has the same number")
    return None


def _same_energy_axis(first: Acquisition, other: Acquisition) -> bool:
    return (other.n_channel == first.n_channel
            and np.isclose(other.energy_offset_keV, first.energy_offset_keV, atol=1e-6)
            and np.isclose(other.energy_scale_keV, first.energy_scale_keV, rtol=1e-6))


# ---------------------------------------------------------------------------------------------
# Angles
# ---------------------------------------------------------------------------------------------


def order_tilts(
    paths: Sequence[str | os.PathLike],
    acquisitions: Sequence[Acquisition],
    angles_deg: Sequence[float] | None = None,
) -> tuple[list[Path], np.ndarray, str]:
    """The files of a series sorted by tilt, each with its angle.

    - Every file records a stage tilt: each file takes its own tilt. With ``angles_deg``
      too, the sorted sheet angles must match the sorted tilts within
      :data:`ANGLE_TOLERANCE_DEG`; the sheet's values are then used (what the user
      asserts), paired by the files' own tilts, never by position. Two files with one
      tilt are an error, but when *every* file records the same tilt (a stage readout
      that did not follow the views, or a default written by HyperSpy), the files count
      as recording none.
    - No file records one: ``angles_deg`` is required, one per file, paired with the files
      in natural order of their paths (:func:`natural_key`).
    - Some do: ``angles_deg`` is required, paired in natural order, and checked against
      the tilts that are recorded.

    Parameters
    ----------
    paths : sequence of path-like
        The raw files, any order.
    acquisitions : sequence of Acquisition
        Their headers, in the order of ``paths``.
    angles_deg : sequence of float, optional
        The sample sheet's angles in degrees; None or empty when it gives none.

    Returns
    -------
    paths : list of Path
        Sorted by angle.
    angles_deg : ndarray, shape (n_tilt,)
        Ascending, in degrees.
    source : str
        Where the angles came from, for the provenance.

    Raises
    ------
    EdxtomoInputError
        A file given twice, angles missing or miscounted, duplicate angles, or sheet angles
        that contradict the recorded tilts; the message names the files.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise EdxtomoInputError("no raw files given for the tilt series")
    if len(acquisitions) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(acquisitions)} acquisitions")
    _check_distinct(paths)
    sheet = _sheet_angles(paths, angles_deg)
    recorded = [a.angle_deg for a in acquisitions]
    if all(angle is not None for angle in recorded):
        if len(paths) > 1 and len(set(recorded)) == 1:
            return _one_tilt_everywhere(paths, recorded[0], sheet)
        return _by_recorded_tilt(paths, np.asarray(recorded, dtype=float), sheet)
    missing = sorted((p for p, angle in zip(paths, recorded, strict=True) if angle is None),
                     key=natural_key)
    if sheet is None:
        others = "" if len(missing) == len(paths) else " (the other files record one)"
        raise EdxtomoInputError(f"no stage tilt in {_files(missing)}{others}; give angles_deg "
                                "in the sample sheet, one angle per file in natural order of "
                                "the file names")
    return _by_sheet(paths, recorded, sheet)


def _check_distinct(paths: Sequence[Path]) -> None:
    seen: dict[Path, int] = {}
    for path in paths:
        seen[path.resolve()] = seen.get(path.resolve(), 0) + 1
    twice = [str(p) for p, n in seen.items() if n > 1]
    if twice:
        raise EdxtomoInputError(f"{_files(twice)} given more than once for one tilt series")


def _sheet_angles(paths: Sequence[Path], angles_deg: Sequence[float] | None) -> np.ndarray | None:
    if angles_deg is None or len(angles_deg) == 0:
        return None
    if len(angles_deg) != len(paths):
        raise EdxtomoInputError(f"{len(paths)} raw files but {len(angles_deg)} tilt angles in "
                                f"angles_deg (first file {paths[0]})")
    return check_angles(angles_deg, source="angles_deg", unique=True)


def _by_recorded_tilt(
    paths: list[Path], recorded: np.ndarray, sheet: np.ndarray | None
) -> tuple[list[Path], np.ndarray, str]:
    order = np.argsort(recorded, kind="stable")
    paths, recorded = [paths[i] for i in order], recorded[order]
    _check_no_duplicate(paths, recorded)
    if sheet is None:
        return paths, recorded, ANGLES_FROM_METADATA
    sheet = np.sort(sheet)
    _check_agreement(paths, recorded, sheet, "sorted against sorted")
    return paths, sheet, f"angles_deg (paired by the files' own tilts, {ANGLES_FROM_METADATA})"


def _by_sheet(
    paths: list[Path], recorded: Sequence[float | None], sheet: np.ndarray
) -> tuple[list[Path], np.ndarray, str]:
    """Sheet angle k for the k-th file in natural order, checked where a tilt is recorded."""
    natural = sorted(range(len(paths)), key=lambda i: natural_key(paths[i]))
    paths, recorded = [paths[i] for i in natural], [recorded[i] for i in natural]
    known = [k for k, angle in enumerate(recorded) if angle is not None]
    _check_agreement([paths[k] for k in known], np.array([recorded[k] for k in known]),
                     sheet[known], "in natural order of the file names")
    order = np.argsort(sheet, kind="stable")
    return ([paths[i] for i in order], sheet[order],
            "angles_deg (paired with the files in natural order of their names)")


def _one_tilt_everywhere(
    paths: list[Path], value: float, sheet: np.ndarray | None
) -> tuple[list[Path], np.ndarray, str]:
    """Every file records the same tilt: it says nothing of each view's angle, so the files
    are taken as recording none."""
    hint = (" (HyperSpy's EDS classes write 0 deg for an unknown tilt into the files they "
            "save)" if value == 0 else "")
    what = (f"all {len(paths)} files record the same stage tilt {value:g} deg "
            f"(Stage.tilt_alpha){hint}, which is not the angle of each view")
    if sheet is None:
        raise EdxtomoInputError(f"{what}: {_files(sorted(paths, key=natural_key))}; give "
                                "angles_deg in the sample sheet, one angle per file in natural "
                                "order of the file names")
    log.warning("%s; angles_deg is paired with the files in natural order of their names",
                what)
    return _by_sheet(paths, [None] * len(paths), sheet)


def _check_no_duplicate(paths: Sequence[Path], angles: np.ndarray) -> None:
    values, counts = np.unique(angles, return_counts=True)
    if np.any(counts > 1):
        value = values[counts > 1][0]
        same = [p for p, a in zip(paths, angles, strict=True) if a == value]
        raise EdxtomoInputError(
            f"duplicate tilt angle {value:g} deg (Stage.tilt_alpha) in {_files(same)}: each "
            "file of a series must be another tilt"
        )


def _check_agreement(
    paths: Sequence[Path], recorded: np.ndarray, sheet: np.ndarray, pairing: str
) -> None:
    """Raise naming every file whose recorded tilt differs from its sheet angle."""
    wrong = np.flatnonzero(np.abs(recorded - sheet) > ANGLE_TOLERANCE_DEG)
    if wrong.size:
        pairs = "; ".join(f"{paths[i]} records {recorded[i]:g} deg, the sheet gives "
                          f"{sheet[i]:g} deg" for i in wrong)
        raise EdxtomoInputError(
            f"angles_deg contradicts the stage tilts recorded in {wrong.size} of "
            f"{len(paths)} files (compared {pairing}, tolerance {ANGLE_TOLERANCE_DEG:g} deg): "
            f"{pairs}. Correct angles_deg, or leave it empty to use the recorded tilts"
        )
