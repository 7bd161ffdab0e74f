"""Uncertainty from the data itself: a delete-a-group jackknife over binomial count splits.

Method
------
1. Split every element's raw (extracted, unaligned) integer counts into ``K`` disjoint
   groups, each pixel's count multinomially with equal probabilities (Poisson thinning:
   the groups are *independent* Poisson images of dose 1/K with the same mean).
2. Replicate ``k`` holds every count except group ``k`` (dose ``(K-1)/K``, close to the full
   dose, so a non-linear reconstruction behaves almost as on the full data), with the
   background scaled by ``(K-1)/K``; it is aligned with the sample's own transforms and
   reconstructed with the method's own settings.
3. Any quantity ``s`` measured on the replicates has the jackknife standard error
   ``sqrt((K-1)/K * sum_k (s_k - mean)^2)`` (Efron and Stein), an estimate of the standard
   deviation of ``s`` on the full data; its 95% interval is ``s_full -/+ t_{0.975, K-1} se``
   (Student t with ``K - 1`` degrees of freedom, because the standard error is estimated from
   ``K`` replicates).

The per-voxel standard deviation volumes are that standard error voxel by voxel.

No jackknife bias correction: the replicates at dose ``(K-1)/K`` estimate the first-order
``1/dose`` bias of ``s`` as ``(K-1) (mean_k s_k - s_full)``, but subtracting it was measured
to lower the coverage of the mean thickness's interval on SIRT (10 seeds, K = 5, 3000 counts:
0.83 against 0.97 uncorrected, S 0.70 against 1.00; the specimens of
``bench/intervals_coverage.py``): the bias left there is about 1%, and the correction adds
``K - 1`` times the noise of the replicates' mean.

What the intervals cover: the Poisson noise of the counts, as it propagates through the
reconstruction and the measurement. What they do not cover: alignment errors (every
replicate uses the same transforms), the segmentation (every replicate is measured within
the full data's particle masks; a ray centre set by an element, ``analyze.center: In``, is
found again on each replicate, so its noise does enter), model errors of the
reconstruction, and any bias of the method, which is shared by all replicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from edxtomo.align import apply_to_series
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import REPLICATE_FOLDER, TiltSeries, write_volume
from edxtomo.options import ReconstructOptions
from edxtomo.options.base import with_chosen_weights
from edxtomo.thickness import jackknife_se
from edxtomo.tomo.counts import count_groups
from edxtomo.tomo.methods import reconstruct_series

log = logging.getLogger(__name__)

SPLIT_STREAM = 0x1AC4
"""Mixed into the seed, so the groups differ from the denoiser's and the self-check's splits."""

Reconstruct = Callable[[TiltSeries, TiltSeries], dict[str, np.ndarray]]
"""A reconstruction of (raw series, aligned series), returning the volumes by channel."""


def jackknife_series(series: TiltSeries, n_groups: int, seed: int) -> Iterator[TiltSeries]:
    """The ``K`` delete-a-group replicates of a raw series.

    Parameters
    ----------
    series : TiltSeries
        Extracted (raw, unaligned) series whose element channels hold integer counts; the
        HAADF is kept whole in every replicate.
    n_groups : int
        ``K``.
    seed : int
        Seeds the split.

    Yields
    ------
    TiltSeries
        Replicate ``k``: every count except group ``k``, background times ``(K-1)/K``.

    Raises
    ------
    EdxtomoInputError
        An element channel that does not hold integer counts (float maps cannot be split).
    """
    for element in series.elements:
        data = series.channels[element]
        if not np.issubdtype(data.dtype, np.integer) and not np.all(data == np.round(data)):
            raise EdxtomoInputError(
                f"element {element!r} holds float maps, not counts: count-split intervals "
                "need integer counts (set analyze.intervals.replicates: 0 for such data)"
            )
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    groups = {e: count_groups(series.channels[e], n_groups, rng) for e in series.elements}
    kept = (n_groups - 1) / n_groups
    background = {e: np.asarray(b, np.float32) * kept for e, b in series.background.items()}
    for k in range(n_groups):
        channels = dict(series.channels)
        for element, parts in groups.items():
            channels[element] = series.channels[element] - parts[k]
        yield TiltSeries(channels, series.angles_deg, series.pixel_size_nm,
                         dict(series.provenance), background)


def replicate_volumes(
    extracted: TiltSeries,
    transforms: pd.DataFrame,
    reconstruct: Reconstruct,
    n_groups: int,
    seed: int,
) -> list[dict[str, np.ndarray]]:
    """Reconstruct every delete-a-group replicate of a sample.

    Parameters
    ----------
    extracted : TiltSeries
        The raw series (integer counts).
    transforms : DataFrame
        The sample's alignment transforms (:func:`edxtomo.align.read_transforms`), applied
        to every replicate as to the full data.
    reconstruct : callable
        ``(raw replicate, aligned replicate) -> {channel: volume (nz, ny, nx)}``.
    n_groups : int
        ``K``.
    seed : int

    Returns
    -------
    list of dict of str to ndarray
        ``K`` dicts of volumes by channel.
    """
    volumes = []
    for k, raw in enumerate(jackknife_series(extracted, n_groups, seed)):
        log.info("replicate %d of %d (group %d left out)", k + 1, n_groups, k)
        volumes.append(reconstruct(raw, apply_to_series(raw, transforms)))
    return volumes


def sd_volumes(replicates: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-voxel jackknife standard deviation of every channel's volume.

    Parameters
    ----------
    replicates : list of dict of str to ndarray, each (nz, ny, nx)
        The output of :func:`replicate_volumes`.

    Returns
    -------
    dict of str to ndarray, each (nz, ny, nx) float32
        The standard deviation of the full-data volume, voxel by voxel, in the volume's own
        units (:func:`edxtomo.thickness.intervals.jackknife_se`).
    """
    return {name: jackknife_se(np.stack([r[name] for r in replicates])).astype(np.float32)
            for name in replicates[0]}


