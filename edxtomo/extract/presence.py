"""What the summed spectrum really holds: a presence test per listed element, and its peaks.

Both work on the spectrum summed over every tilt and pixel of a series, where counts are
plentiful, and both ask one question: do the counts stand above the continuum by more than
Poisson noise allows?

Presence (:func:`element_presence`)
    An element named in the sample sheet or the file must earn its maps: the gross counts in
    its integration window must exceed the background expected under that window with a
    one-sided significance of :data:`SIGNIFICANCE_SIGMA`. The significance is the exact
    Poisson tail, ``P(N >= gross | mean = background)``, expressed in Gaussian sigma, so it
    stays right for small backgrounds. An element that fails is flagged ``element_absent``:
    its stacks are still written (the workflow keeps going) but its maps hold background.

Peaks (:func:`find_peaks`)
    Background windows must avoid every line in the spectrum, not only those of the listed
    elements (a Cu grid, a Pb contamination, a forgotten element). A top-hat filter, the
    standard of EDS peak search (Schamber; Statham), compares the counts in a central lobe
    one FWHM wide with those in two side lobes half a FWHM wide each: a continuum that is
    linear in energy cancels exactly, a line does not. A local maximum of its significance
    above :data:`SIGNIFICANCE_SIGMA` whose net counts also reach
    :data:`PEAK_MIN_CONTINUUM_FRACTION` of the continuum under the lobe is a peak. The second
    condition rejects the bias of a curved continuum (the low-energy hump where the
    detector window absorbs), which grows with the counts while the noise grows with their
    square root; a line that weak moves a background estimate by less than the accuracy of
    its straight-line model anyway. Peaks are named with exspy's line table where a line
    lies within half a FWHM.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edxtomo.extract.lines import (
    _lines_of,
    usable_range_keV,
    xray_fwhm_keV,
    xray_line_table,
)
from edxtomo.extract.windows import BACKGROUND_LINE_WEIGHT
from edxtomo.io import Acquisition

log = logging.getLogger(__name__)

#: One-sided significance (Gaussian sigma) that a count excess must reach to be real: an
#: element's line for its presence, a peak for the background windows. 5 sigma (p = 2.9e-7)
#: rather than 3: the background under a window is a model (a straight line or Kramers'
#: law) whose systematic error, a percent or so, is several Poisson sigma once a series
#: has summed 1e5 counts under it.
SIGNIFICANCE_SIGMA = 5.0
#: A peak's net counts must reach this fraction of the continuum under the filter's central
#: lobe (see the module docstring).
PEAK_MIN_CONTINUUM_FRACTION = 0.05
#: Top-hat filter: width of the central lobe and of each side lobe, in FWHM of the line.
TOP_HAT_CENTRE_FWHM = 1.0
TOP_HAT_SIDE_FWHM = 0.5
#: A peak is named after a line within this many FWHM of it.
IDENTIFY_WITHIN_FWHM = 0.5
#: Lines of unlisted elements that may name a peak: the main lines of their families.
IDENTIFY_MIN_WEIGHT = 0.5


def poisson_significance(counts: float, expected: float) -> float:
    """One-sided significance, in Gaussian sigma, of ``counts`` or more where ``expected``
    were expected.

    Above the expectation, ``-Phi^-1(P(N >= counts))`` for ``N`` Poisson of mean
    ``expected``, from the log of the tail. Where even that underflows (beyond about 37
    sigma), and at or below the expectation, the signed square root of the likelihood-ratio
    statistic, ``sqrt(2 (n ln(n / mu) - n + mu))``, its asymptotic form (negative when the
    counts fall short). Infinite for counts where nothing is expected.
    """
    from scipy.special import ndtri_exp, xlogy
    from scipy.stats import poisson

    if expected <= 0:
        return float("inf") if counts > 0 else 0.0
    if counts > expected:
        log_tail = poisson.logsf(np.ceil(counts) - 1, expected)
        if np.isfinite(log_tail):
            return float(-ndtri_exp(log_tail))
    deviance = 2 * (xlogy(counts, counts / expected) - counts + expected)
    return float(np.sign(counts - expected) * np.sqrt(max(deviance, 0.0)))


@dataclass(frozen=True)
class ElementPresence:
    """The presence test of one element over a series.

    Attributes
    ----------
    gross_counts : float
        Counts in the integration window, summed over every tilt and pixel.
    background_counts : float
        Expected counts under the window without the element (the background model; with
        ``method="model"`` also the other elements' overlapping lines), at least the floor
        that :func:`element_presence` was given. NaN when there is no background estimate
        (no background windows).
    net_counts : float
        ``gross_counts - background_counts``.
    significance_sigma : float
        :func:`poisson_significance` of the gross counts over the background; NaN when
        untested.
    absent : bool
        Tested and below :data:`SIGNIFICANCE_SIGMA`.
    """

    gross_counts: float
    background_counts: float
    net_counts: float
    significance_sigma: float
    absent: bool

    def as_provenance(self) -> dict[str, float | bool | None]:
        def number(value: float) -> float | None:
            return None if np.isnan(value) else float(value)

        return {"series_net_counts": number(self.net_counts),
                "significance_sigma": number(self.significance_sigma),
                "element_absent": bool(self.absent)}


def element_presence(
    element: str, gross_counts: float, background_counts: float | None,
    min_background_counts: float = 0.0,
) -> ElementPresence:
    """Test whether an element's line stands above its background; warn when it does not.

    Parameters
    ----------
    element : str
        Named in the log.
    gross_counts : float
        Counts in its integration window over the series.
    background_counts : float or None
        Expected counts under the window without the element; None when there is no
        background estimate (then the element is not tested, with a warning).
    min_background_counts : float
        Floor of the background: an estimate from background windows that hold no count
        is 0, yet the background is only known to be below what one count in those windows
        implies (``n_integration / n_background`` channels), which is the floor to give.
    """
    if background_counts is None:
        log.warning("%s: presence not tested: no background estimate under its window "
                    "(no background windows)", element)
        nan = float("nan")
        return ElementPresence(float(gross_counts), nan, nan, nan, False)
    background_counts = max(float(background_counts), float(min_background_counts))
    net = float(gross_counts - background_counts)
    sigma = poisson_significance(gross_counts, background_counts)
    absent = sigma < SIGNIFICANCE_SIGMA
    if absent:
        log.warning(
            "%s: not in the specimen? Its net counts over the series, %.1f, stand %.2f sigma "
            "above the background of %.1f counts (%.0f sigma needed): flagged element_absent; "
            "its maps hold background only", element, net, sigma, background_counts,
            SIGNIFICANCE_SIGMA)
    return ElementPresence(float(gross_counts), float(background_counts), net, sigma, absent)


@dataclass(frozen=True)
class Peak:
    """A line found in a summed spectrum.

    Attributes
    ----------
    energy_keV : float
        Centre of the channel where the filter peaks.
    net_counts : float
        Counts of the central lobe above the continuum.
    significance_sigma : float
    line : str or None
        The nearest line of exspy's table within half a FWHM (listed elements first).
    listed : bool
        ``line`` belongs to a listed element.
    """

    energy_keV: float
    net_counts: float
    significance_sigma: float
    line: str | None
    listed: bool

    def as_provenance(self) -> dict[str, float | str | bool | None]:
        return {"energy_keV": self.energy_keV, "net_counts": self.net_counts,
                "significance_sigma": self.significance_sigma, "line": self.line,
                "listed": self.listed}


def top_hat(
    spectrum: np.ndarray, fwhm_channels: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-hat filter of a spectrum: net counts, continuum and significance per channel.

    Parameters
    ----------
    spectrum : ndarray, shape (n_channel,)
        Counts.
    fwhm_channels : ndarray, shape (n_channel,)
        Line FWHM at each channel, in channels.
    valid : ndarray of bool, shape (n_channel,)
        Channels whose whole filter may lie on the spectrum; others get zeros.

    Returns
    -------
    net, continuum, significance : ndarray, shape (n_channel,)
        Central-lobe counts minus the side-lobe counts scaled to its width; that scaled
        side-lobe count; ``net / sqrt(variance)`` with Poisson variances of both lobes.
    """
    n = spectrum.size
    cumulative = np.concatenate([[0.0], np.cumsum(spectrum, dtype=np.float64)])
    half = np.maximum(1, np.rint(0.5 * TOP_HAT_CENTRE_FWHM * fwhm_channels)).astype(int)
    side = np.maximum(1, np.rint(TOP_HAT_SIDE_FWHM * fwhm_channels)).astype(int)
    i = np.arange(n)
    inside = valid & (i - half - side >= 0) & (i + half + side < n)
    lo, hi = np.clip(i - half, 0, n), np.clip(i + half + 1, 0, n)
    centre = cumulative[hi] - cumulative[lo]
    sides = (cumulative[lo] - cumulative[np.clip(lo - side, 0, n)]
             + cumulative[np.clip(hi + side, 0, n)] - cumulative[hi])
    ratio = (2 * half + 1) / (2 * side)
    continuum = ratio * sides
    net = centre - continuum
    variance = np.maximum(centre + ratio**2 * sides, 1.0)
    zero = np.zeros(n)
    return (np.where(inside, net, zero), np.where(inside, continuum, zero),
            np.where(inside, net / np.sqrt(variance), zero))


def find_peaks(
    spectrum: np.ndarray, acquisition: Acquisition, elements: Sequence[str]
) -> list[Peak]:
    """Lines that stand significantly above the continuum of a summed spectrum.

    Parameters
    ----------
    spectrum : ndarray, shape (n_channel,)
        Counts summed over a series.
    acquisition : Acquisition
        Energy axis, beam energy and detector resolution.
    elements : sequence of str
        The listed elements: a peak on one of their lines is marked ``listed``.

    Returns
    -------
    list of Peak
        Ascending in energy; only peaks whose filter lies in the usable energy range.
    """
    import scipy.signal

    energy = acquisition.energy_keV
    fwhm = xray_fwhm_keV(energy, acquisition.resolution_mnka_eV)
    low, high = usable_range_keV(acquisition)
    reach = (0.5 * TOP_HAT_CENTRE_FWHM + TOP_HAT_SIDE_FWHM) * fwhm
    valid = (energy - reach >= low) & (energy + reach <= high)
    net, continuum, significance = top_hat(np.asarray(spectrum, dtype=np.float64),
                                           fwhm / acquisition.energy_scale_keV, valid)
    found, _ = scipy.signal.find_peaks(significance, height=SIGNIFICANCE_SIGMA)
    found = [i for i in found if net[i] >= PEAK_MIN_CONTINUUM_FRACTION * continuum[i]]
    names = identify_peaks([float(energy[i]) for i in found], elements,
                           acquisition.resolution_mnka_eV)
    return [Peak(float(energy[i]), float(net[i]), float(significance[i]), line, listed)
            for i, (line, listed) in zip(found, names, strict=True)]


def identify_peaks(
    energies_keV: Sequence[float], elements: Sequence[str], resolution_mnka_eV: float
) -> list[tuple[str | None, bool]]:
    """The line that most likely makes each peak, and whether its element is listed.

    Within :data:`IDENTIFY_WITHIN_FWHM` FWHM of a peak, in this order: a line of a listed
    element (weight >= the background windows' threshold); a line of that weight of an
    element whose main line names another peak (Cu Kb once Cu Ka is found); the nearest
    main line (weight >= :data:`IDENTIFY_MIN_WEIGHT`) of any element; else None.

    Returns
    -------
    list of (str or None, bool)
        One ``(line, listed)`` per peak.
    """
    reach = [IDENTIFY_WITHIN_FWHM * float(xray_fwhm_keV(e, resolution_mnka_eV))
             for e in energies_keV]
    listed = _lines_of(elements, BACKGROUND_LINE_WEIGHT)
    main = [_nearest(e, xray_line_table(IDENTIFY_MIN_WEIGHT), r)
            for e, r in zip(energies_keV, reach, strict=True)]
    names = []
    for k, (energy, r) in enumerate(zip(energies_keV, reach, strict=True)):
        own = _nearest(energy, listed, r)
        if own is not None:
            names.append((own, True))
            continue
        others = sorted({m.split("_")[0] for j, m in enumerate(main) if m and j != k})
        family = _nearest(energy, _lines_of(others, BACKGROUND_LINE_WEIGHT), r)
        names.append((family or main[k], False))
    return names


def _nearest(energy_keV: float, lines: Sequence[tuple[str, float]], reach_keV: float
             ) -> str | None:
    near = [(abs(e - energy_keV), line) for line, e in lines if abs(e - energy_keV) <= reach_keV]
    return min(near)[1] if near else None
