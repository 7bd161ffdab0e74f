"""Options of the extract stage (configuration section ``extract``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from edxtomo.options.base import Element, Options

LineName = Annotated[str, StringConstraints(pattern=r"^[A-Z][a-z]?_[A-Za-z0-9]+$")]
KeVWindow = tuple[float, float]


class ExtractOptions(Options):
    """Spectrum images to net line-intensity maps (:func:`edxtomo.extract.extract_tilt_series`)."""

    elements: list[Element] = []
    """elements to map for samples whose sheet row names none; empty: the element selection stored
    in the files (or every map of the maps route)"""
    lines: dict[Element, LineName] = {}
    """X-ray line per element, e.g. `{In: In_La}`; by default the highest-energy K, L or M line
    free of the other elements' lines"""
    method: Literal["windows", "model"] = "windows"
    """`windows`: gross counts in an integration window plus a background model (counts stay
    integers); `model`: fit exspy's EDS model to the summed spectrum and unmix overlapping lines
    per pixel (floats)"""
    integration_fwhm: float = Field(1.2, gt=0)
    """width of each integration window, in units of the detector FWHM at the line"""
    background: Literal["auto", "none"] | dict[str, list[KeVWindow]] = "auto"
    """background windows: `auto` (2 to 5 FWHM each side, away from other lines), `none`, or keV
    windows per element or line, e.g. `{Zn_Ka: [[8.2, 8.4], [8.9, 9.1]]}`"""
    background_sigma_px: float = Field(2.0, ge=0)
    """Gaussian width (px) of the continuum map that spreads each line's background over the
    pixels"""
    keep_frames: bool = False
    """keep the frames of each acquisition; the deep denoiser then splits frames instead of
    counts"""
