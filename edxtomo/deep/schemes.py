"""Which self-supervised scheme fits the maps: counts (frames, binomial splits, recovered
counts times a scale) or floats (neighbor2neighbor, recorrupted pairs of the measured noise
covariance, or a blind spot wider than the measured noise correlation).
:func:`plan_denoising` decides from the data and says why."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edxtomo.deep.noise import (
    correlation_length,
    count_scale,
    noise_autocorrelation,
)
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import TiltSeries

log = logging.getLogger(__name__)


SCHEMES = ("frames", "binomial", "neighbor2neighbor", "recorrupted", "blindspot")


FLOAT_SCHEMES = ("neighbor2neighbor", "recorrupted", "blindspot")


COUNT_SCHEMES = ("frames", "binomial")


@dataclass
class NoisePlan:
    """What :func:`plan_denoising` found in the maps, and the scheme it chose.

    ``count_scale``: per element, the count scale (1 for integer counts), or None for maps
    that are not counts. ``correlation``: per float element, the noise autocorrelation at
    lags 0.. (:func:`~edxtomo.deep.noise.noise_autocorrelation`). ``correlation_px``: the
    correlation length the float scheme must step over (the largest over the float
    elements, or the option), None when a count scheme runs.
    """

    scheme: str
    count_scale: dict[str, float | None]
    correlation: dict[str, np.ndarray] = field(default_factory=dict)
    correlation_px: int | None = None


def is_counts(series: TiltSeries, name: str) -> bool:
    """Whether channel ``name`` holds photon counts that may be split.

    False when the provenance says ``counts: false`` (per channel or for the series), or
    when the data hold negative or non-integer values.
    """
    flags = [series.provenance.get("counts"),
             series.provenance.get("channels", {}).get(name, {}).get("counts")]
    if any(_says_false(flag) for flag in flags):
        return False
    data = series.channels[name]
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        return bool(data.min() >= 0) if data.size else True
    return bool(np.all(data >= 0) and np.all(data == np.round(data)))


def _says_false(flag: Any) -> bool:
    """A provenance flag that is set and false (bool, numpy bool from HDF5, or text)."""
    if isinstance(flag, str):
        return flag.strip().lower() in ("false", "no", "0")
    return flag is not None and not bool(flag)


def element_count_scale(series: TiltSeries, name: str) -> float | None:
    """The count scale of channel ``name``: 1 for counts (:func:`is_counts`), ``s`` for float
    maps on a lattice ``k * s`` (:func:`~edxtomo.deep.noise.count_scale`), else None.

    Float maps are tested for a lattice even when the provenance says ``counts: false``
    (the map readers set it from the dtype); integer maps flagged ``counts: false`` are not
    counts.
    """
    if is_counts(series, name):
        return 1.0
    data = series.channels[name]
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        return None
    return count_scale(data)


def plan_denoising(series: TiltSeries, scheme: str = "auto",
                   correlation_px: int | None = None) -> NoisePlan:
    """Recover counts, measure the noise correlation of float maps, and choose the scheme.

    ``auto``: ``frames`` when every element keeps >= 2 frames of counts, ``binomial`` for
    counts (integers, or floats that are counts times a scale); for float maps that are not
    counts, ``neighbor2neighbor`` when their noise is white (correlation length 0) and
    ``recorrupted`` (pairs recorrupted with noise of the measured covariance) otherwise.

    Parameters
    ----------
    series : TiltSeries
    scheme : {"auto", "frames", "binomial", "neighbor2neighbor", "recorrupted", "blindspot"}
    correlation_px : int, optional
        Correlation length to use instead of the measured one.

    Raises
    ------
    EdxtomoInputError
        When a count scheme is requested for maps that are not counts, or ``"frames"``
        for maps without frames.
    """
    if scheme != "auto" and scheme not in SCHEMES:
        raise EdxtomoInputError(f"unknown denoising scheme {scheme!r}; expected {SCHEMES}")
    elements = series.elements
    scales = {e: element_count_scale(series, e) for e in elements}
    floats = [e for e in elements if scales[e] is None]
    framed = all(series.channels[e].ndim == 4 and series.channels[e].shape[1] >= 2
                 for e in elements)
    if scheme in COUNT_SCHEMES and floats:
        raise EdxtomoInputError(
            f"maps of {floats} are not counts (floats or counts: false); they cannot be split "
            f"with the {scheme!r} scheme: use one of {FLOAT_SCHEMES}"
        )
    if scheme == "frames" and not framed:
        raise EdxtomoInputError("the 'frames' scheme needs every element with >= 2 frames")
    if scheme in COUNT_SCHEMES or (scheme == "auto" and not floats):
        chosen = scheme if scheme != "auto" else ("frames" if framed else "binomial")
        return NoisePlan(chosen, scales)
    targets = floats or elements
    correlation = {e: noise_autocorrelation(series.summed(e)) for e in targets}
    # one alignment and one export filter for every element: the smallest length, the one
    # least propped up by the signal left in the residual (bright elements read wider)
    measured = min(correlation_length(rho) for rho in correlation.values())
    length = measured if correlation_px is None else correlation_px
    if scheme == "auto":
        scheme = "recorrupted" if length > 0 else "neighbor2neighbor"
    elif scheme == "neighbor2neighbor" and length > 0:
        log.warning("the noise of %s is correlated over %d px: neighbour sub-images share "
                    "it, and neighbor2neighbor keeps it as signal; 'recorrupted' (or 'auto') "
                    "stays unbiased under it", "+".join(targets), length)
    return NoisePlan(scheme, scales, correlation, length)


def choose_scheme(series: TiltSeries, scheme: str = "auto") -> str:
    """The denoising scheme for ``series``: see :func:`plan_denoising`."""
    return plan_denoising(series, scheme).scheme
