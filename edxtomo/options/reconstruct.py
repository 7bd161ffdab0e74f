"""Options of the classical reconstructions (configuration sections ``reconstruct.*``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from edxtomo.options.base import ChannelWeight, Options

FbpFilter = Literal["ramp", "shepp-logan", "cosine", "hamming", "hann"]
PREFILTER_PATTERN = r"^(none|box[0-9]+|gaussian:[0-9]*\.?[0-9]+)$"
Prefilter = Annotated[str, StringConstraints(pattern=PREFILTER_PATTERN)]
Backend = Literal["torch", "astra", "tomopy"]

TV_WEIGHT = 0.3
"""TV-KL weight of channels that a per-channel mapping leaves out without a `default`."""

AutoWeight = ChannelWeight | Literal["auto"]
"""A regularisation weight: `auto` (chosen from held-out data, :mod:`edxtomo.tomo.weights`),
one number, or numbers by channel."""


class SirtOptions(Options):
    """SIRT (:func:`edxtomo.tomo.sirt`)."""

    iterations: int = Field(100, ge=1)
    """SIRT iterations"""
    prefilter: Prefilter = "none"
    """filter of each projection first: `none`, `boxN` (`box11` is the paper's conventional
    baseline) or `gaussian:SIGMA_PX`"""


class FbpOptions(Options):
    """Filtered back-projection (:func:`edxtomo.tomo.fbp`)."""

    filter: FbpFilter = "hann"
    """window of the ramp filter: `ramp`, `shepp-logan`, `cosine`, `hamming` or `hann`"""
    prefilter: Prefilter = "none"
    """as for SIRT"""


class TvOptions(Options):
    """TV-regularised reconstruction with a Poisson data term (:func:`edxtomo.tomo.tv.tv_kl`)."""

    iterations: int = Field(300, ge=1)
    """PDHG iterations of the TV-KL reconstruction"""
    weight: AutoWeight = "auto"
    """TV weight: `auto` (per element, the weight whose reconstruction of one half of the counts
    best predicts the other half; left-out tilts for float maps), one number, or per element
    (`{Se: 1, S: 2, default: 1}`); dose independent"""
