"""X-ray physics tables shared by the stages: exspy's element database and the detector's
FWHM law."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError

#: Energy of Mn Ka in keV, where a detector's resolution is quoted.
MN_KA_KEV = 5.8987


@functools.cache
def element_database() -> Any:
    """exspy's element database (``exspy.material.elements``): X-ray lines and their
    weights, atomic numbers.

    ``import exspy.material`` first runs exspy's package init, which imports its models and
    signals: about 3 s in every process that only wants the table (simulate, reconstruct
    fused, and the jobs that read element lines). The table's own module is executed alone
    when it is where exspy keeps it, else exspy is imported as usual.

    Returns
    -------
    hyperspy.misc.utils.DictionaryTreeBrowser
        Element symbol to its ``General_properties``, ``Atomic_properties``, ...
    """
    spec = importlib.util.find_spec("exspy")
    table = Path(spec.submodule_search_locations[0]) / "_misc" / "elements.py"
    if "exspy" in sys.modules or not table.is_file():
        from exspy.material import elements

        return elements
    module_spec = importlib.util.spec_from_file_location("edxtomo_exspy_elements", table)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.elements_db


def atomic_number(element: str) -> int:
    """Atomic number of an element symbol (``"Se"`` -> 34).

    Raises
    ------
    EdxtomoInputError
        An unknown element symbol.
    """
    database = element_database()
    if element not in database:
        raise EdxtomoInputError(f"unknown element symbol {element!r}")
    return int(database[element]["General_properties"]["Z"])


def xray_fwhm_keV(energy_keV: float | np.ndarray, resolution_mnka_eV: float) -> np.ndarray:
    """Detector FWHM in keV at an energy, from the FWHM at Mn Ka (Fiori and Newbury).

    ``FWHM(E)^2 = FWHM(Mn Ka)^2 + 2.5 eV * (E - E(Mn Ka))`` in eV, exspy's law.
    """
    variance_eV2 = resolution_mnka_eV**2 + 2.5 * (np.asarray(energy_keV) - MN_KA_KEV) * 1e3
    return np.sqrt(np.maximum(variance_eV2, 1.0)) / 1e3
