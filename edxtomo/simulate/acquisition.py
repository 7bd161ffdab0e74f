"""The physics of a STEM-EDX acquisition: X-ray lines, detector, counts, HAADF, misalignment.

Counts
------
An electron dose ``D`` (e/nm^2) over a pixel of area ``A`` (nm^2) crosses a column holding
``N`` atoms/nm^2 of an element. The expected number of detected X-rays of a line is
``D * A * sigma_line * eps(E_line) * N``, where ``sigma_line`` is the effective cross-section
per atom (ionisation x fluorescence yield x line fraction x collection solid angle / 4 pi,
in barn = 1e-10 nm^2, given per line family for its main line and scaled by exspy's relative
line weights) and ``eps`` the detector efficiency. Since ``A * N`` summed over the field is
the number of atoms, the counts per tilt are ``D * sigma * eps * (atoms in the field)``,
whatever the pixel size.

The bremsstrahlung per pixel and keV is ``D * A * k_B * sum_e Z_e^2 N_e * (E0 - E) / (E0 E)
* eps(E)`` (Kramers' thin-target law; ``k_B`` in barn), and an optional zero-energy noise
peak adds a constant rate per pixel.

Counts are drawn without ever building a spectrum image: a Poisson number per pixel and
source, then one line, energy, frame and detector per count (the Poisson law splits
exactly into independent Poisson laws per line, frame and detector). Energies are binned to
the nearest channel centre ``offset + i * dispersion``, the convention of the energy axis
that rosettasciio builds from the file.

Misalignment
------------
The contract's model: a feature at ``r = (x_c, y_c)`` of the ideal projection appears at
``r' = R(alpha) (r + (axis_offset_px, 0)) + (shift_x_px, shift_y_px)`` with image-centred
coordinates. :func:`apply_misalignment` resamples an ideal image onto the measured grid
with one cubic-spline interpolation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage, special

from edxtomo.errors import EdxtomoInputError
from edxtomo.io.xray import atomic_number, element_database, xray_fwhm_keV
from edxtomo.simulate.velox import XrayEvents

log = logging.getLogger(__name__)

BARN_NM2 = 1e-10  # 1 barn = 1e-28 m^2 = 1e-10 nm^2
HAADF_Z_EXPONENT = 1.7
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
# A line contributes while its Gaussian reaches the spectrum within this many sigma.
LINE_REACH_SIGMA = 6.0


@dataclass(frozen=True)
class EnergyAxis:
    """Spectrum channels: channel ``i`` is centred at ``offset_kev + i * dispersion_kev``."""

    n_channels: int
    dispersion_kev: float
    offset_kev: float

    @property
    def centers_kev(self) -> np.ndarray:
        return self.offset_kev + self.dispersion_kev * np.arange(self.n_channels)

    @property
    def range_kev(self) -> tuple[float, float]:
        """Energies that land inside the spectrum (edges of the first and last channel)."""
        half = self.dispersion_kev / 2
        return (self.offset_kev - half,
                self.offset_kev + (self.n_channels - 0.5) * self.dispersion_kev)

    def channel(self, energy_kev: np.ndarray) -> np.ndarray:
        """Nearest channel index (int64); may fall outside ``[0, n_channels)``."""
        return np.rint((np.asarray(energy_kev) - self.offset_kev) / self.dispersion_kev).astype(
            np.int64
        )

    def fraction_inside(self, energy_kev, sigma_kev) -> np.ndarray:
        """Probability that a Gaussian count at ``energy_kev`` lands inside the spectrum."""
        lo, hi = self.range_kev
        scale = np.sqrt(2.0) * np.asarray(sigma_kev)
        return 0.5 * (special.erf((hi - energy_kev) / scale)
                      - special.erf((lo - energy_kev) / scale))


def detector_efficiency(energy_kev, window_cutoff_kev: float, thickness_cutoff_kev: float):
    """Detection efficiency of a silicon drift detector, between 0 and 1.

    ``exp(-(E_w/E)^3)`` models absorption in the window and dead layer (photo-absorption
    goes as ``E^-3``), ``1 - exp(-(E_t/E)^3)`` the transparency of the crystal to hard X-rays.

    Parameters
    ----------
    energy_kev : array_like
        Photon energies in keV (non-positive energies give 0).
    window_cutoff_kev, thickness_cutoff_kev : float
        ``E_w`` and ``E_t`` in keV.
    """
    e = np.asarray(energy_kev, dtype=float)
    safe = np.where(e > 0, e, 1.0)
    window = np.exp(-((window_cutoff_kev / safe) ** 3))
    crystal = -np.expm1(-((thickness_cutoff_kev / safe) ** 3))
    eff = window * crystal
    return np.where(e > 0, eff, 0.0)


@dataclass(frozen=True)
class XrayLine:
    """One characteristic line as simulated.

    Attributes
    ----------
    element, line : str
        ``"S"``, ``"Ka"``; ``name`` is ``"S_Ka"``.
    energy_kev, fwhm_kev : float
    weight : float
        exspy's weight relative to the main line of its family.
    cross_section_barn : float
        Effective detected cross-section per atom, detector efficiency included.
    fraction_inside : float
        Probability that a count lands inside the spectrum's energy range.
    """

    element: str
    line: str
    energy_kev: float
    fwhm_kev: float
    weight: float
    cross_section_barn: float
    fraction_inside: float

    @property
    def name(self) -> str:
        return f"{self.element}_{self.line}"


@dataclass(frozen=True)
class Acquisition:
    """Acquisition settings of one simulated series (the preset's ``acquisition:`` block).

    Attributes
    ----------
    beam_energy_kev : float
    dose_e_per_nm2 : float
        Electron dose per tilt, all frames together.
    n_frames : int
        Frames over which every tilt's counts are split.
    n_channels : int
    dispersion_ev, energy_offset_ev : float
        Channel width and the energy of channel 0's centre, in eV.
    energy_resolution_mnka_ev : float
        Detector FWHM at Mn Ka (5.899 keV) in eV.
    detector_window_cutoff_kev, detector_thickness_cutoff_kev : float
        See :func:`detector_efficiency`.
    n_detectors : int
        Detector segments (Super-X: 4); counts are shared evenly among them.
    xray_cross_sections_barn : dict
        ``{element: {family: barn}}``, family ``"K"``, ``"L"`` or ``"M"``: the effective
        cross-section of the family's main line, detector efficiency excluded.
    bremsstrahlung_barn : float
        ``k_B`` of the module docstring.
    zero_peak_counts_per_pixel : float
        Mean counts of the zero-energy noise peak per pixel and tilt.
    zero_peak_fwhm_ev : float
    """

    beam_energy_kev: float
    dose_e_per_nm2: float
    n_frames: int
    n_channels: int
    dispersion_ev: float
    energy_offset_ev: float
    energy_resolution_mnka_ev: float
    detector_window_cutoff_kev: float
    detector_thickness_cutoff_kev: float
    n_detectors: int
    xray_cross_sections_barn: dict[str, dict[str, float]]
    bremsstrahlung_barn: float = 0.0
    zero_peak_counts_per_pixel: float = 0.0
    zero_peak_fwhm_ev: float = 60.0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], where: str = "acquisition") -> Acquisition:
        """Build from a mapping, rejecting unknown keys and missing required ones."""
        fields = cls.__dataclass_fields__
        unknown = sorted(set(spec) - set(fields))
        if unknown:
            raise EdxtomoInputError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}"
            )
        missing = [k for k, f in fields.items()
                   if k not in spec and f.default is dataclasses.MISSING]
        if missing:
            raise EdxtomoInputError(f"{where}: missing key(s) {', '.join(missing)}")
        for key, value in spec.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if fields[key].type in ("int", "float") and not number:
                raise EdxtomoInputError(f"{where}.{key} must be a number, got {value!r}")
            if fields[key].type == "int" and value != int(value):
                raise EdxtomoInputError(f"{where}.{key} must be an integer, got {value!r}")
        for key in ("beam_energy_kev", "dose_e_per_nm2", "n_frames", "n_channels",
                    "dispersion_ev", "energy_resolution_mnka_ev", "n_detectors"):
            if not spec[key] > 0:
                raise EdxtomoInputError(f"{where}.{key} must be positive, got {spec[key]!r}")
        settings = {k: int(v) if fields[k].type == "int" else v for k, v in spec.items()}
        return cls(**settings)

    @property
    def energy_axis(self) -> EnergyAxis:
        return EnergyAxis(self.n_channels, self.dispersion_ev / 1000, self.energy_offset_ev / 1000)

    def efficiency(self, energy_kev):
        return detector_efficiency(
            energy_kev, self.detector_window_cutoff_kev, self.detector_thickness_cutoff_kev
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def xray_lines(elements: Sequence[str], acq: Acquisition) -> list[XrayLine]:
    """The lines of ``elements`` that reach the spectrum, with their detected cross-sections.

    Every line of exspy's database in a family listed in ``acq.xray_cross_sections_barn``
    is kept when its Gaussian comes within ``LINE_REACH_SIGMA`` of the energy range.

    Raises
    ------
    EdxtomoInputError
        When an element has no cross-section or no line inside the spectrum.
    """
    database = element_database()
    axis = acq.energy_axis
    lo, hi = axis.range_kev
    lines: list[XrayLine] = []
    for el in elements:
        families = acq.xray_cross_sections_barn.get(el)
        if not families:
            raise EdxtomoInputError(
                f"acquisition.xray_cross_sections_barn has no entry for element {el!r}"
            )
        found = False
        table = database[el]["Atomic_properties"]["Xray_lines"].as_dictionary()
        for name, props in sorted(table.items(), key=lambda kv: kv[1]["energy (keV)"]):
            sigma_main = families.get(name[0])
            if sigma_main is None:
                continue
            energy = float(props["energy (keV)"])
            width = float(xray_fwhm_keV(energy, acq.energy_resolution_mnka_ev))
            reach = LINE_REACH_SIGMA * width * FWHM_TO_SIGMA
            if energy + reach < lo or energy - reach > hi:
                continue
            weight = float(props["weight"])
            lines.append(XrayLine(
                element=el, line=name, energy_kev=energy, fwhm_kev=width, weight=weight,
                cross_section_barn=float(sigma_main) * weight * float(acq.efficiency(energy)),
                fraction_inside=float(axis.fraction_inside(energy, width * FWHM_TO_SIGMA)),
            ))
            found = True
        if not found:
            raise EdxtomoInputError(
                f"element {el!r}: none of its {sorted(families)} lines falls in the spectrum "
                f"range {lo:.2f} to {hi:.2f} keV"
            )
    return lines


def bremsstrahlung_spectrum(acq: Acquisition) -> np.ndarray:
    """Kramers shape per channel, ``(E0 - E)/(E0 E) * eps(E) * dE`` in 1/keV * keV, (n_channels,).

    Multiplied by ``D * A * k_B * 1e-10 * sum_e Z_e^2 N_e`` it gives the expected continuum
    counts per channel of a pixel.
    """
    e = acq.energy_axis.centers_kev
    e0 = acq.beam_energy_kev
    safe = np.where(e > 0, e, 1.0)
    shape = np.where((e > 0) & (e < e0), (e0 - safe) / (e0 * safe), 0.0)
    return shape * acq.efficiency(e) * acq.energy_axis.dispersion_kev


# --------------------------------------------------------------------------------------
# Misalignment
# --------------------------------------------------------------------------------------

def draw_drift(n_tilt: int, shift_max_px: float, rng: np.random.Generator) -> np.ndarray:
    """Random per-tilt drift ``(n_tilt, 2)`` as ``(shift_x_px, shift_y_px)``.

    Uniform in ``+-shift_max_px``, then made zero-mean over the series (a constant shift is
    indistinguishable from the axis offset, which the model carries separately) and scaled
    back inside the bound if centring pushed a value past it.
    """
    if shift_max_px <= 0:
        return np.zeros((n_tilt, 2))
    shifts = rng.uniform(-shift_max_px, shift_max_px, size=(n_tilt, 2))
    shifts -= shifts.mean(axis=0)
    peak = np.abs(shifts).max()
    return shifts * min(1.0, shift_max_px / peak) if peak > 0 else shifts


def misalignment_coordinates(
    shape_yx: tuple[int, int],
    shift_x_px: float,
    shift_y_px: float,
    axis_rotation_deg: float,
    axis_offset_px: float,
) -> np.ndarray:
    """For each measured pixel, the (row, col) of the ideal image it shows: ``(2, ny, nx)``.

    Inverts ``r' = R(alpha) (r + (offset, 0)) + s``: ``r = R(-alpha) (r' - s) - (offset, 0)``.
    """
    ny, nx = shape_yx
    yc, xc = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2,
                         indexing="ij")
    a = np.deg2rad(axis_rotation_deg)
    dx, dy = xc - shift_x_px, yc - shift_y_px
    x = np.cos(a) * dx + np.sin(a) * dy - axis_offset_px
    y = -np.sin(a) * dx + np.cos(a) * dy
    return np.stack([y + (ny - 1) / 2, x + (nx - 1) / 2])


def apply_misalignment(
    images: np.ndarray,
    shift_x_px: float,
    shift_y_px: float,
    axis_rotation_deg: float,
    axis_offset_px: float,
) -> np.ndarray:
    """Move ideal images to where the misaligned microscope records them.

    Parameters
    ----------
    images : ndarray, shape (..., ny, nx)
        Ideal, non-negative images (tilt axis along y through the centre).
    shift_x_px, shift_y_px, axis_rotation_deg, axis_offset_px : float
        The contract's misalignment model for this tilt.

    Returns
    -------
    ndarray, float32, same shape
        One cubic-spline interpolation per image, zero outside the ideal field, clipped at
        0 (spline overshoot at sharp edges would otherwise give negative expectations).
    """
    images = np.asarray(images, dtype=np.float64)
    coords = misalignment_coordinates(images.shape[-2:], shift_x_px, shift_y_px,
                                      axis_rotation_deg, axis_offset_px)
    flat = images.reshape(-1, *images.shape[-2:])
    out = np.stack([ndimage.map_coordinates(im, coords, order=3, mode="constant", cval=0.0)
                    for im in flat])
    return np.maximum(out, 0.0).astype(np.float32).reshape(images.shape)


# --------------------------------------------------------------------------------------
# Expected signals and counts
# --------------------------------------------------------------------------------------

def expected_line_counts(
    atoms_per_nm2: Mapping[str, np.ndarray],
    lines: Sequence[XrayLine],
    dose_e_per_nm2: float,
    pixel_size_nm: float,
) -> dict[str, np.ndarray]:
    """Expected detected counts per line and pixel, landing inside the spectrum.

    Parameters
    ----------
    atoms_per_nm2 : dict of str to ndarray (ny, nx)
        Projected number density of each element.
    lines : sequence of XrayLine
    dose_e_per_nm2, pixel_size_nm : float

    Returns
    -------
    dict of line name to float64 ndarray (ny, nx)
    """
    scale = dose_e_per_nm2 * pixel_size_nm**2 * BARN_NM2
    return {
        line.name: scale * line.cross_section_barn * line.fraction_inside
        * np.asarray(atoms_per_nm2[line.element], dtype=np.float64)
        for line in lines
    }


def expected_bremsstrahlung(
    atoms_per_nm2: Mapping[str, np.ndarray], acq: Acquisition, pixel_size_nm: float
) -> np.ndarray:
    """Expected continuum counts per pixel over the whole spectrum, float64 ``(ny, nx)``."""
    z2 = sum(atomic_number(el) ** 2 * np.asarray(n, dtype=np.float64)
             for el, n in atoms_per_nm2.items())
    total_shape = bremsstrahlung_spectrum(acq).sum()
    per_atom = acq.dose_e_per_nm2 * pixel_size_nm**2 * acq.bremsstrahlung_barn * BARN_NM2
    return per_atom * total_shape * z2


def expected_haadf(
    atoms_per_nm2: Mapping[str, np.ndarray],
    electrons_per_pixel: float,
    cross_section_barn: float,
    background_electrons_per_pixel: float = 0.0,
) -> np.ndarray:
    """Expected HAADF signal in detected electrons per pixel, float64 ``(ny, nx)``.

    Each atom scatters onto the annular detector with a cross-section
    ``cross_section_barn * Z^1.7``; the background models the support film.
    """
    zsum = sum(atomic_number(el) ** HAADF_Z_EXPONENT * np.asarray(n, dtype=np.float64)
               for el, n in atoms_per_nm2.items())
    scattered = electrons_per_pixel * cross_section_barn * BARN_NM2 * zsum
    return scattered + background_electrons_per_pixel


def _pixels_of_counts(counts: np.ndarray) -> np.ndarray:
    """Flat pixel index repeated once per count."""
    return np.repeat(np.arange(counts.size), counts.ravel())


def draw_xray_events(
    line_expected: Mapping[str, np.ndarray],
    lines: Sequence[XrayLine],
    background_expected: np.ndarray | None,
    acq: Acquisition,
    rng: np.random.Generator,
) -> tuple[XrayEvents, np.ndarray]:
    """Draw the X-ray counts of one tilt as events.

    Parameters
    ----------
    line_expected : dict of line name to ndarray (ny, nx)
        From :func:`expected_line_counts` (counts that land inside the spectrum).
    lines : sequence of XrayLine
    background_expected : ndarray (ny, nx) or None
        From :func:`expected_bremsstrahlung`.
    acq : Acquisition
    rng : numpy.random.Generator

    Returns
    -------
    events : XrayEvents
        One entry per count, sorted by nothing in particular.
    source : ndarray of int
        Per event, the index of its line in ``lines``; ``len(lines)`` for the
        bremsstrahlung and ``len(lines) + 1`` for the zero peak.
    """
    axis = acq.energy_axis
    shape = next(iter(line_expected.values())).shape
    pixels, channels, sources = [], [], []
    by_element: dict[str, list[int]] = {}
    for k, line in enumerate(lines):
        by_element.setdefault(line.element, []).append(k)
    for indices in by_element.values():
        # Poisson per pixel for the element's raw emission (before the range cut), one line
        # per count in proportion to the cross-sections, then a Gaussian energy.
        raw = [line_expected[lines[k].name] / lines[k].fraction_inside for k in indices]
        counts = rng.poisson(np.sum(raw, axis=0))
        pix = _pixels_of_counts(counts)
        weights = np.array([lines[k].cross_section_barn for k in indices])
        pick = rng.choice(len(indices), size=pix.size, p=weights / weights.sum())
        which = np.asarray(indices)[pick]
        centre = np.array([ln.energy_kev for ln in lines])[which]
        sigma = np.array([ln.fwhm_kev for ln in lines])[which] * FWHM_TO_SIGMA
        pixels.append(pix)
        channels.append(axis.channel(centre + sigma * rng.standard_normal(pix.size)))
        sources.append(which)
    if background_expected is not None and acq.bremsstrahlung_barn > 0:
        pix = _pixels_of_counts(rng.poisson(background_expected))
        spectrum = bremsstrahlung_spectrum(acq)
        pixels.append(pix)
        channels.append(rng.choice(axis.n_channels, size=pix.size, p=spectrum / spectrum.sum()))
        sources.append(np.full(pix.size, len(lines)))
    if acq.zero_peak_counts_per_pixel > 0:
        pix = _pixels_of_counts(rng.poisson(acq.zero_peak_counts_per_pixel, size=shape))
        sigma = acq.zero_peak_fwhm_ev / 1000 * FWHM_TO_SIGMA
        pixels.append(pix)
        channels.append(axis.channel(sigma * rng.standard_normal(pix.size)))
        sources.append(np.full(pix.size, len(lines) + 1))
    pixel = np.concatenate(pixels)
    channel = np.concatenate(channels)
    source = np.concatenate(sources)
    keep = (channel >= 0) & (channel < axis.n_channels)
    pixel, channel, source = pixel[keep], channel[keep], source[keep]
    events = XrayEvents(
        frame=rng.integers(0, acq.n_frames, size=pixel.size),
        y=pixel // shape[1],
        x=pixel % shape[1],
        channel=channel,
        detector=rng.integers(0, acq.n_detectors, size=pixel.size),
    )
    return events, source
