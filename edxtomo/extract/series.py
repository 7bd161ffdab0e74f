"""The extract stage: raw files, one per tilt, to a :class:`~edxtomo.io.TiltSeries`.

:func:`extract_tilt_series` first reads every file's header (:func:`~edxtomo.io.read_header`),
checks that the tilts were acquired alike and pairs each file with its angle
(:mod:`~edxtomo.extract.tilts`). It plans the lines and windows from the lowest tilt
(:mod:`~edxtomo.extract.windows`), reduces each spectrum image at once, one file at a time
(:mod:`~edxtomo.extract.reduction`), then looks at the spectrum summed over the series
(:mod:`~edxtomo.extract.presence`): background windows move off every peak found in it,
and each element must stand above its background or is flagged ``element_absent``. Last
it builds the background (:mod:`~edxtomo.extract.background`) or unmixes overlapping lines
(:mod:`~edxtomo.extract.model`).

The windows are reduced as continuum pieces (:mod:`~edxtomo.extract.windows`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.extract.background import background_maps, window_background
from edxtomo.extract.model import fit_eds_model, unmix, unmixing_matrix
from edxtomo.extract.presence import (
    SIGNIFICANCE_SIGMA,
    ElementPresence,
    Peak,
    element_presence,
    find_peaks,
)
from edxtomo.extract.reduction import reduce_spectrum_image
from edxtomo.extract.tilts import check_acquisitions, order_tilts
from edxtomo.extract.windows import (
    ChannelWindows,
    LineWindows,
    avoid_peaks,
    plan_lines,
)
from edxtomo.io import (
    EAGER_READ_MAX_BYTES,
    HAADF,
    Acquisition,
    TiltSeries,
    read_haadf,
    read_header,
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
    presence : dict of str to ElementPresence
        Per element, its presence test over the series.
    peaks : list of Peak
        The peaks found in the spectrum, which the automatic background windows avoid.
    """

    energy_keV: np.ndarray
    counts: np.ndarray
    lines: dict[str, LineWindows]
    model: np.ndarray | None = None
    model_background: np.ndarray | None = None
    presence: dict[str, ElementPresence] = field(default_factory=dict)
    peaks: list[Peak] = field(default_factory=list)

    def to_dataframe(self):
        """Columns ``energy_keV``, ``counts`` (and ``model_counts``, ``model_background``)."""
        import pandas as pd

        table = {"energy_keV": self.energy_keV, "counts": self.counts}
        if self.model is not None:
            table["model_counts"] = self.model
            table["model_background"] = self.model_background
        return pd.DataFrame(table)

    def windows_dataframe(self):
        """One row per window: ``element, line, line_energy_keV, kind, low_keV, high_keV``,
        and the element's ``net_counts``, ``significance_sigma`` and ``element_absent``
        (its presence test over the series, repeated on each of its rows)."""
        import pandas as pd

        rows = []
        for element, windows in self.lines.items():
            presence = self.presence.get(element)
            test = {"net_counts": presence.net_counts if presence else np.nan,
                    "significance_sigma": presence.significance_sigma if presence else np.nan,
                    "element_absent": bool(presence.absent) if presence else False}
            for kind, (low, high) in [("integration", windows.integration_keV)] + [
                ("background", w) for w in windows.background_keV
            ]:
                rows.append({"element": element, "line": windows.line,
                             "line_energy_keV": windows.energy_keV, "kind": kind,
                             "low_keV": low, "high_keV": high, **test})
        return pd.DataFrame(rows)


@dataclass
class _Tilt:
    """What one file leaves after its reduction."""

    acquisition: Acquisition
    gross: dict[str, np.ndarray]
    pieces: np.ndarray  # (n_piece, ny, nx) counts in each continuum piece, frames summed
    # Counts are held as uint16 (uint32 where needed) from here on: pieces and window
    # counts of every tilt stay in memory until the series is complete.
    spectrum: np.ndarray
    haadf: np.ndarray | None


def _resolve_elements(elements: Sequence[str] | None, acquisition: Acquisition) -> list[str]:
    if elements:
        return list(dict.fromkeys(elements))
    if not acquisition.elements:
        raise EdxtomoInputError(
            f"{acquisition.path}: the file selects no elements (its element selection is "
            "empty); give `elements` in the sample sheet or in the config (extract: elements)"
        )
    return list(dict.fromkeys(acquisition.elements))


