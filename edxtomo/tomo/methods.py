"""The classical reconstruction methods of the workflow, applied to a whole tilt series.

:func:`reconstruct_series` maps the ``reconstruct`` section of the configuration onto
:func:`edxtomo.tomo.sirt`, :func:`edxtomo.tomo.fbp` and :func:`edxtomo.tomo.tv.tv_kl`, for
every channel of an aligned :class:`edxtomo.io.TiltSeries` at once.

* ``sirt`` and ``fbp`` reconstruct net counts (gross window counts minus the background
  under the line); HAADF is reconstructed as it is.
* ``tv`` reconstructs the gross counts with the background inside its Poisson model, which
  keeps the data term exact for counts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from edxtomo.io import TiltSeries
from edxtomo.tomo.fbp import fbp
from edxtomo.tomo.sirt import sirt
from edxtomo.tomo.tv import tv_kl

log = logging.getLogger(__name__)

CLASSICAL_METHODS = ("sirt", "fbp", "tv")


def channel_weights(weight: float | Mapping[str, float], channels: list[str],
                    default: float) -> list[float]:
    """One regularisation weight per channel from a number or a per-channel mapping.

    Parameters
    ----------
    weight : float or mapping of str to float
        One weight for all channels, or weights by channel name; channels missing from
        the mapping get its ``default`` entry, else ``default``.
    channels : list of str
    default : float
    """
    if isinstance(weight, Mapping):
        fallback = float(weight.get("default", default))
        return [float(weight.get(name, fallback)) for name in channels]
    return [float(weight)] * len(channels)


def reconstruct_series(
    series: TiltSeries,
    method: str,
    options: Mapping[str, Any],
    device: str = "auto",
    workers: int = 1,
) -> dict[str, np.ndarray]:
    """Reconstruct every channel of an aligned tilt series with one classical method.

    Parameters
    ----------
    series : TiltSeries
        Aligned series; frames, when kept, are summed.
    method : {"sirt", "fbp", "tv"}
    options : mapping
        The ``reconstruct`` section of the configuration: ``backend``, ``nz``,
        ``chunk_slices`` and the ``sirt``, ``fbp`` and ``tv`` sub-sections.
    device : {"auto", "cpu", "cuda"}
    workers : int
        Processes of the slice-by-slice ASTRA CPU backend.

    Returns
    -------
    dict of str to ndarray, each (nz, ny, nx) float32
        By channel name, in the order of ``series.channels``.
    """
    names = list(series.channels)
    nz = options.get("nz")
    if method in ("sirt", "fbp"):
        projections = np.stack([series.net_counts(name) for name in names])
        common = {"backend": options["backend"], "device": device, "nz": nz,
                  "prefilter": options[method]["prefilter"],
                  "chunk_slices": options.get("chunk_slices")}
        if method == "sirt":
            volumes = sirt(projections, series.angles_deg,
                           iterations=options["sirt"]["iterations"], workers=workers, **common)
        else:
            volumes = fbp(projections, series.angles_deg, filter=options["fbp"]["filter"],
                          **common)
    elif method == "tv":
        counts = np.stack([series.summed(name).astype(np.float32) for name in names])
        background = np.stack([
            series.background.get(name, np.zeros(counts.shape[1:], np.float32))
            for name in names
        ]).astype(np.float32)
        # Interpolation in alignment can leave tiny negative ringing on float channels.
        np.clip(counts, 0, None, out=counts)
        tv_options = options["tv"]
        weights = channel_weights(tv_options["weight"], names, default=0.3)
        log.info("TV-KL weights %s", dict(zip(names, weights, strict=True)))
        volumes = tv_kl(counts, series.angles_deg, weight=weights,
                        iterations=tv_options["iterations"], background=background, nz=nz,
                        device=device)
    else:
        raise ValueError(f"unknown classical method {method!r}; expected {CLASSICAL_METHODS}")
    volumes = np.asarray(volumes, dtype=np.float32)
    log.info("reconstructed %s with %s: volume %s", names, method, volumes.shape[1:])
    return dict(zip(names, volumes, strict=True))
