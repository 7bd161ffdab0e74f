"""Small synthetic EDS spectrum images with a known expectation, for the extraction tests.

Every X-ray line of an element is a Gaussian (exspy's energies, family weights and FWHM law)
integrated over the channels; the bremsstrahlung is a smooth exp(-E / 3 keV) continuum whose
level follows a per-pixel map. Counts are Poisson draws of the expectation, so the true
counts in any energy window are known exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from edxtomo.extract import element_lines, xray_fwhm_keV

ENERGY_OFFSET_KEV = 0.0
ENERGY_SCALE_KEV = 0.02
N_CHANNEL = 640  # 0 to 12.8 keV
RESOLUTION_MNKA_EV = 130.0
BEAM_ENERGY_KEV = 300.0


def energy_keV(n_channel: int = N_CHANNEL) -> np.ndarray:
    return ENERGY_OFFSET_KEV + ENERGY_SCALE_KEV * np.arange(n_channel)


def line_profile(energy: float, n_channel: int = N_CHANNEL) -> np.ndarray:
    """Probability of a count of a line at ``energy`` to land in each channel."""
    sigma = float(xray_fwhm_keV(energy, RESOLUTION_MNKA_EV)) / (2 * np.sqrt(2 * np.log(2)))
    edges = ENERGY_OFFSET_KEV + (np.arange(n_channel + 1) - 0.5) * ENERGY_SCALE_KEV
    return np.diff(ndtr((edges - energy) / sigma))


def element_spectrum(
    element: str, families: Mapping[str, float], n_channel: int = N_CHANNEL
) -> np.ndarray:
    """Expected counts per channel of one element, per unit amplitude.

    ``families`` maps a family letter (``"K"``, ``"L"``, ``"M"``) to the expected counts of
    its main line; the other lines of the family follow exspy's weights.
    """
    spectrum = np.zeros(n_channel)
    for line, (energy, weight) in element_lines(element).items():
        family = line.split("_")[1][0]
        if family in families:
            spectrum += families[family] * weight * line_profile(energy, n_channel)
    return spectrum


def continuum_spectrum(n_channel: int = N_CHANNEL) -> np.ndarray:
    """Bremsstrahlung shape above 0.3 keV, normalised to sum 1."""
    energy = energy_keV(n_channel)
    shape = np.where(energy > 0.3, np.exp(-energy / 3.0), 0.0)
    return shape / shape.sum()


def blob(shape: tuple[int, int], centre: tuple[float, float], sigma_px: float) -> np.ndarray:
    """A Gaussian blob of unit sum."""
    y, x = np.indices(shape)
    image = np.exp(-0.5 * ((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / sigma_px**2)
    return image / image.sum()


def expected_cube(
    element_maps: Mapping[str, np.ndarray],
    element_spectra: Mapping[str, np.ndarray],
    continuum_map: np.ndarray,
) -> np.ndarray:
    """Expected counts ``(ny, nx, n_channel)``: each element's map times its spectrum, plus
    the continuum map times the continuum shape."""
    cube = continuum_map[..., None] * continuum_spectrum(len(next(iter(element_spectra.values()))))
    for element, image in element_maps.items():
        cube = cube + image[..., None] * element_spectra[element]
    return cube


def write_tilt(
    path: Path,
    counts: np.ndarray,
    angle_deg: float | None,
    pixel_size_nm: float = 0.5,
    elements: tuple[str, ...] = (),
    pixel_units: str = "nm",
    signal_type: str = "EDS_TEM",
) -> Path:
    """Write a spectrum image ``(..., ny, nx, n_channel)`` as an EDS ``.hspy`` file.

    ``signal_type="EDS"`` (exspy's generic EDS class) gets no default stage tilt.
    """
    import hyperspy.api as hs

    signal = hs.signals.Signal1D(counts.astype(np.uint16))
    signal.set_signal_type(signal_type)
    energy = signal.axes_manager.signal_axes[0]
    energy.offset, energy.scale, energy.units, energy.name = (
        ENERGY_OFFSET_KEV, ENERGY_SCALE_KEV, "keV", "Energy")
    navigation = signal.axes_manager.navigation_axes
    for axis, name in zip(navigation, ("x", "y", "frame"), strict=False):
        axis.name = name
        if name != "frame":
            axis.scale, axis.units = pixel_size_nm, pixel_units
    signal.metadata.set_item("Acquisition_instrument.TEM.beam_energy", BEAM_ENERGY_KEV)
    signal.metadata.set_item("Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa",
                             RESOLUTION_MNKA_EV)
    if angle_deg is not None:
        signal.metadata.set_item("Acquisition_instrument.TEM.Stage.tilt_alpha", angle_deg)
    if elements:
        signal.metadata.set_item("Sample.elements", list(elements))
    signal.save(path, overwrite=True)
    return path