def _check_data(detectors: list, acquisition: Acquisition) -> None:
    """The spectrum image that the reader returns must have the shape its header says."""
    shape = tuple(detectors[0].data.shape)
    frames_ok = len(shape) == 3 or (len(shape) == 4 and shape[0] == acquisition.n_frame)
    if (shape[-1] != acquisition.n_channel or shape[-3:-1] != acquisition.image_shape
            or not frames_ok):
        raise EdxtomoInputError(
            f"{acquisition.path}: the spectrum image has shape {shape} but the metadata "
            f"gives {acquisition.image_shape} px, {acquisition.n_channel} channels and "
            f"{acquisition.n_frame} frames: inconsistent file"
        )


def _reduce_tilt(
    detectors: list, acquisition: Acquisition, windows: ChannelWindows, keep_frames: bool
) -> _Tilt:
    """Window counts, continuum pieces and spectrum of one file (detectors summed), and HAADF."""
    path = acquisition.path
    _check_data(detectors, acquisition)
    ranges = list(windows.elements.values()) + windows.pieces
    sums: list[np.ndarray] = []
    spectrum = np.zeros(acquisition.n_channel, dtype=np.int64)
    for detector in detectors:
        try:
            detector_sums, detector_spectrum = reduce_spectrum_image(detector.data, ranges)
        except Exception as exc:  # lazy readers fail only now on a corrupt data block
            raise EdxtomoInputError(
                f"{path}: cannot read the spectrum image ({type(exc).__name__}: {exc})"
            ) from exc
        if sums:
            for total, more in zip(sums, detector_sums, strict=True):
                total += more  # in place: one set of maps in memory, whatever the detectors
        else:
            sums = detector_sums
        spectrum += detector_spectrum
    if spectrum.sum() == 0:
        raise EdxtomoInputError(f"{path}: the spectrum image holds no counts (truncated file?)")
    n_element = len(windows.elements)
    framed = detectors[0].data.ndim == 4
    gross = dict(zip(windows.elements, sums[:n_element], strict=True))
    if keep_frames and not framed:
        gross = {element: counts[None] for element, counts in gross.items()}
    elif framed and not keep_frames:
        gross = {element: counts.sum(axis=0) for element, counts in gross.items()}
    pieces = [_as_counts(p.sum(axis=0) if framed else p) for p in sums[n_element:]]
    pieces = np.stack(pieces) if pieces else np.zeros((0, *acquisition.image_shape), np.uint16)
    return _Tilt(acquisition, {e: _as_counts(c) for e, c in gross.items()}, pieces, spectrum,
                 read_haadf(path))


def _read_tilts(acquisitions: Sequence[Acquisition], windows: ChannelWindows,
                keep_frames: bool) -> list[_Tilt]:
    """Read and reduce every file in turn; small files at once, large ones lazily."""
    tilts = []
    for acquisition in tqdm(acquisitions, desc="extract", unit="tilt"):
        lazy = acquisition.dense_bytes(keep_frames) > EAGER_READ_MAX_BYTES
        detectors = read_spectrum_image(acquisition.path, keep_frames=keep_frames, lazy=lazy)
        tilts.append(_reduce_tilt(detectors, acquisition, windows, keep_frames))
        del detectors
        log.info("%s: tilt %s deg, gross counts %s", acquisition.path.name,
                 acquisition.angle_deg,
                 ", ".join(f"{e} {int(c.sum())}" for e, c in tilts[-1].gross.items()))
    return tilts


