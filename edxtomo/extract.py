"""Spectrum images to element maps: X-ray lines, windows, background and net counts.

One raw file per tilt (Velox ``.emd``, Bruker ``.bcf`` or any EDS spectrum image that
rosettasciio reads) becomes one image per element of a :class:`~edxtomo.io.TiltSeries`.

Memory
    Each file is read lazily, one at a time, and reduced at once to a few numbers per pixel
    (the counts in each energy window) and one spectrum. A Velox spectrum stream is held as
    a sparse array of its counts and reduced in O(counts); other formats are reduced chunk
    by chunk through dask. No dense spectrum image, and no stack of them, is ever built.

X-ray lines
    One line per element (:func:`choose_line`): among the element's principal lines (Ka,
    La, Ma) that the beam excites efficiently and the detector sees well (up to 15 keV and
    half the beam energy), the highest in energy whose integration window is free of the
    other elements' strong lines. For InP/ZnSe/ZnS this gives In La, P Ka, Se Ka, S Ka and
    Zn Ka; Au next to P gives Au La, since Au Ma lies on P Ka. ``lines`` overrides it.

Integration windows
    ``integration_fwhm`` times the detector FWHM at the line energy, centred on the line.
    The FWHM follows exspy's law (Fiori and Newbury) from the resolution at Mn Ka.

Background (``method="windows"``)
    The element channel holds the **gross** counts in the integration window: integers with
    their Poisson statistics (the deep stage splits them). The expected bremsstrahlung under
    the window goes to ``TiltSeries.background[element]`` and net counts are
    ``gross - background`` (:meth:`~edxtomo.io.TiltSeries.net_counts`). Per pixel, the
    background windows hold almost no counts at ~1000 counts per element per tilt, so the
    background is estimated with a low-noise model:

    1. From the spectrum summed over all pixels and tilts, the background under each
       integration window, ``B_e``: a straight line through the counts of its background
       channels on both sides, or, with channels on one side only, Kramers' continuum
       scaled to them (:func:`window_background`).
    2. Its ratio to the continuum counts ``C`` (the counts in the union of all background
       windows of the series): ``r_e = B_e / C``. The bremsstrahlung keeps its spectral
       shape from pixel to pixel and tilt to tilt; only its level varies.
    3. Per tilt and pixel, ``background = r_e * smooth(c)``, where ``c`` is the continuum
       count map of the tilt and ``smooth`` a Gaussian filter of ``background_sigma_px``
       that keeps its sum. The map sums to the tilt's continuum, so the totals per tilt are
       exact in expectation, and the smoothing removes most of the per-pixel noise.

    Background windows are ``"auto"`` (:func:`auto_background_windows`), explicit keV
    windows per element, or ``"none"`` (no subtraction).

Overlapping lines (``method="model"``)
    Use it when the integration window of one element holds another element's line (the
    windows method then warns): P Ka and Au Ma (2.01 and 2.12 keV), Zn La and Se La at low
    energy, S Ka and Mo La or Pb Ma. exspy's EDS model (a Gaussian per line, family weights
    from its database, a polynomial background) is fitted once, to the spectrum summed over
    the series: one tilt's ~1000 counts per line cannot constrain a polynomial background.
    The fitted line shapes give the fraction of each element's counts that falls in every
    integration window, a square matrix ``A``; per pixel, the window counts minus the
    background (the fitted polynomial under each window, spread over the pixels as above)
    are unmixed by solving ``A @ net = gross - background``. The result is each element's
    net counts in its own window, with the overlap removed. These maps are floats, not
    counts (``counts: false`` in the provenance): the deep stage must not split them. With
    no overlap, ``A`` is the identity and the two methods agree.
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

from edxtomo.io import (
    HAADF,
    Acquisition,
    EdxtomoInputError,
    TiltSeries,
    acquisition_of,
    check_angles,
    check_raw_file,
    read_haadf,
    read_spectrum_image,
)

log = logging.getLogger(__name__)

#: The detector's zero-energy (noise) peak reaches ~0.15 keV on real Velox data; no window
#: goes below this energy.
ZERO_PEAK_CUTOFF_KEV = 0.2
#: Lines above this energy are chosen only when an element has no other: silicon drift
#: detectors lose efficiency and ionisation cross-sections fall above it.
PREFERRED_MAX_KEV = 15.0
PRINCIPAL_LINES = ("Ka", "La", "Ma")
#: Lines at least this strong (relative to the main line of their family) count as
#: overlaps when choosing a line.
OVERLAP_WEIGHT = 0.1
#: Background windows: every channel between 2 and 5 FWHM from the line (on both sides)
#: that lies at least LINE_CLEARANCE_FWHM (of that line's FWHM) from any line of the sample
#: at least BACKGROUND_LINE_WEIGHT strong; free stretches narrower than
#: BACKGROUND_MIN_WIDTH_FWHM are dropped. exspy's own windows span 2 to 3 FWHM.
BACKGROUND_LINE_WEIGHT = 0.05
LINE_CLEARANCE_FWHM = 1.5
BACKGROUND_REACH_FWHM = (2.0, 5.0)
BACKGROUND_MIN_WIDTH_FWHM = 0.5
MN_KA_KEV = 5.8987
#: Polynomial order of the background in the EDS model (exspy's default).
MODEL_BACKGROUND_ORDER = 6
#: Margin around the outermost windows that the model fit covers.
MODEL_MARGIN_KEV = 1.0


# ---------------------------------------------------------------------------------------------
# X-ray lines and windows
# ---------------------------------------------------------------------------------------------


def element_lines(element: str) -> dict[str, tuple[float, float]]:
    """X-ray lines of an element from exspy's database.

    Returns
    -------
    dict of str to (float, float)
        Line name (``"In_La"``) to (energy in keV, weight relative to its family's main
        line).

    Raises
    ------
    EdxtomoInputError
        An unknown element symbol.
    """
    from exspy.material import elements as database

    try:
        lines = database[element].Atomic_properties.Xray_lines.as_dictionary()
    except (AttributeError, KeyError):
        raise EdxtomoInputError(f"{element!r} is not an element with X-ray lines") from None
    return {
        f"{element}_{name}": (float(props["energy (keV)"]), float(props["weight"]))
        for name, props in lines.items()
    }


def line_energy_keV(line: str) -> float:
    """Energy in keV of an X-ray line such as ``"Zn_Ka"``."""
    element, _, name = line.partition("_")
    lines = element_lines(element)
    if line not in lines:
        known = ", ".join(sorted(lines))
        raise EdxtomoInputError(f"{line!r} is not an X-ray line of {element} (known: {known})")
    return lines[line][0]


def xray_fwhm_keV(energy_keV: float | np.ndarray, resolution_mnka_eV: float) -> np.ndarray:
    """Detector FWHM in keV at an energy, from the FWHM at Mn Ka (Fiori and Newbury).

    ``FWHM(E)^2 = FWHM(Mn Ka)^2 + 2.5 eV * (E - E(Mn Ka))`` in eV, exspy's law.
    """
    variance_eV2 = resolution_mnka_eV**2 + 2.5 * (np.asarray(energy_keV) - MN_KA_KEV) * 1e3
    return np.sqrt(np.maximum(variance_eV2, 1.0)) / 1e3


def integration_window_keV(
    line: str, resolution_mnka_eV: float, integration_fwhm: float
) -> tuple[float, float]:
    """Integration window ``(low, high)`` in keV: ``integration_fwhm`` FWHM centred on the line."""
    energy = line_energy_keV(line)
    half = 0.5 * integration_fwhm * float(xray_fwhm_keV(energy, resolution_mnka_eV))
    return energy - half, energy + half


def _lines_of(elements: Sequence[str], min_weight: float) -> list[tuple[str, float]]:
    return [
        (line, energy)
        for element in elements
        for line, (energy, weight) in element_lines(element).items()
        if weight >= min_weight
    ]


def overlapping_lines(
    line: str, elements: Sequence[str], resolution_mnka_eV: float, integration_fwhm: float
) -> list[str]:
    """Strong lines of the other elements that reach into the integration window of ``line``.

    A line of FWHM ``f`` at ``E`` overlaps when ``E`` lies within ``f`` of the window.
    """
    low, high = integration_window_keV(line, resolution_mnka_eV, integration_fwhm)
    element = line.split("_")[0]
    others = [e for e in elements if e != element]
    return [
        other
        for other, energy in _lines_of(others, OVERLAP_WEIGHT)
        if low - xray_fwhm_keV(energy, resolution_mnka_eV)
        < energy
        < high + xray_fwhm_keV(energy, resolution_mnka_eV)
    ]


def usable_range_keV(acquisition: Acquisition) -> tuple[float, float]:
    """Energies where windows may lie: above the zero peak, below the end of the axis and
    the beam energy."""
    energy = acquisition.energy_keV
    return (
        max(float(energy[0]), ZERO_PEAK_CUTOFF_KEV),
        min(float(energy[-1]), acquisition.beam_energy_keV),
    )


def choose_line(
    element: str,
    elements: Sequence[str],
    energy_range_keV: tuple[float, float],
    beam_energy_keV: float,
    resolution_mnka_eV: float,
    integration_fwhm: float = 1.2,
) -> str:
    """Default X-ray line of ``element`` in a sample made of ``elements``.

    Among the principal lines (Ka, La, Ma) whose integration window lies in
    ``energy_range_keV``, prefer those up to ``min(15 keV, beam / 2)`` (overvoltage of at
    least 2, good detector efficiency), and among those the highest in energy that no
    strong line of another element overlaps. With overlaps everywhere, the highest
    preferred line is returned (:func:`plan_lines` warns; ``method="model"`` unmixes it).

    Raises
    ------
    EdxtomoInputError
        The element has no principal line in the energy range.
    """
    low, high = energy_range_keV
    candidates = []
    for line, (energy, _) in element_lines(element).items():
        if line.split("_")[1] not in PRINCIPAL_LINES:
            continue
        window = integration_window_keV(line, resolution_mnka_eV, integration_fwhm)
        if low <= window[0] and window[1] <= high:
            candidates.append((energy, line))
    if not candidates:
        raise EdxtomoInputError(
            f"element {element} has no X-ray line (Ka, La, Ma) inside the usable energy range "
            f"{low:.3f}-{high:.3f} keV of the spectrum"
        )
    candidates.sort()
    limit = min(PREFERRED_MAX_KEV, beam_energy_keV / 2)
    preferred = [c for c in candidates if c[0] <= limit] or candidates[:1]
    clean = [
        c
        for c in preferred
        if not overlapping_lines(c[1], elements, resolution_mnka_eV, integration_fwhm)
    ]
    return (clean or preferred)[-1][1]


def auto_background_windows(
    line: str,
    elements: Sequence[str],
    energy_range_keV: tuple[float, float],
    resolution_mnka_eV: float,
) -> list[tuple[float, float]]:
    """Line-free background windows around ``line``, in keV.

    The energies between 2 and 5 FWHM of the line on either side (exspy places its windows
    from 2 to 3 FWHM), less every stretch within 1.5 FWHM of a line of the sample (weight
    >= 0.05, any element, the line's own family included) and anything outside
    ``energy_range_keV``. Free stretches narrower than half a FWHM are dropped.

    Returns
    -------
    list of (float, float)
        Zero or more windows, sorted by energy.
    """
    energy = line_energy_keV(line)
    fwhm = float(xray_fwhm_keV(energy, resolution_mnka_eV))
    near, far = (k * fwhm for k in BACKGROUND_REACH_FWHM)
    free = [(max(energy - far, energy_range_keV[0]), energy - near),
            (energy + near, min(energy + far, energy_range_keV[1]))]
    for _, other in _lines_of(elements, BACKGROUND_LINE_WEIGHT):
        clearance = LINE_CLEARANCE_FWHM * float(xray_fwhm_keV(other, resolution_mnka_eV))
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
        Element to line (``{"In": "In_La"}``); other elements get :func:`choose_line`.
        Entries of elements not in ``elements`` are ignored.
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
    energy_range = usable_range_keV(acquisition)
    resolution = acquisition.resolution_mnka_eV
    plan = {}
    for element in elements:
        element_lines(element)  # validates the symbol
        line = (lines or {}).get(element)
        if line is None:
            try:
                line = choose_line(element, elements, energy_range,
                                   acquisition.beam_energy_keV, resolution, integration_fwhm)
            except EdxtomoInputError as exc:
                raise EdxtomoInputError(f"{acquisition.path}: {exc}") from None
        elif line.split("_")[0] != element:
            raise EdxtomoInputError(f"line {line!r} given for element {element} is not its line")
        energy = line_energy_keV(line)
        window = integration_window_keV(line, resolution, integration_fwhm)
        _check_inside(window, energy_range, f"{line} integration window", acquisition.path)
        if background == "none":
            windows = []
        elif isinstance(background, str) or not (element in background or line in background):
            windows = auto_background_windows(line, elements, energy_range, resolution)
            if not windows:
                log.warning("no line-free background window near %s: its background is not "
                            "subtracted (give its windows explicitly: extract: background)", line)
        else:
            windows = [tuple(map(float, w)) for w in background.get(element, background.get(line))]
            for w in windows:
                if len(w) != 2 or not w[0] < w[1]:
                    raise EdxtomoInputError(
                        f"{line} background window {list(w)} is not [low, high] in keV")
                _check_inside(w, energy_range, f"{line} background window", acquisition.path)
        overlaps = overlapping_lines(line, elements, resolution, integration_fwhm)
        if overlaps:
            log.warning("%s window overlaps %s: the windows method counts both (method: model "
                        "unmixes them)", line, ", ".join(overlaps))
        plan[element] = LineWindows(
            element=element,
            line=line,
            energy_keV=energy,
            fwhm_keV=float(xray_fwhm_keV(energy, resolution)),
            integration_keV=(float(window[0]), float(window[1])),
            background_keV=tuple(windows),
        )
        log.info("%s: %s at %.3f keV, window %.3f-%.3f keV, background %s", element, line,
                 energy, window[0], window[1],
                 ", ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in windows) or "none")
    return plan


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


def merge_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of channel ranges as sorted, disjoint ranges."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


# ---------------------------------------------------------------------------------------------
# Reducing one spectrum image
# ---------------------------------------------------------------------------------------------


def _sparse_source(data: Any) -> Any:
    """The ``sparse.COO`` behind a dask array that only reads it, else None.

    rosettasciio's lazy Velox reader wraps the sparse array of a spectrum stream in
    ``dask.array.from_array`` (plus a dtype cast); dask then densifies it chunk by chunk.
    Reading the sparse array itself reduces it in O(counts) instead of O(pixels x
    channels). Any other graph returns None and goes through dask.
    """
    import sparse

    graph = getattr(data, "dask", None)
    if graph is None or not hasattr(graph, "layers"):
        return None
    if not all(name.startswith(("original-array-", "array-", "astype-")) for name in graph.layers):
        return None
    sources = [task for task in graph.values() if isinstance(task, sparse.COO)]
    if len(sources) == 1 and sources[0].shape == tuple(data.shape):
        return sources[0]
    return None


def _dense(block: Any) -> np.ndarray:
    """A dask block as a numpy array (sparse blocks densified: one chunk at a time)."""
    return block.todense() if hasattr(block, "todense") else np.asarray(block)


def reduce_spectrum_image(
    data: Any, channel_ranges: Sequence[tuple[int, int]]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Counts per pixel in channel ranges, and the spectrum summed over pixels.

    Parameters
    ----------
    data : ndarray, dask array or sparse-backed dask array, shape (..., n_channel)
        A spectrum image; leading axes are pixels (and frames).
    channel_ranges : sequence of (int, int)
        Channel ranges ``[start, stop)``.

    Returns
    -------
    sums : list of ndarray
        For each range, int64 counts of shape ``data.shape[:-1]``.
    spectrum : ndarray, shape (n_channel,)
        int64 counts summed over every leading axis.
    """
    nav_shape = tuple(data.shape[:-1])
    coo = _sparse_source(data)
    if coo is not None:
        *nav, channel = coo.coords
        pixel = np.ravel_multi_index(tuple(nav), nav_shape)
        weights = np.asarray(coo.data, dtype=np.float64)  # exact for counts below 2**53
        n_pixel = int(np.prod(nav_shape))
        sums = []
        for start, stop in channel_ranges:
            keep = (channel >= start) & (channel < stop)
            counts = np.bincount(pixel[keep], weights=weights[keep], minlength=n_pixel)
            sums.append(np.rint(counts).astype(np.int64).reshape(nav_shape))
        spectrum = np.bincount(channel, weights=weights, minlength=data.shape[-1])
        return sums, np.rint(spectrum).astype(np.int64)
    import dask
    import dask.array as da

    if isinstance(data, da.Array):
        data = data.map_blocks(_dense, dtype=data.dtype)
    lazy_sums = [data[..., start:stop].sum(axis=-1, dtype=np.int64)
                 for start, stop in channel_ranges]
    lazy_spectrum = data.sum(axis=tuple(range(data.ndim - 1)), dtype=np.int64)
    *sums, spectrum = dask.compute(*lazy_sums, lazy_spectrum)
    return [np.asarray(s, dtype=np.int64) for s in sums], np.asarray(spectrum, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Background model
# ---------------------------------------------------------------------------------------------


def window_background(
    spectrum: np.ndarray,
    integration: tuple[int, int],
    background: Sequence[tuple[int, int]],
    energy_keV: np.ndarray,
    beam_energy_keV: float,
) -> float:
    """Background counts under an integration window, from background windows of a spectrum.

    With background channels on both sides of the window, a straight line fitted (least
    squares) to their counts interpolates under the window. With channels on one side only,
    a fitted slope would extrapolate noise (and any weak line in the windows), so the
    continuum is taken to follow Kramers' law instead, counts per channel proportional to
    ``(E0 - E) / E``, scaled to the counts of the background channels. The result is summed
    over the integration channels, clipped at zero per channel.

    Parameters
    ----------
    spectrum : ndarray, shape (n_channel,)
    integration : (int, int)
        Channel range ``[start, stop)`` of the integration window.
    background : sequence of (int, int)
        Channel ranges of the background windows.
    energy_keV : ndarray, shape (n_channel,)
        Energy of each channel.
    beam_energy_keV : float
        ``E0`` of Kramers' law.
    """
    pieces = [np.arange(a, b) for a, b in background if b > a]
    if not pieces:
        return 0.0
    channels = np.concatenate(pieces)
    counts = np.asarray(spectrum, dtype=np.float64)[channels]
    target = np.arange(*integration)
    if channels.min() < integration[0] and channels.max() >= integration[1]:
        slope, intercept = np.polyfit(channels, counts, 1)
        line = intercept + slope * target
    else:
        kramers = (beam_energy_keV - energy_keV) / np.maximum(energy_keV, 1e-3)
        line = counts.sum() / kramers[channels].sum() * kramers[target]
    return float(np.clip(line, 0, None).sum())


def smooth_continuum(continuum: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-smoothed continuum map with its sum kept, float64 ``(ny, nx)``."""
    from scipy.ndimage import gaussian_filter

    continuum = np.asarray(continuum, dtype=np.float64)
    total = continuum.sum()
    if sigma_px <= 0 or total == 0:
        return continuum
    smooth = gaussian_filter(continuum, sigma_px, mode="reflect")
    return smooth * (total / smooth.sum())


def background_maps(
    ratios: Mapping[str, float], continuum: np.ndarray, sigma_px: float
) -> dict[str, np.ndarray]:
    """Expected background counts per pixel in each element's integration window.

    Parameters
    ----------
    ratios : mapping of str to float
        Per element, background counts under its window per continuum count, ``r_e``.
    continuum : ndarray, shape (n_tilt, ny, nx)
        Continuum counts (background windows) per tilt and pixel.
    sigma_px : float
        Gaussian smoothing of the continuum, in pixels.

    Returns
    -------
    dict of str to ndarray
        float32 ``(n_tilt, ny, nx)`` per element.
    """
    smooth = np.stack([smooth_continuum(c, sigma_px) for c in continuum])
    return {element: (ratio * smooth).astype(np.float32) for element, ratio in ratios.items()}


# ---------------------------------------------------------------------------------------------
# EDS model and unmixing (method="model")
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelFit:
    """exspy EDS model fitted to a summed spectrum.

    Attributes
    ----------
    signatures : dict of str to ndarray
        Per element, its fitted lines (all families) as counts per channel, scaled so that
        its own integration window holds 1. Shape ``(n_channel,)``.
    background : ndarray, shape (n_channel,)
        Fitted background counts per channel (zero outside the fit range).
    model : ndarray, shape (n_channel,)
        The whole fitted model (zero outside the fit range).
    fit_range_keV : (float, float)
    """

    signatures: dict[str, np.ndarray]
    background: np.ndarray
    model: np.ndarray
    fit_range_keV: tuple[float, float]


def fit_eds_model(
    spectrum: np.ndarray,
    acquisition: Acquisition,
    plan: Mapping[str, LineWindows],
) -> ModelFit:
    """Fit exspy's EDS model to a summed spectrum: lines of every element, and background.

    The model holds a Gaussian per X-ray line (energies and widths from exspy's database
    and the detector resolution, family weights fixed) and a polynomial background of
    order 6, fitted by least squares between 1 keV below the lowest window and 1 keV above
    the highest (within the usable range).
    """
    import exspy  # noqa: F401  (registers the EDS signal types)
    import hyperspy.api as hs

    energy = acquisition.energy_keV
    lows = [w[0] for p in plan.values() for w in (p.integration_keV, *p.background_keV)]
    highs = [w[1] for p in plan.values() for w in (p.integration_keV, *p.background_keV)]
    usable = usable_range_keV(acquisition)
    fit_range = (max(usable[0], min(lows) - MODEL_MARGIN_KEV),
                 min(usable[1], max(highs) + MODEL_MARGIN_KEV))
    signal = hs.signals.Signal1D(np.asarray(spectrum, dtype=np.float64))
    signal.set_signal_type("EDS_TEM")
    axis = signal.axes_manager.signal_axes[0]
    axis.offset, axis.scale, axis.units, axis.name = (
        acquisition.energy_offset_keV, acquisition.energy_scale_keV, "keV", "Energy")
    signal.set_microscope_parameters(beam_energy=acquisition.beam_energy_keV,
                                     energy_resolution_MnKa=acquisition.resolution_mnka_eV)
    xray_lines = [
        line
        for element in plan
        for line, (line_energy, _) in element_lines(element).items()
        if line.split("_")[1] in PRINCIPAL_LINES and fit_range[0] < line_energy < fit_range[1]
    ]
    model = signal.create_model(auto_background=False, auto_add_lines=False)
    model.add_polynomial_background(order=MODEL_BACKGROUND_ORDER)
    model.add_family_lines(xray_lines)
    model.set_signal_range(*fit_range)
    model.fit()
    inside = (energy >= fit_range[0]) & (energy <= fit_range[1])
    # The spectrum is binned: a component's counts per channel are its density (per keV)
    # times the channel width.
    width = acquisition.energy_scale_keV
    background = sum(width * c.function(energy) for c in model.background_components)
    background = np.where(inside, np.clip(background, 0, None), 0.0)
    line_curves = {c.name: width * c.function(energy) for c in model
                   if c not in model.background_components}
    signatures = {}
    for element, windows in plan.items():
        own = [curve for name, curve in line_curves.items() if name.split("_")[0] == element]
        signature = np.where(inside, np.clip(sum(own), 0, None), 0.0)
        start, stop = channel_range(windows.integration_keV, acquisition.energy_offset_keV,
                                    acquisition.energy_scale_keV, acquisition.n_channel)
        in_window = signature[start:stop].sum()
        if in_window <= 0:
            signature = _unit_line(energy, windows)
            in_window = signature[start:stop].sum()
            log.warning("model: no %s signal fitted; its own line shape is used", windows.line)
        signatures[element] = signature / in_window
    fitted = np.where(inside, background + sum(line_curves.values()), 0.0)
    log.info("EDS model fitted on %.2f-%.2f keV: %d lines, chi2 = %.3g", *fit_range,
             len(line_curves), float(np.squeeze(model.red_chisq.data)))
    return ModelFit(signatures, background, fitted, fit_range)


def _unit_line(energy_keV: np.ndarray, windows: LineWindows) -> np.ndarray:
    """A Gaussian line of unit height at the line energy with the detector FWHM."""
    sigma = windows.fwhm_keV / (2 * np.sqrt(2 * np.log(2)))
    return np.exp(-0.5 * ((energy_keV - windows.energy_keV) / sigma) ** 2)


def unmixing_matrix(
    signatures: Mapping[str, np.ndarray], ranges: Mapping[str, tuple[int, int]]
) -> np.ndarray:
    """Matrix ``A[j, k]``: counts of element ``k`` in the window of element ``j`` per count of
    ``k`` in its own window (so the diagonal is 1).

    Raises
    ------
    EdxtomoInputError
        Two elements whose windows cannot be told apart (A is singular).
    """
    elements = list(signatures)
    matrix = np.array([[signatures[k][slice(*ranges[j])].sum() for k in elements]
                       for j in elements])
    if np.linalg.cond(matrix) > 1e6:
        raise EdxtomoInputError(
            f"the windows of {', '.join(elements)} cannot be unmixed (singular overlap "
            f"matrix {np.round(matrix, 3).tolist()}); choose other lines"
        )
    return matrix


def unmix(
    gross: Mapping[str, np.ndarray],
    background: Mapping[str, np.ndarray],
    matrix: np.ndarray,
) -> dict[str, np.ndarray]:
    """Solve ``matrix @ net = gross - background`` per pixel.

    Parameters
    ----------
    gross : mapping of str to ndarray
        Window counts per element, each ``(n_tilt, ny, nx)`` or ``(n_tilt, n_frame, ny, nx)``.
    background : mapping of str to ndarray
        Expected background per element, ``(n_tilt, ny, nx)`` summed over frames (spread
        evenly over the frames); missing elements have none.
    matrix : ndarray, shape (n_element, n_element)
        From :func:`unmixing_matrix`, in the order of ``gross``.

    Returns
    -------
    dict of str to ndarray
        Net counts in each element's own window, float32, shapes of ``gross``.
    """
    elements = list(gross)
    shape = gross[elements[0]].shape
    rows = []
    for element in elements:
        row = gross[element].astype(np.float64)
        if element in background:
            bg = background[element].astype(np.float64)
            row -= bg[:, None] / shape[1] if len(shape) == 4 else bg
        rows.append(row.ravel())
    net = np.linalg.solve(matrix, np.stack(rows))
    return {element: net[i].reshape(shape).astype(np.float32)
            for i, element in enumerate(elements)}


# ---------------------------------------------------------------------------------------------
# The tilt series
# ---------------------------------------------------------------------------------------------


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
    elements: Sequence[str] | None = None,
    lines: Mapping[str, str] | None = None,
    integration_fwhm: float = 1.2,
    background: str | Mapping[str, Sequence[Sequence[float]]] = "auto",
    method: str = "windows",
    keep_frames: bool = False,
    angles_deg: Sequence[float] | None = None,
    pixel_size_nm: float | None = None,
    background_sigma_px: float = 2.0,
) -> tuple[TiltSeries, SummedSpectrum]:
    """Extract element maps, HAADF, angles and pixel size from raw files, one per tilt.

    Parameters
    ----------
    raw_paths : sequence of path-like
        One spectrum-image file per tilt, any order.
    elements : sequence of str, optional
        Element symbols; default the element selection stored in the first file.
    lines : mapping of str to str, optional
        X-ray line per element (``{"In": "In_La"}``), overriding :func:`choose_line`.
    integration_fwhm : float
        Integration window width in units of the detector FWHM at the line.
    background : "auto", "none" or mapping
        Background windows (see :func:`plan_lines`).
    method : {"windows", "model"}
        ``"windows"``: gross window counts plus a background model (integer counts).
        ``"model"``: EDS-model unmixing of overlapping lines (float net counts).
    keep_frames : bool
        Keep the frames: element stacks become ``(n_tilt, n_frame, ny, nx)``.
    angles_deg : sequence of float, optional
        Tilt angle of each file in ``raw_paths`` order, overriding the metadata.
    pixel_size_nm : float, optional
        Pixel size in nm, overriding the metadata.
    background_sigma_px : float
        Smoothing of the continuum map that spreads the background over the pixels.

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
    if method not in ("windows", "model"):
        raise EdxtomoInputError(f"method must be 'windows' or 'model', got {method!r}")
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
        check_angles(angles_deg, "angles_deg")
    plan_options = {"lines": lines, "integration_fwhm": integration_fwhm,
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
