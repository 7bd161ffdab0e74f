"""Options of acquisition planning (configuration section ``plan``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from edxtomo.options.base import Options

PlanMethod = Literal["sirt", "fbp", "tv", "deep"]


class TiltScheme(Options):
    """One tilt scheme of a plan: ``n_tilts`` evenly spaced angles over a range, inclusive."""

    n_tilts: int = Field(ge=2)
    """number of tilts"""
    tilt_range_deg: tuple[float, float] = (-60.0, 60.0)
    """first and last angle (deg)"""

    @model_validator(mode="after")
    def _range_is_increasing(self) -> TiltScheme:
        lo, hi = self.tilt_range_deg
        if not -90.0 < lo < hi < 90.0:
            raise ValueError(f"tilt_range_deg must be [first, last] with -90 < first < last "
                             f"< 90, got {list(self.tilt_range_deg)}")
        return self

    @property
    def label(self) -> str:
        """The scheme's name in file paths and tables: ``13tilts_-60_60``."""
        lo, hi = self.tilt_range_deg
        return f"{self.n_tilts}tilts_{lo:g}_{hi:g}"


class PlanOptions(Options):
    """Planning an acquisition: precision against dose and tilts (:mod:`edxtomo.plan`)."""

    preset: str = "resources/specimens/qd_demo.yaml"
    """specimen preset simulated at each grid point (`resources/specimens/*.yaml`): field,
    voxel size, particles; its own tilts and dose are replaced by the grid's"""
    counts_per_tilt: list[Annotated[int, Field(gt=0)]] = Field([150, 600, 2400], min_length=1)
    """doses of the grid: mean net X-ray counts per element and tilt"""
    tilt_schemes: list[TiltScheme] = Field(
        [{"n_tilts": 13, "tilt_range_deg": [-60.0, 60.0]}], min_length=1, validate_default=True)
    """tilt schemes of the grid, each `{n_tilts: N, tilt_range_deg: [first, last]}`"""
    repeats: int = Field(3, ge=2)
    """noise draws per grid point; the spread of the measured thickness over them is the
    precision"""
    method: PlanMethod = "sirt"
    """reconstruction measured (its settings from `reconstruct`, the measurement from
    `analyze`); `sirt`, the cheapest, keeps the default grid to minutes on a CPU: set the
    method you will analyze with"""
    background_fraction: float = Field(0.3, ge=0)
    """background counts under each line over its net counts"""
    target_nm: float = Field(0.2, gt=0)
    """wanted half-width of the 95% interval of a particle's mean shell thickness (nm)"""

    @model_validator(mode="after")
    def _grid_is_distinct(self) -> PlanOptions:
        for name, values in (("counts_per_tilt", self.counts_per_tilt),
                             ("tilt_schemes", [s.label for s in self.tilt_schemes])):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {values}")
        return self

    def largest_tilt_deg(self) -> float:
        """The largest absolute tilt of the grid (deg): the specimen stays in the field to it."""
        return max(abs(a) for s in self.tilt_schemes for a in s.tilt_range_deg)

    def point_settings(self) -> dict[str, object]:
        """The settings one grid point reads (not the grid, not the target), as plain data."""
        return self.model_dump(mode="json", include={"repeats", "method",
                                                     "background_fraction"})