def _ordered_headers(
    raw_paths: Sequence[str | os.PathLike], angles_deg: Sequence[float] | None,
    keep_frames: bool, pixel_size_given: bool,
) -> tuple[list[Acquisition], np.ndarray, str]:
    """Every file's header, checked across the series and sorted by angle."""
    if not raw_paths:
        raise EdxtomoInputError("no raw files given for the tilt series")
    headers = [read_header(p) for p in raw_paths]
    check_acquisitions(headers, keep_frames=keep_frames, pixel_size_given=pixel_size_given)
    paths, angles, source = order_tilts([h.path for h in headers], headers, angles_deg)
    by_path = {h.path: h for h in headers}
    if keep_frames and headers[0].n_frame is None:
        log.warning("%s has no frames; each tilt is kept as one frame", headers[0].path)
    return [by_path[p] for p in paths], angles, source


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
        is empty the element selection stored in the lowest tilt's file.
    angles_deg : sequence of float, optional
        Tilt angles in degrees (see :func:`~edxtomo.extract.tilts.order_tilts`): checked
        against the tilts that the files record and paired by them; paired with the files
        in natural order of their names only when files record no tilt.
    pixel_size_nm : float, optional
        Pixel size in nm, overriding the metadata.

    Returns
    -------
    series : TiltSeries
        Sorted by angle. ``"HAADF"`` (float32, mean over frames, when every file has one)
        and one stack per element: gross counts (uint16 or uint32) with ``background``
        for ``"windows"``, float32 net counts for ``"model"``. An element whose line does
        not stand above its background is kept, with ``element_absent: true`` in
        ``provenance["channels"][element]``.
    spectrum : SummedSpectrum
        The spectrum summed over tilts and pixels, with the windows, peaks and presence
        tests.

    Raises
    ------
    EdxtomoInputError
        A bad file, missing, duplicate or contradicting angles, tilts acquired differently
        (shape, pixel size, energy axis, beam energy, detectors), no elements, or a line
        outside the energy range.
    """
    options = parse_options(ExtractOptions, options, "extract")
    acquisitions, angles, angles_source = _ordered_headers(
        raw_paths, angles_deg, options.keep_frames, pixel_size_nm is not None)
    first = acquisitions[0]
    elements = series_elements(list(elements or options.elements) or None, acquisitions)
    plan_options = {"lines": dict(options.lines), "integration_fwhm": options.integration_fwhm,
                    "background": options.background}
    windows = ChannelWindows.of(plan_lines(elements, first, **plan_options), first)
    tilts = _read_tilts(acquisitions, windows, options.keep_frames)
    size_nm, size_source = _pixel_size(first, pixel_size_nm)

    spectrum = np.sum([t.spectrum for t in tilts], axis=0)
    peaks = find_peaks(spectrum, first, elements)
    _log_unlisted(peaks)
    windows.plan = avoid_peaks(windows.plan, [p.energy_keV for p in peaks], first,
                               options.background)
    gross = {e: np.stack([t.gross[e] for t in tilts]) for e in windows.plan}
    fit = (fit_eds_model(spectrum, first, windows.plan) if options.method == "model"
           else None)
    under_window = _under_windows(spectrum, windows, fit)
    inside = windows.continuum_pieces()
    continuum_total = float(sum(spectrum[a:b].sum() for (a, b), keep
                                in zip(windows.pieces, inside, strict=True) if keep))
    ratios = {e: b / continuum_total if continuum_total > 0 else 0.0
              for e, b in under_window.items() if windows.plan[e].background_keV}
    continuum = np.stack([t.pieces[inside].sum(axis=0, dtype=np.int64) for t in tilts])
    backgrounds = (background_maps(ratios, continuum, options.background_sigma_px)
                   if ratios else {})
    if fit is None:
        maps = {e: _as_counts(g) for e, g in gross.items()}
        expected = {e: under_window[e] for e in ratios}
    else:
        matrix = unmixing_matrix(fit.signatures, windows.elements)
        maps, backgrounds = unmix(gross, backgrounds, matrix), {}
        # Without the element, its window holds the background and the other lines.
        expected = {e: float(gross[e].sum() - maps[e].sum()) for e in ratios}
    presence = {e: element_presence(e, float(gross[e].sum()), expected.get(e),
                                    windows.one_count_background(e)) for e in gross}

    provenance = _provenance(options, first, tilts, angles_source, size_source, fit, peaks)
    if fit is not None:
        provenance.update(unmixing_matrix=matrix.tolist(), unmixing_elements=list(gross),
                          model_fit_range_keV=list(fit.fit_range_keV))
    for e in gross:
        provenance["channels"][e] = _channel_provenance(
            windows, e, fit is None, gross[e], under_window[e] if e in ratios else 0.0,
            presence[e])

    channels = _haadf_channel(tilts, provenance)
    channels.update(maps)
    series = TiltSeries(channels, angles, size_nm, provenance, backgrounds)
    summed = SummedSpectrum(
        first.energy_keV, spectrum, windows.plan,
        model=None if fit is None else fit.model,
        model_background=None if fit is None else fit.background,
        presence=presence, peaks=peaks,
    )
    return series, summed


def series_elements(elements: list[str] | None,
                        acquisitions: Sequence[Acquisition]) -> list[str]:
    """The elements given, else the first file's selection (warning when files differ).

    Raises
    ------
    EdxtomoInputError
        No elements given and an empty element selection in the first file.
    """
    resolved = _resolve_elements(elements, acquisitions[0])
    if elements is None:
        for acquisition in acquisitions:
            if set(acquisition.elements) != set(resolved):
                log.warning("%s selects elements %s; using %s", acquisition.path,
                            list(acquisition.elements), resolved)
    return resolved


def _log_unlisted(peaks: Sequence[Peak]) -> None:
    unlisted = [p for p in peaks if not p.listed]
    if unlisted:
        log.warning(
            "the summed spectrum holds lines of no listed element: %s; background windows "
            "keep clear of them (list those elements if the specimen holds them)",
            ", ".join(f"{p.energy_keV:.3f} keV ({p.line or 'unidentified'}, "
                      f"{p.significance_sigma:.0f} sigma)" for p in unlisted))


def _under_windows(spectrum: np.ndarray, windows: ChannelWindows, fit: Any) -> dict[str, float]:
    """Background counts under each integration window in the summed spectrum."""
    if fit is not None:
        return {e: float(fit.background[slice(*r)].sum()) for e, r in windows.elements.items()}
    first = windows.acquisition
    return {e: window_background(spectrum, windows.elements[e], windows.background(e),
                                 first.energy_keV, first.beam_energy_keV)
            for e in windows.plan}


def _provenance(options: ExtractOptions, first: Acquisition, tilts: Sequence[_Tilt],
                angles_source: str, size_source: str, fit: Any,
                peaks: Sequence[Peak]) -> dict[str, Any]:
    background, sigma_px = options.background, options.background_sigma_px
    return {
        "route": "raw",
        "source_files": [str(t.acquisition.path) for t in tilts],
        "method": options.method,
        "integration_fwhm": float(options.integration_fwhm),
        "background": background if isinstance(background, str) else "explicit",
        "background_model": (
            "expected counts per pixel = r * continuum map (background-window counts, "
            f"Gaussian-smoothed by {sigma_px:g} px, sum kept); r = background "
            "under the integration window / background-window counts, from the spectrum "
            "summed over the series ("
            + ("EDS-model polynomial" if fit is not None
               else "line through both sides, or Kramers' law from one side") + ")"
        ),
        "background_sigma_px": float(sigma_px),
        "beam_energy_keV": first.beam_energy_keV,
        "resolution_mnka_eV": first.resolution_mnka_eV,
        "energy_offset_keV": first.energy_offset_keV,
        "energy_scale_keV": first.energy_scale_keV,
        "n_channel": first.n_channel,
        "detectors": list(first.detectors),
        "frames_kept": bool(options.keep_frames),
        "angles_source": angles_source,
        "pixel_size_source": size_source,
        "presence_threshold_sigma": SIGNIFICANCE_SIGMA,
        "spectrum_peaks": [p.as_provenance() for p in peaks],
        "channels": {},
    }


def _channel_provenance(windows: ChannelWindows, element: str, counts: bool, gross: np.ndarray,
                        background: float, presence: ElementPresence) -> dict[str, Any]:
    log.info("%s: %d gross counts over the series, %.1f background, %.1f sigma", element,
             int(gross.sum()), background, presence.significance_sigma)
    return {
        **windows.plan[element].as_provenance(),
        "integration_channels": list(windows.elements[element]),
        "counts": counts,
        "quantity": ("gross counts in the integration window" if counts
                     else "net counts in the integration window, EDS-model unmixing"),
        "series_gross_counts": int(gross.sum()),
        "series_background_counts": float(background),
        **presence.as_provenance(),
    }


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


def _pixel_size(first: Acquisition, pixel_size_nm: float | None) -> tuple[float, str]:
    if pixel_size_nm is not None:
        return float(pixel_size_nm), "pixel_size_nm"
    if first.pixel_size_nm is None:
        raise EdxtomoInputError(
            f"{first.path}: the axes carry no length unit; give pixel_size_nm"
        )
    return first.pixel_size_nm, "metadata (axes)"
