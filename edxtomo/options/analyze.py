"""Options of the analyze stage (configuration section ``analyze``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from edxtomo.options.base import Options

Method = Literal["sirt", "fbp", "tv", "deep"]


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
    step_deg: float = Field(1.0, gt=0, le=30)
    """angular step of the (theta, phi) grid of rays"""
    shell_threshold: float = Field(0.5, gt=0, lt=1)
    """an element is present along a ray where it exceeds this fraction of its level in the
    particle (half maximum: the edge of a blurred step)"""
