"""EDS-model fit of the summed spectrum and unmixing of overlapping lines.

Overlapping lines (``method="model"``)
    Use it when the integration window of one element holds another element's line (the
    windows method then warns): P Ka and Au Ma (2.01 and 2.12 keV), Zn La and Se La at low
    energy, S Ka and Mo La or Pb Ma. exspy's EDS model (a Gaussian per line, family weights
    from its database, a polynomial background) is fitted once, to the spectrum summed over
    the series: one tilt's ~1000 counts per line cannot constrain a polynomial background.
    The fitted line shapes give the fraction of each element's counts that falls in every
    integration window, a square matrix ``A``; per pixel, the window counts minus the
    background (the fitted polynomial under each window, spread over the pixels as in
    :mod:`~edxtomo.extract.background`) are unmixed by solving
    ``A @ net = gross - background``. The result is each element's net counts in its own
    window, with the overlap removed. These maps are floats, not counts (``counts: false``
    in the provenance): the deep stage must not split them. With no overlap, ``A`` is the
    identity and the two methods agree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.extract.lines import PRINCIPAL_LINES, element_lines, usable_range_keV
from edxtomo.extract.windows import LineWindows, channel_range
from edxtomo.io import Acquisition

log = logging.getLogger(__name__)

#: Polynomial order of the background in the EDS model (exspy's default).
MODEL_BACKGROUND_ORDER = 6
#: Margin around the outermost windows that the model fit covers.
MODEL_MARGIN_KEV = 1.0


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
