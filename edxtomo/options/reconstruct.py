"""Options of the classical reconstructions (configuration sections ``reconstruct.*``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, StringConstraints, model_validator

from edxtomo.options.base import ChannelWeight, NonNegative, Options

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


class FusedOptions(Options):
    """Fused HAADF + EDX reconstruction (:func:`edxtomo.tomo.fused.fused_reconstruct`)."""

    iterations: int = Field(150, ge=1)
    """PDHG iterations of each fused reconstruction (`haadf_weight: auto` runs four: three on
    count halves, one on all counts)"""
    weight: AutoWeight = "auto"
    """TV weight of each element: `auto` (the TV-KL weights that count halves choose for the
    elements, as `tv`'s: the fused objective's own KL term; taken from the `tv` job when its
    weight is `auto` too), one number, or per element (`{Se: 0.3, default: 0.3}`); dose
    independent"""
    haadf_weight: NonNegative | Literal["auto"] = "auto"
    """weight of the HAADF term in units of its inverse noise variance: `auto` (0, 0.03 or 1,
    the one whose reconstruction of half of the counts best predicts the other half; 0 turns
    fusion off), or a number"""
    gamma_range: tuple[PositiveFloat, PositiveFloat] = (1.6, 1.8)
    """prior range `[low, high]` of the HAADF Z exponent gamma, fitted from the data inside it"""
    sensitivity: ChannelWeight = 1.0
    """relative X-ray counts per atom of each element (1 / Cliff-Lorimer k-factor, any common
    scale), one number or per element; gamma is only as right as these"""
    residual_cost: float = Field(0.5, gt=0, le=1)
    """cost of HAADF signal put in the residual volume (film, ligands, unlisted elements),
    relative to an element where no X-rays are counted; below 1 keeps such material out of the
    elements"""

    @model_validator(mode="after")
    def _ordered_range(self) -> FusedOptions:
        low, high = self.gamma_range
        if low > high:
            raise ValueError(f"gamma_range must be [low, high], got {list(self.gamma_range)}")
        return self
