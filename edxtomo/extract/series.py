"""The extract stage: raw files, one per tilt, to a :class:`~edxtomo.io.TiltSeries`.

:func:`extract_tilt_series` reads the files one at a time, plans the lines and windows from
the first (:mod:`~edxtomo.extract.windows`), reduces each spectrum image at once
(:mod:`~edxtomo.extract.reduction`), then sorts the tilts by angle and builds the background
(:mod:`~edxtomo.extract.background`) or unmixes overlapping lines
(:mod:`~edxtomo.extract.model`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.extract.background import background_maps, window_background
from edxtomo.extract.model import fit_eds_model, unmix, unmixing_matrix
from edxtomo.extract.reduction import reduce_spectrum_image
from edxtomo.extract.windows import LineWindows, channel_range, merge_ranges, plan_lines
from edxtomo.io import (
    HAADF,
    Acquisition,
    TiltSeries,
    acquisition_of,
    check_angles,
    check_raw_file,
    read_haadf,
    read_spectrum_image,
)
from edxtomo.options import ExtractOptions, parse_options

log = logging.getLogger(__name__)


@dataclass
class SummedSpectrum:
    """The spectrum summed over all tilts and pixels, with the windows used, for the report.

    Attributes
    ----------
    energy_keV : ndarray, shape (n_channel,)
    counts : ndarray, shape (n_channel,)
        int64 counts.
    lines : dict of str to LineWindows
        Per element, its line and windows (keV).
    model : ndarray or None
        Fitted EDS model, counts per channel (``method="model"`` only).
    model_background : ndarray or None
        Its background component.
    """

    energy_keV: np.ndarray
    counts: np.ndarray
    lines: dict[str, LineWindows]
    model: np.ndarray | None = None
    model_background: np.ndarray | None = None

    def to_dataframe(self):
        """Columns ``energy_keV``, ``counts`` (and ``model_counts``, ``model_background``)."""
        import pandas as pd

        table = {"energy_keV": self.energy_keV, "counts": self.counts}
        if self.model is not None:
            table["model_counts"] = self.model
            table["model_background"] = self.model_background
        return pd.DataFrame(table)

    def windows_dataframe(self):
        """One row per window: ``element, line, line_energy_keV, kind, low_keV, high_keV``."""
        import pandas as pd

        rows = []
        for element, windows in self.lines.items():
            for kind, (low, high) in [("integration", windows.integration_keV)] + [
                ("background", w) for w in windows.background_keV
            ]:
                rows.append({"element": element, "line": windows.line,
                             "line_energy_keV": windows.energy_keV, "kind": kind,
                             "low_keV": low, "high_keV": high})
        return pd.DataFrame(rows)


@dataclass
class _Tilt:
    """What one file leaves after its reduction."""

    acquisition: Acquisition
    gross: dict[str, np.ndarray]
    continuum: np.ndarray
    spectrum: np.ndarray
    haadf: np.ndarray | None


@dataclass
class _Windows:
    """The lines and windows of a series, in keV and in channels."""

    plan: dict[str, LineWindows]
    elements: dict[str, tuple[int, int]]
    continuum: list[tuple[int, int]]

    @classmethod
    def of(cls, plan: dict[str, LineWindows], acquisition: Acquisition) -> _Windows:
        def channels(window: Sequence[float]) -> tuple[int, int]:
            return channel_range(window, acquisition.energy_offset_keV,
                                 acquisition.energy_scale_keV, acquisition.n_channel)

        return cls(
            plan,
            {e: channels(p.integration_keV) for e, p in plan.items()},
            merge_ranges([channels(w) for p in plan.values() for w in p.background_keV]),
        )

    def background(self, element: str, acquisition: Acquisition) -> list[tuple[int, int]]:
        return [channel_range(w, acquisition.energy_offset_keV, acquisition.energy_scale_keV,
                              acquisition.n_channel) for w in self.plan[element].background_keV]


def _resolve_elements(elements: Sequence[str] | None, acquisition: Acquisition) -> list[str]:
    if elements:
        return list(dict.fromkeys(elements))
    if not acquisition.elements:
        raise EdxtomoInputError(
            f"{acquisition.path}: the file selects no elements (its element selection is "
            "empty); give `elements` in the sample sheet or in the config (extract: elements)"
        )
    return list(dict.fromkeys(acquisition.elements))


def _check_same_acquisition(
    first: Acquisition, other: Acquisition, keep_frames: bool, pixel_size_given: bool
) -> None:
    if other.image_shape != first.image_shape:
        raise EdxtomoInputError(
            f"{other.path}: image shape {other.image_shape} differs from "
            f"{first.image_shape} of {first.path}"
        )
    if (not pixel_size_given and first.pixel_size_nm is not None
            and other.pixel_size_nm is not None
            and not np.isclose(other.pixel_size_nm, first.pixel_size_nm, rtol=1e-3)):
        raise EdxtomoInputError(
            f"{other.path}: pixel size {other.pixel_size_nm:.6g} nm differs from "
            f"{first.pixel_size_nm:.6g} nm of {first.path}"
        )
    same_axis = (other.n_channel == first.n_channel
                 and np.isclose(other.energy_offset_keV, first.energy_offset_keV, atol=1e-6)
                 and np.isclose(other.energy_scale_keV, first.energy_scale_keV, rtol=1e-6))
    if not same_axis:
        raise EdxtomoInputError(
            f"{other.path}: energy axis ({other.n_channel} channels, "
            f"{other.energy_offset_keV:g} + {other.energy_scale_keV:g} keV/channel) differs "
            f"from that of {first.path}"
        )
    if keep_frames and other.n_frame != first.n_frame:
        raise EdxtomoInputError(
            f"{other.path}: {other.n_frame} frames but {first.path} has {first.n_frame}; "
            "frames can only be kept when every tilt has the same number"
        )


def _reduce_tilt(
    detectors: list, acquisition: Acquisition, windows: _Windows, keep_frames: bool
) -> _Tilt:
    """Window counts, continuum map and spectrum of one file (detectors summed), and HAADF."""
    path = acquisition.path
    ranges = list(windows.elements.values()) + windows.continuum
    sums: list[np.ndarray] = []
    spectrum = np.zeros(acquisition.n_channel, dtype=np.int64)
    for detector in detectors:
        try:
            detector_sums, detector_spectrum = reduce_spectrum_image(detector.data, ranges)
        except Exception as exc:  # lazy readers fail only now on a corrupt data block
            raise EdxtomoInputError(
                f"{path}: cannot read the spectrum image ({type(exc).__name__}: {exc})"
            ) from exc
        sums = detector_sums if not sums else [a + b for a, b in zip(sums, detector_sums,
                                                                       strict=True)]
        spectrum += detector_spectrum
    if spectrum.sum() == 0:
        raise EdxtomoInputError(f"{path}: the spectrum image holds no counts (truncated file?)")
    n_element = len(windows.elements)
    gross = dict(zip(windows.elements, sums[:n_element], strict=True))
    if acquisition.n_frame is None and keep_frames:
        gross = {element: counts[None] for element, counts in gross.items()}
    elif acquisition.n_frame is not None and not keep_frames:
        gross = {element: counts.sum(axis=0) for element, counts in gross.items()}
    continuum = sum(sums[n_element:], np.zeros(acquisition.image_shape, dtype=np.int64))
    if continuum.ndim == 3:
        continuum = continuum.sum(axis=0)
    return _Tilt(acquisition, gross, continuum, spectrum, read_haadf(path))


def _read_tilts(
    paths: Sequence[Path],
    elements: Sequence[str] | None,
    plan_options: Mapping[str, Any],
    keep_frames: bool,
    pixel_size_given: bool,
) -> tuple[list[_Tilt], _Windows]:
    """Read and reduce every file in turn; the first one fixes the elements and windows."""
    tilts: list[_Tilt] = []
    for path in tqdm(paths, desc="extract", unit="tilt"):
        detectors = read_spectrum_image(path, keep_frames=keep_frames)
        acquisition = acquisition_of(detectors[0], path)
        if not tilts:
            reference, from_file = acquisition, not elements
            elements = _resolve_elements(elements, acquisition)
            windows = _Windows.of(plan_lines(elements, acquisition, **plan_options), acquisition)
            if keep_frames and acquisition.n_frame is None:
                log.warning("%s has no frames; each tilt is kept as one frame", path)
        _check_same_acquisition(reference, acquisition, keep_frames, pixel_size_given)
        if from_file and set(acquisition.elements) != set(elements):
            log.warning("%s selects elements %s; using %s", path, list(acquisition.elements),
                        elements)
        tilts.append(_reduce_tilt(detectors, acquisition, windows, keep_frames))
        del detectors
        log.info("%s: tilt %s deg, gross counts %s", path.name, acquisition.angle_deg,
                 ", ".join(f"{e} {int(c.sum())}" for e, c in tilts[-1].gross.items()))
    return tilts, windows


def extract_tilt_series(
    raw_paths: Sequence[str | os.PathLike],
    options: ExtractOptions | None = None,
    *,
    elements: Sequence[str] | None = None,
    angles_deg: Sequence[float] | None = None,
    pixel_size_nm: float | None = None,
) -> tuple[TiltSeries, SummedSpectrum]:
    """Extract element maps, HAADF, angles and pixel size from raw files, one per tilt.

    Parameters
    ----------
    raw_paths : sequence of path-like
        One spectrum-image file per tilt, any order.
    options : ExtractOptions, optional
        Lines, windows, method (``"windows"``: gross window counts plus a background model,
        integer counts; ``"model"``: EDS-model unmixing, float net counts), frames.
        Default ``ExtractOptions()``.
    elements : sequence of str, optional
        Element symbols (a sample sheet's own); default ``options.elements``, and when that
        is empty the element selection stored in the first file.
    angles_deg : sequence of float, optional
        Tilt angle of each file in ``raw_paths`` order, overriding the metadata.
    pixel_size_nm : float, optional
        Pixel size in nm, overriding the metadata.

    Returns
    -------
    series : TiltSeries
        Sorted by angle. ``"HAADF"`` (float32, mean over frames, when every file has one)
        and one stack per element: gross counts (uint16 or uint32) with ``background``
        for ``"windows"``, float32 net counts for ``"model"``.
    spectrum : SummedSpectrum
        The spectrum summed over tilts and pixels, with the windows.

    Raises
    ------
    EdxtomoInputError
        A bad file, missing or duplicate angles, inconsistent shapes, pixel sizes or energy
        axes, no elements, or a line outside the energy range.
    """
    options = parse_options(ExtractOptions, options, "extract")
    method, integration_fwhm, background = (options.method, options.integration_fwhm,
                                            options.background)
    keep_frames, background_sigma_px = options.keep_frames, options.background_sigma_px
    elements = list(elements or options.elements) or None
    paths = [check_raw_file(p) for p in raw_paths]
    if not paths:
        raise EdxtomoInputError("no raw files given for the tilt series")
    angles_deg = list(angles_deg) if angles_deg is not None and len(angles_deg) > 0 else None
    if angles_deg is not None:
        if len(angles_deg) != len(paths):
            raise EdxtomoInputError(
                f"{len(paths)} raw files but {len(angles_deg)} tilt angles in angles_deg "
                f"(first file {paths[0]})"
            )
        check_angles(angles_deg, source="angles_deg", unique=True)
    plan_options = {"lines": dict(options.lines), "integration_fwhm": integration_fwhm,
                    "background": background}
    tilts, windows = _read_tilts(paths, elements, plan_options, keep_frames,
                                 pixel_size_nm is not None)
    acquisition = tilts[0].acquisition
    angles, angles_source = _angles(tilts, angles_deg)
    size_nm, size_source = _pixel_size(tilts, pixel_size_nm)
    order = np.argsort(angles, kind="stable")
    tilts, angles = [tilts[i] for i in order], angles[order]

    spectrum = np.sum([t.spectrum for t in tilts], axis=0)
    gross = {e: np.stack([t.gross[e] for t in tilts]) for e in windows.plan}
    fit = fit_eds_model(spectrum, acquisition, windows.plan) if method == "model" else None
    if fit is None:
        under_window = {e: window_background(spectrum, windows.elements[e],
                                             windows.background(e, acquisition),
                                             acquisition.energy_keV,
                                             acquisition.beam_energy_keV)
                        for e in windows.plan}
    else:
        under_window = {e: float(fit.background[slice(*r)].sum())
                        for e, r in windows.elements.items()}
    continuum_total = float(sum(spectrum[a:b].sum() for a, b in windows.continuum))
    ratios = {e: b / continuum_total if continuum_total > 0 else 0.0
              for e, b in under_window.items() if windows.plan[e].background_keV}
    backgrounds = background_maps(ratios, np.stack([t.continuum for t in tilts]),
                                  background_sigma_px) if ratios else {}

    provenance: dict[str, Any] = {
        "route": "raw",
        "source_files": [str(t.acquisition.path) for t in tilts],
        "method": method,
        "integration_fwhm": float(integration_fwhm),
        "background": background if isinstance(background, str) else "explicit",
        "background_model": (
            "expected counts per pixel = r * continuum map (background-window counts, "
            f"Gaussian-smoothed by {background_sigma_px:g} px, sum kept); r = background "
            "under the integration window / background-window counts, from the spectrum "
            "summed over the series ("
            + ("EDS-model polynomial" if fit is not None
               else "line through both sides, or Kramers' law from one side") + ")"
        ),
        "background_sigma_px": float(background_sigma_px),
        "beam_energy_keV": acquisition.beam_energy_keV,
        "resolution_mnka_eV": acquisition.resolution_mnka_eV,
        "energy_offset_keV": acquisition.energy_offset_keV,
        "energy_scale_keV": acquisition.energy_scale_keV,
        "n_channel": acquisition.n_channel,
        "frames_kept": bool(keep_frames),
        "angles_source": angles_source,
        "pixel_size_source": size_source,
        "channels": {},
    }
    if fit is None:
        maps = {e: _as_counts(g) for e, g in gross.items()}
    else:
        matrix = unmixing_matrix(fit.signatures, windows.elements)
        maps, backgrounds = unmix(gross, backgrounds, matrix), {}
        provenance.update(unmixing_matrix=matrix.tolist(), unmixing_elements=list(gross),
                          model_fit_range_keV=list(fit.fit_range_keV))
    for e in gross:
        provenance["channels"][e] = {
            **windows.plan[e].as_provenance(),
            "integration_channels": list(windows.elements[e]),
            "counts": fit is None,
            "quantity": ("gross counts in the integration window" if fit is None
                         else "net counts in the integration window, EDS-model unmixing"),
            "series_gross_counts": int(gross[e].sum()),
            "series_background_counts": float(under_window[e]) if e in ratios else 0.0,
        }
        log.info("%s: %d gross counts over the series, %.1f background", e,
                 int(gross[e].sum()), provenance["channels"][e]["series_background_counts"])

    channels = _haadf_channel(tilts, provenance)
    channels.update(maps)
    series = TiltSeries(channels, angles, size_nm, provenance, backgrounds)
    summed = SummedSpectrum(
        acquisition.energy_keV, spectrum, windows.plan,
        model=None if fit is None else fit.model,
        model_background=None if fit is None else fit.background,
    )
    return series, summed


def _haadf_channel(tilts: Sequence[_Tilt], provenance: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{"HAADF": stack}`` when every tilt has a HAADF image, else ``{}`` with a warning."""
    missing = [str(t.acquisition.path) for t in tilts if t.haadf is None]
    if missing:
        log.warning("no HAADF image in %s; the series has no HAADF (alignment then uses the "
                    "summed EDX signal)", ", ".join(missing))
        return {}
    provenance["channels"][HAADF] = {"quantity": "HAADF intensity, mean over its frames",
                                     "counts": False}
    return {HAADF: np.stack([t.haadf for t in tilts]).astype(np.float32)}


def _as_counts(counts: np.ndarray) -> np.ndarray:
    """Non-negative integer counts in the smallest of uint16 and uint32 that holds them."""
    dtype = np.uint16 if counts.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    return counts.astype(dtype)


def _angles(tilts: Sequence[_Tilt], angles_deg: Sequence[float] | None) -> tuple[np.ndarray, str]:
    if angles_deg is not None:
        return np.asarray(angles_deg, dtype=float), "angles_deg"
    for tilt in tilts:
        if tilt.acquisition.angle_deg is None:
            raise EdxtomoInputError(
                f"{tilt.acquisition.path}: no tilt angle in the metadata "
                "(Stage.tilt_alpha); give angles_deg in the sample sheet"
            )
    angles = np.array([t.acquisition.angle_deg for t in tilts])
    values, counts = np.unique(angles, return_counts=True)
    if np.any(counts > 1):
        value = values[counts > 1][0]
        same = [str(t.acquisition.path) for t in tilts if t.acquisition.angle_deg == value]
        hint = (" (exspy reports 0 deg for a file that records no stage tilt: give angles_deg)"
                if value == 0 else "")
        raise EdxtomoInputError(f"duplicate tilt angle {value:g} deg in {', '.join(same)}{hint}")
    return angles, "metadata (Stage.tilt_alpha)"


def _pixel_size(tilts: Sequence[_Tilt], pixel_size_nm: float | None) -> tuple[float, str]:
    if pixel_size_nm is not None:
        return float(pixel_size_nm), "pixel_size_nm"
    size = tilts[0].acquisition.pixel_size_nm
    if size is None:
        raise EdxtomoInputError(
            f"{tilts[0].acquisition.path}: the axes carry no length unit; give pixel_size_nm"
        )
    return size, "metadata (axes)"
