"""The classical reconstruction methods of the workflow, applied to a whole tilt series.

:func:`reconstruct_series` runs :func:`edxtomo.tomo.sirt`, :func:`edxtomo.tomo.fbp` or
:func:`edxtomo.tomo.tv.tv_kl` with their :class:`~edxtomo.options.ReconstructOptions`, on
every channel of an aligned :class:`edxtomo.io.TiltSeries` at once.

* ``sirt`` and ``fbp`` reconstruct net counts (gross window counts minus the background
  under the line); HAADF is reconstructed as it is.
* ``tv`` reconstructs the gross counts with the background inside its Poisson model, which
  keeps the data term exact for counts.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from edxtomo.io import TiltSeries
from edxtomo.options import ReconstructOptions, channel_weights
from edxtomo.options.reconstruct import TV_WEIGHT
from edxtomo.tomo.fbp import fbp
from edxtomo.tomo.sirt import sirt
from edxtomo.tomo.tv import tv_kl

log = logging.getLogger(__name__)


def reconstruct_series(
    series: TiltSeries,
    method: Literal["sirt", "fbp", "tv"],
    options: ReconstructOptions,
    device: str = "auto",
    workers: int = 1,
) -> dict[str, np.ndarray]:
    """Reconstruct every channel of an aligned tilt series with one classical method.

    Parameters
    ----------
    series : TiltSeries
        Aligned series; frames, when kept, are summed.
    method : {"sirt", "fbp", "tv"}
    options : ReconstructOptions
        ``nz``, and for ``sirt`` and ``fbp`` the ``backend`` and ``chunk_slices``, and the
        method's own section.
    device : {"auto", "cpu", "cuda"}
    workers : int
        Processes of the slice-by-slice ASTRA CPU backend.

    Returns
    -------
    dict of str to ndarray, each (nz, ny, nx) float32
        By channel name, in the order of ``series.channels``.
    """
    names = list(series.channels)
    if method == "tv":
        volumes = _tv(series, names, options, device)
    else:
        projections = np.stack([series.net_counts(name) for name in names])
        common = {"backend": options.backend, "device": device, "nz": options.nz,
                  "chunk_slices": options.chunk_slices}
        if method == "sirt":
            volumes = sirt(projections, series.angles_deg, iterations=options.sirt.iterations,
                           prefilter=options.sirt.prefilter, workers=workers, **common)
        else:
            volumes = fbp(projections, series.angles_deg, filter=options.fbp.filter,
                          prefilter=options.fbp.prefilter, **common)
    volumes = np.asarray(volumes, dtype=np.float32)
    log.info("reconstructed %s with %s: volume %s", names, method, volumes.shape[1:])
    return dict(zip(names, volumes, strict=True))


def _tv(series: TiltSeries, names: list[str], options: ReconstructOptions,
        device: str) -> np.ndarray:
    counts = np.stack([series.summed(name).astype(np.float32) for name in names])
    background = np.stack([
        series.background.get(name, np.zeros(counts.shape[1:], np.float32)) for name in names
    ]).astype(np.float32)
    # Interpolation in alignment can leave tiny negative ringing on float channels.
    np.clip(counts, 0, None, out=counts)
    weights = channel_weights(options.tv.weight, names, TV_WEIGHT)
    log.info("TV-KL weights %s", dict(zip(names, weights, strict=True)))
    return tv_kl(counts, series.angles_deg, weight=weights, iterations=options.tv.iterations,
                 background=background, nz=options.nz, device=device)