def method_replicates(
    extracted: TiltSeries,
    transforms: pd.DataFrame,
    method: str,
    options: ReconstructOptions,
    n_groups: int,
    *,
    chosen_weights: dict[str, float] | None = None,
    seed: int = 0,
    device: str = "auto",
) -> list[dict[str, np.ndarray]]:
    """The delete-a-group replicates of one reconstruction method, with its own settings.

    Parameters
    ----------
    extracted : TiltSeries
        The raw series (integer counts).
    transforms : DataFrame
        The sample's alignment transforms.
    method : {"sirt", "fbp", "tv", "deep"}
    options : ReconstructOptions
        The method's settings; ``deep`` runs its steps a-d with its budget and without its
        self-check, each replicate training its own networks from the seed. A weight set to
        ``auto`` is chosen again on each replicate unless ``chosen_weights`` is given.
    n_groups : int
        ``K``.
    chosen_weights : dict of str to float, optional
        The weights the full-data run chose for a weight set to ``auto`` (``tv``, or step
        b of ``deep``), by channel (:func:`edxtomo.tomo.weights.read_chosen_weights`): the
        replicates use them instead of choosing again (each choice costs several
        reconstructions), so the intervals leave out the spread of that choice.
    seed : int
        Seeds the split and, for ``deep``, the training.
    device : {"auto", "cpu", "cuda"}

    Returns
    -------
    list of dict of str to ndarray
        ``K`` dicts of volumes ``(nz, ny, nx)`` by channel.
    """
    if method == "deep":
        # torch-heavy: only for the deep replicates
        from edxtomo.deep.run import run_deep

        deep = with_chosen_weights(options.deep.model_copy(update={"selfcheck": False}),
                                   "mbir", chosen_weights or {})

        def reconstruct(raw: TiltSeries, aligned: TiltSeries) -> dict[str, np.ndarray]:
            return run_deep(raw, aligned, transforms, deep, nz=options.nz, seed=seed,
                            device=device, progress=False, classical=options).result.volumes
    else:
        options = with_chosen_weights(options, "tv", chosen_weights or {})

        def reconstruct(raw: TiltSeries, aligned: TiltSeries) -> dict[str, np.ndarray]:
            return reconstruct_series(aligned, method, options, device=device, seed=seed)
    return replicate_volumes(extracted, transforms, reconstruct, n_groups, seed)


def write_replicates(
    replicates: list[dict[str, np.ndarray]], directory: str | Path, voxel_size_nm: float
) -> None:
    """Write ``replicate_{k}/{channel}.tif`` (+ ``.hspy``) and ``{channel}_sd.tif`` (+ ``.hspy``).

    Parameters
    ----------
    replicates : list of dict of str to ndarray
        :func:`method_replicates`.
    directory : path-like
    voxel_size_nm : float
    """
    out = Path(directory)
    meta = {"method": "delete-a-group jackknife over binomial count splits",
            "replicates": len(replicates)}
    for k, volumes in enumerate(replicates):
        for name, volume in volumes.items():
            write_volume(out / REPLICATE_FOLDER.format(k=k) / f"{name}.tif", volume,
                         voxel_size_nm, name, meta | {"left_out_group": k})
    for name, sd in sd_volumes(replicates).items():
        write_volume(out / f"{name}_sd.tif", sd, voxel_size_nm, f"{name} sd", meta)

