"""Energy windows: background windows, the per-element plan, and windows as channel ranges.

:func:`plan_lines` gives every element its line (:mod:`edxtomo.extract.lines`), its
integration window and its background windows. Background windows are ``"auto"``
(:func:`auto_background_windows`), explicit keV windows per element, or ``"none"`` (no
subtraction). Automatic windows keep clear of the lines of the listed elements, and, once
the spectrum summed over the series is known, of every peak found in it
(:func:`avoid_peaks`, peaks from :func:`~edxtomo.extract.presence.find_peaks`).
:func:`channel_range`, :func:`merge_ranges` and :func:`split_ranges` turn keV windows into
the channel ranges that :func:`~edxtomo.extract.reduction.reduce_spectrum_image` sums;
:class:`ChannelWindows` holds a series' windows as such ranges.

Continuum pieces
    The per-pixel continuum map sums the channels of the background windows. Since those
    windows are final only once the summed spectrum is known, each file is reduced over
    the candidate windows cut into pieces of at most :data:`CONTINUUM_PIECE_FWHM`; the map
    then sums the pieces that lie inside the final windows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.extract import lines as line_table
from edxtomo.io import Acquisition

log = logging.getLogger(__name__)

#: Background windows: every channel between 2 and 5 FWHM from the line (on both sides)
#: that lies at least LINE_CLEARANCE_FWHM (of that line's FWHM) from any line of the sample
#: at least BACKGROUND_LINE_WEIGHT strong; free stretches narrower than
#: BACKGROUND_MIN_WIDTH_FWHM are dropped. exspy's own windows span 2 to 3 FWHM.
BACKGROUND_LINE_WEIGHT = 0.05
LINE_CLEARANCE_FWHM = 1.5
BACKGROUND_REACH_FWHM = (2.0, 5.0)
BACKGROUND_MIN_WIDTH_FWHM = 0.5

#: Largest continuum piece, in FWHM of the detector at its energy: a background window
#: trimmed around a peak loses at most this much more than the trim itself.
CONTINUUM_PIECE_FWHM = 1.0


def auto_background_windows(
    line: str,
    elements: Sequence[str],
    energy_range_keV: tuple[float, float],
    resolution_mnka_eV: float,
    avoid_keV: Sequence[float] = (),
) -> list[tuple[float, float]]:
    """Line-free background windows around ``line``, in keV.

    The energies between 2 and 5 FWHM of the line on either side (exspy places its windows
    from 2 to 3 FWHM), less every stretch within 1.5 FWHM of a line of the sample (weight
    >= 0.05, any element, the line's own family included) or of an energy in ``avoid_keV``
    (peaks found in the spectrum), and anything outside ``energy_range_keV``. Free
    stretches narrower than half a FWHM are dropped.

    Returns
    -------
    list of (float, float)
        Zero or more windows, sorted by energy.
    """
    energy = line_table.line_energy_keV(line)
    fwhm = float(line_table.xray_fwhm_keV(energy, resolution_mnka_eV))
    near, far = (k * fwhm for k in BACKGROUND_REACH_FWHM)
    free = [(max(energy - far, energy_range_keV[0]), energy - near),
            (energy + near, min(energy + far, energy_range_keV[1]))]
    listed = line_table._lines_of(elements, BACKGROUND_LINE_WEIGHT)
    others = [e for _, e in listed] + list(avoid_keV)
    for other in others:
        clearance = LINE_CLEARANCE_FWHM * float(line_table.xray_fwhm_keV(other, resolution_mnka_eV))
        free = [piece for low, high in free
                for piece in ((low, min(high, other - clearance)),
                              (max(low, other + clearance), high))
                if piece[1] > piece[0]]
    minimum = BACKGROUND_MIN_WIDTH_FWHM * fwhm
    return sorted((float(low), float(high)) for low, high in free if high - low >= minimum)


@dataclass(frozen=True)
class LineWindows:
    """The X-ray line of one element and its energy windows (keV)."""

    element: str
    line: str
    energy_keV: float
    fwhm_keV: float
    integration_keV: tuple[float, float]
    background_keV: tuple[tuple[float, float], ...]

    def as_provenance(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "line_energy_keV": self.energy_keV,
            "line_fwhm_keV": self.fwhm_keV,
            "integration_window_keV": list(self.integration_keV),
            "background_windows_keV": [list(w) for w in self.background_keV],
        }


def plan_lines(
    elements: Sequence[str],
    acquisition: Acquisition,
    lines: Mapping[str, str] | None = None,
    integration_fwhm: float = 1.2,
    background: str | Mapping[str, Sequence[Sequence[float]]] = "auto",
) -> dict[str, LineWindows]:
    """Choose a line, an integration window and background windows for every element.

    Parameters
    ----------
    elements : sequence of str
        Element symbols of the sample.
    acquisition : Acquisition
        Energy axis, beam energy and detector resolution.
    lines : mapping, optional
        Element to line (``{"In": "In_La"}``); other elements get
        :func:`~edxtomo.extract.lines.choose_line`. Entries of elements not in ``elements``
        are ignored.
    integration_fwhm : float
        Integration window width in units of the line FWHM.
    background : "auto", "none" or mapping
        ``"auto"``: :func:`auto_background_windows`. ``"none"``: no background windows.
        A mapping from element (or line) to a list of ``[low, high]`` keV windows; elements
        it does not name get automatic windows.

    Raises
    ------
    EdxtomoInputError
        An unknown element or line, a line outside the spectrum's energy range, a window
        outside it, or an unknown ``background`` value.
    """
    if integration_fwhm <= 0:
        raise EdxtomoInputError(f"integration_fwhm must be positive, got {integration_fwhm}")
    if isinstance(background, str) and background not in ("auto", "none"):
        raise EdxtomoInputError(
            f"background must be 'auto', 'none' or keV windows per element, got {background!r}"
        )
    energy_range = line_table.usable_range_keV(acquisition)
    resolution = acquisition.resolution_mnka_eV
    plan = {}
    for element in elements:
        line_table.element_lines(element)  # validates the symbol
        line = (lines or {}).get(element)
        if line is None:
            try:
                line = line_table.choose_line(element, elements, energy_range,
                                   acquisition.beam_energy_keV, resolution, integration_fwhm)
            except EdxtomoInputError as exc:
                raise EdxtomoInputError(f"{acquisition.path}: {exc}") from None
        elif line.split("_")[0] != element:
            raise EdxtomoInputError(f"line {line!r} given for element {element} is not its line")
        energy = line_table.line_energy_keV(line)
        window = line_table.integration_window_keV(line, resolution, integration_fwhm)
        _check_inside(window, energy_range, f"{line} integration window", acquisition.path)
        if background == "none":
            windows = []
        elif _is_auto(background, element, line):
            windows = auto_background_windows(line, elements, energy_range, resolution)
            if not windows:
                _warn_no_window(line)
        else:
            windows = [tuple(map(float, w)) for w in background.get(element, background.get(line))]
            for w in windows:
                if len(w) != 2 or not w[0] < w[1]:
                    raise EdxtomoInputError(
                        f"{line} background window {list(w)} is not [low, high] in keV")
                _check_inside(w, energy_range, f"{line} background window", acquisition.path)
        overlaps = line_table.overlapping_lines(line, elements, resolution, integration_fwhm)
        if overlaps:
            log.warning("%s window overlaps %s: the windows method counts both (method: model "
                        "unmixes them)", line, ", ".join(overlaps))
        plan[element] = LineWindows(
            element=element,
            line=line,
            energy_keV=energy,
            fwhm_keV=float(line_table.xray_fwhm_keV(energy, resolution)),
            integration_keV=(float(window[0]), float(window[1])),
            background_keV=tuple(windows),
        )
        log.info("%s: %s at %.3f keV, window %.3f-%.3f keV, background %s", element, line,
                 energy, window[0], window[1],
                 ", ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in windows) or "none")
    return plan


def _is_auto(background: str | Mapping[str, Any], element: str, line: str) -> bool:
    """Whether ``background`` leaves the windows of this element to
    :func:`auto_background_windows`."""
    if isinstance(background, str):
        return background == "auto"
    return element not in background and line not in background


def _warn_no_window(line: str) -> None:
    log.warning("no line-free background window near %s: its background is not subtracted "
                "(give its windows explicitly: extract: background)", line)


def avoid_peaks(
    plan: Mapping[str, LineWindows],
    peaks_keV: Sequence[float],
    acquisition: Acquisition,
    background: str | Mapping[str, Sequence[Sequence[float]]] = "auto",
) -> dict[str, LineWindows]:
    """The plan with its automatic background windows also clear of ``peaks_keV``.

    Windows given explicitly stay as they are, with a warning for each that holds a peak.

    Parameters
    ----------
    plan : mapping of str to LineWindows
        From :func:`plan_lines` with the same ``background``.
    peaks_keV : sequence of float
        Energies of the peaks found in the summed spectrum.
    acquisition : Acquisition
        Energy axis, beam energy and detector resolution.
    background : "auto", "none" or mapping
        As given to :func:`plan_lines`.

    Returns
    -------
    dict of str to LineWindows
    """
    energy_range = line_table.usable_range_keV(acquisition)
    resolution = acquisition.resolution_mnka_eV
    moved = {}
    for element, windows in plan.items():
        if background == "none":
            moved[element] = windows
            continue
        if not _is_auto(background, element, windows.line):
            _warn_on_peaks(windows, peaks_keV)
            moved[element] = windows
            continue
        new = tuple(auto_background_windows(windows.line, list(plan), energy_range, resolution,
                                            avoid_keV=peaks_keV))
        if new != windows.background_keV:
            log.info("%s: background windows moved off the peaks of the summed spectrum: %s",
                     windows.line, ", ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in new) or "none")
            if not new:
                _warn_no_window(windows.line)
        moved[element] = dataclasses.replace(windows, background_keV=new)
    return moved


def _warn_on_peaks(windows: LineWindows, peaks_keV: Sequence[float]) -> None:
    for low, high in windows.background_keV:
        inside = [f"{e:.3f}" for e in peaks_keV if low <= e <= high]
        if inside:
            log.warning("%s background window %.3f-%.3f keV (given in extract: background) "
                        "holds a peak of the summed spectrum at %s keV: its background is "
                        "overestimated", windows.line, low, high, ", ".join(inside))


def _check_inside(
    window: Sequence[float], energy_range: tuple[float, float], what: str, path: Path
) -> None:
    if window[0] < energy_range[0] or window[1] > energy_range[1]:
        raise EdxtomoInputError(
            f"{path}: {what} {window[0]:.3f}-{window[1]:.3f} keV lies outside the usable "
            f"energy range {energy_range[0]:.3f}-{energy_range[1]:.3f} keV of the spectrum "
            "(energy axis, beam energy and zero peak)"
        )


def channel_range(
    window_keV: Sequence[float], offset_keV: float, scale_keV: float, n_channel: int
) -> tuple[int, int]:
    """Channels ``[start, stop)`` of an energy window, rounded as HyperSpy's ``isig`` does.

    Channel ``i`` is at ``offset_keV + i * scale_keV``.
    """
    start, stop = (int(np.round((e - offset_keV) / scale_keV)) for e in window_keV)
    return min(max(start, 0), n_channel), min(max(stop, 0), n_channel)


def split_ranges(ranges: Sequence[tuple[int, int]], width: Sequence[int] | int
                 ) -> list[tuple[int, int]]:
    """Cut channel ranges into consecutive pieces of at most ``width`` channels.

    Parameters
    ----------
    ranges : sequence of (int, int)
    width : int or sequence of int
        Largest piece, one value for all ranges or one per range (at least 1).
    """
    widths = [width] * len(ranges) if isinstance(width, int) else list(width)
    pieces = []
    for (start, stop), step in zip(ranges, widths, strict=True):
        n = max(1, -(-(stop - start) // max(1, step)))
        edges = np.rint(np.linspace(start, stop, n + 1)).astype(int)
        pieces += [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)
                   if b > a]
    return pieces


def merge_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of channel ranges as sorted, disjoint ranges."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


@dataclass
class ChannelWindows:
    """The lines and windows of a series in channels, and the continuum pieces.

    Attributes
    ----------
    plan : dict of str to LineWindows
        Per element, its line and windows in keV (:func:`plan_lines`, then
        :func:`avoid_peaks`).
    acquisition : Acquisition
        The file whose energy axis turns keV into channels.
    elements : dict of str to (int, int)
        Per element, its integration window as a channel range ``[start, stop)``.
    pieces : list of (int, int)
        The continuum pieces: the background windows at planning, cut into ranges of at
        most :data:`CONTINUUM_PIECE_FWHM`.
    """

    plan: dict[str, LineWindows]
    acquisition: Acquisition
    elements: dict[str, tuple[int, int]]
    pieces: list[tuple[int, int]]

    @classmethod
    def of(cls, plan: dict[str, LineWindows], acquisition: Acquisition) -> ChannelWindows:
        """The windows of ``plan`` in the channels of ``acquisition``, with their pieces."""
        windows = cls(plan, acquisition, {}, [])
        windows.elements = {e: windows.channels(p.integration_keV) for e, p in plan.items()}
        union = windows.background_union()
        energy = acquisition.energy_keV
        fwhm_keV = line_table.xray_fwhm_keV(
            np.array([energy[(a + b) // 2] for a, b in union]), acquisition.resolution_mnka_eV)
        widths = [int(CONTINUUM_PIECE_FWHM * f / acquisition.energy_scale_keV)
                  for f in np.atleast_1d(fwhm_keV)]
        windows.pieces = split_ranges(union, widths)
        return windows

    def channels(self, window: Sequence[float]) -> tuple[int, int]:
        a = self.acquisition
        return channel_range(window, a.energy_offset_keV, a.energy_scale_keV, a.n_channel)

    def background(self, element: str) -> list[tuple[int, int]]:
        return [self.channels(w) for w in self.plan[element].background_keV]

    def one_count_background(self, element: str) -> float:
        """Background under the element's window that one count in its background windows
        implies: integration channels / background channels (0 without windows)."""
        n_background = sum(b - a for a, b in self.background(element))
        start, stop = self.elements[element]
        return (stop - start) / n_background if n_background else 0.0

    def background_union(self) -> list[tuple[int, int]]:
        """The background windows of every element as disjoint channel ranges."""
        return merge_ranges([self.channels(w) for p in self.plan.values()
                             for w in p.background_keV])

    def continuum_pieces(self) -> np.ndarray:
        """Which pieces lie inside the current background windows, bool ``(n_piece,)``."""
        union = self.background_union()
        return np.array([any(s <= a and b <= e for s, e in union) for a, b in self.pieces],
                        dtype=bool)
