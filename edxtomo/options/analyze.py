"""Options of the analyze stage (configuration section ``analyze``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from edxtomo.options.base import Options

Method = Literal["sirt", "fbp", "tv", "fused", "deep"]


class IntervalOptions(Options):
    """Count-split replicates behind the 95% intervals (:mod:`edxtomo.uncertainty`)."""

    replicates: int = Field(5, ge=0)
    """delete-a-group count splits (jackknife) per reconstruction, behind the intervals and the
    sd volumes; 0 turns them off, otherwise at least 2"""
    methods: list[Method] = ["sirt", "tv", "deep"]
    """reconstructions that get replicates; each costs `replicates` reruns of that method"""

    @model_validator(mode="after")
    def _at_least_two(self) -> IntervalOptions:
        if self.replicates == 1:
            raise ValueError("replicates must be 0 (no intervals) or at least 2")
        return self


class AnalyzeOptions(Options):
    """Segmentation and shell thickness (:func:`edxtomo.analyze.analyze_specimen`)."""

    methods: list[Method] = ["sirt", "tv", "deep"]
    """reconstructions to segment and measure"""
    segment_on: Literal["auto", "elements"] = "auto"
    """segment the HAADF volume when there is one (`auto`), or the summed, normalised element
    volumes (`elements`)"""
    threshold: Literal["otsu", "li", "triangle"] | Annotated[float, Field(gt=0, lt=1)] = "otsu"
    """segmentation threshold: `otsu`, `li`, `triangle`, or a fraction of the maximum"""
    min_volume_nm3: float = Field(20.0, ge=0)
    """objects smaller than this are dropped"""
    center: Annotated[str, StringConstraints(pattern=r"^(particle|[A-Z][a-z]?)$")] = "particle"
    """origin of the rays: the particle's centroid (`particle`), or the centroid of one element
    (`In` for an InP core)"""
    step_deg: Literal["auto"] | Annotated[float, Field(gt=0, le=30)] = "auto"
    """angular step of the (theta, phi) grid of rays (degrees, dividing 180); `auto`: rays at
    most half a voxel apart on the largest particle's surface, never finer than 1 degree"""
    shell_threshold: float = Field(0.5, gt=0, lt=1)
    """an element is present along a ray where it exceeds this fraction of its level in the
    particle (half maximum: the edge of a blurred step)"""
    shell_level: Literal["mean_profile", "ray_maxima", "profile_fit", "aligned_profile"] = (
        "mean_profile")
    """an element's level in a particle: the peak of its mean radial profile over the rays that
    cross the shell (`mean_profile`, robust to noise), or the 90th percentile of the per-ray
    maxima (`ray_maxima`, raised by noise); `aligned_profile`: the peak of the mean profile
    after each ray is shifted onto the shell's radius in its direction (no smear of shells
    whose radius varies with direction); `profile_fit` reads the shell's radii from a
    blurred shell fitted to each ray (blur and contrast removed; slower)"""
    intervals: IntervalOptions = IntervalOptions()
    """95% intervals of the shell statistics from count splits of the raw data"""
