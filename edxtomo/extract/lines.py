"""X-ray lines: exspy's line table, integration windows and line choice.

X-ray lines
    One line per element (:func:`choose_line`): among the element's principal lines (Ka,
    La, Ma) that the beam excites efficiently and the detector sees well (up to 15 keV and
    half the beam energy), the highest in energy whose integration window is free of the
    other elements' strong lines. For InP/ZnSe/ZnS this gives In La, P Ka, Se Ka, S Ka and
    Zn Ka; Au next to P gives Au La, since Au Ma lies on P Ka. ``lines`` overrides it.

Integration windows
    ``integration_fwhm`` times the detector FWHM at the line energy, centred on the line.
    The FWHM follows exspy's law (Fiori and Newbury) from the resolution at Mn Ka.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import Acquisition
from edxtomo.io.xray import element_database, xray_fwhm_keV

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
    database = element_database()
    try:
        lines = database[element].Atomic_properties.Xray_lines.as_dictionary()
    except (AttributeError, KeyError):
        raise EdxtomoInputError(f"{element!r} is not an element with X-ray lines") from None
    return {
        f"{element}_{name}": (float(props["energy (keV)"]), float(props["weight"]))
        for name, props in lines.items()
    }


@functools.cache
def xray_line_table(min_weight: float = 0.0) -> tuple[tuple[str, float], ...]:
    """Every X-ray line of exspy's database at least ``min_weight`` strong.

    Returns
    -------
    tuple of (str, float)
        Line name (``"Cu_Ka"``) and energy in keV, for every element of the database.
    """
    database = element_database()
    table = []
    for element, properties in database.as_dictionary().items():
        lines = properties.get("Atomic_properties", {}).get("Xray_lines", {}) if isinstance(
            properties, dict) else {}
        table += [(f"{element}_{name}", float(line["energy (keV)"]))
                  for name, line in lines.items() if float(line["weight"]) >= min_weight]
    return tuple(table)


def line_energy_keV(line: str) -> float:
    """Energy in keV of an X-ray line such as ``"Zn_Ka"``."""
    element, _, name = line.partition("_")
    lines = element_lines(element)
    if line not in lines:
        known = ", ".join(sorted(lines))
        raise EdxtomoInputError(f"{line!r} is not an X-ray line of {element} (known: {known})")
    return lines[line][0]


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
    preferred line is returned (:func:`~edxtomo.extract.windows.plan_lines` warns;
    ``method="model"`` unmixes it).

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
