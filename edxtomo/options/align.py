"""Options of the align stage (configuration section ``align``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from edxtomo.options.base import Options

REFERENCE_PATTERN = r"^(auto|edx|HAADF|[A-Z][a-z]?)$"


class AlignOptions(Options):
    """Registration of the tilt series (:func:`edxtomo.align.estimate_transforms`)."""

    reference: Annotated[str, StringConstraints(pattern=REFERENCE_PATTERN)] = "auto"
    """image to register: `auto` (HAADF when present, else the summed X-ray counts), `edx`, or a
    channel name"""
    refine: Literal["projection_matching", "none"] = "projection_matching"
    """refine the cross-correlation by projection matching, or `none`"""
    upsample: int = Field(20, ge=1)
    """sub-pixel factor of the phase cross-correlation"""
    bandpass_px: tuple[float, float] = (2.0, 32.0)
    """difference-of-Gaussians band-pass before cross-correlation: sigmas (original px) of the
    smoothing and of the background removed"""
    smooth_px: float | None = Field(None, ge=0)
    """Gaussian smoothing (sigma, px) of the reference first; `null`: 0 for a HAADF reference, 2
    for X-ray counts"""
    stretch: bool = True
    """stretch each view by cos(theta_neighbour) / cos(theta) across the axis before correlating it
    with its neighbour"""
    axis_rotation_deg: float | None = None
    """known in-plane rotation of the tilt axis; `null` searches for it"""
    axis_search_deg: float = Field(15.0, gt=0)
    """the rotation search covers +- this many degrees"""
    axis_step_deg: float = Field(5.0, gt=0)
    """grid step of the rotation search (refined by a parabola fit)"""
    pm_iterations: int = Field(10, ge=1)
    """maximum projection-matching iterations"""
    sirt_iterations: int = Field(20, ge=1)
    """SIRT iterations of each projection-matching reconstruction"""
    min_correlation: float = Field(0.3, ge=0, lt=1)
    """views below this correlation (or below the chance level of noise at that image size) are
    flagged `registered=False`, left out of the projection matching, and get shifts interpolated
    from their neighbours"""
    working_size_px: int = Field(128, ge=16)
    """registration runs on images binned to at most this size"""
    scan_size_px: int = Field(64, ge=16)
    """the rotation search runs on images binned to at most this size"""

    @model_validator(mode="after")
    def _band_pass_is_a_band(self) -> AlignOptions:
        low_px, high_px = self.bandpass_px
        if not 0 <= low_px < high_px:
            raise ValueError(f"bandpass_px must be (low, high) with 0 <= low < high, "
                             f"got {self.bandpass_px}")
        return self
