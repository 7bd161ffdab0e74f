"""The classical reconstruction methods of the workflow, applied to a whole tilt series.

:func:`reconstruct_series` runs :func:`edxtomo.tomo.sirt`, :func:`edxtomo.tomo.fbp` or
:func:`edxtomo.tomo.tv.tv_kl` with their :class:`~edxtomo.options.ReconstructOptions`, on
every channel of an aligned :class:`edxtomo.io.TiltSeries` at once.

* ``sirt`` and ``fbp`` reconstruct net counts (gross window counts minus the background
  under the line); HAADF is reconstructed as it is.
* ``tv`` reconstructs the gross counts with the background inside its Poisson model, which
  keeps the data term exact for counts.

:func:`fused_series` runs :func:`edxtomo.tomo.fused.fused_reconstruct` on the elements and
the HAADF of a series together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import HAADF, TiltSeries, write_volume
from edxtomo.io.xray import atomic_number, element_database
from edxtomo.options import ReconstructOptions, channel_weights
from edxtomo.options.base import with_chosen_weights
from edxtomo.options.reconstruct import TV_WEIGHT
from edxtomo.tomo.fbp import fbp
from edxtomo.tomo.fused import FusedResult, fused_reconstruct, split_counts, write_fit
from edxtomo.tomo.sirt import sirt
from edxtomo.tomo.tv import tv_kl
from edxtomo.tomo.weights import (
    AUTO,
    WeightCurves,
    chosen_weights,
    read_chosen_weights,
    tv_kl_weights,
    write_weights,
)

log = logging.getLogger(__name__)


def reconstruct_series(
    series: TiltSeries,
    method: Literal["sirt", "fbp", "tv"],
    options: ReconstructOptions,
    device: str = "auto",
    workers: int = 1,
    *,
    tv_weights: list[WeightCurves] | None = None,
    seed: int = 0,
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
    tv_weights : list of WeightCurves, optional
        ``tv`` with ``weight: auto``: the weights chosen already (:func:`tv_weight_curves`);
        default: chosen here.
    seed : int
        Seeds the count split of ``weight: auto``.

    Returns
    -------
    dict of str to ndarray, each (nz, ny, nx) float32
        By channel name, in the order of ``series.channels``.
    """
    names = list(series.channels)
    if method == "tv":
        if options.tv.weight == AUTO and tv_weights is None:
            tv_weights = tv_weight_curves(series, options, seed=seed, device=device)
        volumes = _tv(series, names, options, device, tv_weights)
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


def reconstruct_to_folder(
    method: Literal["sirt", "fbp", "tv", "fused"],
    options: ReconstructOptions,
    series: TiltSeries,
    directory: str | Path,
    *,
    raw: TiltSeries | None = None,
    to_volume_frame: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
    device: str = "auto",
    workers: int = 1,
    provenance: dict | None = None,
) -> None:
    """Reconstruct every channel of an aligned series and write the method's folder.

    Writes ``{channel}.tif`` (+ ``.hspy``), ``weights.tsv`` for ``tv`` and ``fused`` with
    ``weight: auto``, and ``haadf_model.tsv`` for ``fused``.

    Parameters
    ----------
    method : {"sirt", "fbp", "tv", "fused"}
    options : ReconstructOptions
    series : TiltSeries
        The aligned series.
    directory : path-like
    raw : TiltSeries, optional
        The series before alignment, whose integer counts ``weight: auto`` and
        ``haadf_weight: auto`` split (:func:`tv_weight_curves`, :func:`fused_series`).
    to_volume_frame : callable, optional
        ``(n_tilt, ny, nx) -> (n_tilt, ny, nx)``, the alignment of ``raw``.
    seed : int
    device : {"auto", "cpu", "cuda"}
    workers : int
        Processes of the slice-by-slice ASTRA CPU backend.
    provenance : dict, optional
        Added to every volume's metadata, beside the method and the angles.
    """
    out = Path(directory)
    curves = None
    if method in ("tv", "fused") and getattr(options, method).weight == AUTO:
        searched = series if method == "tv" else _elements_only(series)
        curves = tv_weight_curves(searched, options, seed=seed, device=device, raw=raw,
                                  to_volume_frame=to_volume_frame)
        write_weights(curves, out / "weights.tsv")
    if method == "fused":
        volumes, result = fused_series(series, options, seed=seed, device=device, raw=raw,
                                       to_volume_frame=to_volume_frame, tv_weights=curves)
        write_fit(result, out / "haadf_model.tsv")
    else:
        volumes = reconstruct_series(series, method, options, device=device, workers=workers,
                                     tv_weights=curves)
    metadata = {"method": method, "angles_deg": series.angles_deg, **(provenance or {})}
    for name, volume in volumes.items():
        write_volume(out / f"{name}.tif", volume, series.pixel_size_nm, name, metadata)


def with_weights_of(options: ReconstructOptions, tv_folder: str | Path | None,
                    section: Literal["tv", "fused"] = "tv") -> ReconstructOptions:
    """``options`` with the TV weights that a finished ``tv`` job chose, in ``section`` where
    its weight is ``auto`` (``fused`` takes them for its KL term).

    Parameters
    ----------
    options : ReconstructOptions
    tv_folder : path-like or None
        The ``tv`` job's folder, holding its ``weights.tsv``; None: ``options`` as they are.
    section : {"tv", "fused"}
    """
    if tv_folder is None:
        return options
    return with_chosen_weights(options, section,
                               read_chosen_weights(Path(tv_folder) / "weights.tsv"))


def tv_weight_curves(series: TiltSeries, options: ReconstructOptions, *, seed: int = 0,
                     device: str = "auto", raw: TiltSeries | None = None,
                     to_volume_frame=None) -> list[WeightCurves]:
    """The TV-KL weights of every channel chosen from held-out data (``weight: auto``).

    Parameters
    ----------
    series : TiltSeries
        The aligned series that ``tv`` reconstructs.
    options : ReconstructOptions
        ``nz`` and ``tv.iterations``.
    seed : int
        Seeds the count split.
    device : {"auto", "cpu", "cuda"}
    raw : TiltSeries, optional
        The series before alignment: its integer count channels are split into halves
        (:func:`edxtomo.tomo.weights.tv_kl_weights`), aligned by ``to_volume_frame``.
    to_volume_frame : callable, optional
        ``(n_tilt, ny, nx) -> (n_tilt, ny, nx)``, the alignment.

    Returns
    -------
    list of WeightCurves
    """
    names = list(series.channels)
    counts, background = _tv_data(series, names)
    # a channel the raw series lacks is NaN there: not counts, so scored on left-out tilts
    raw_counts = None if raw is None else np.stack([
        raw.summed(name) if name in raw.channels else np.full(counts.shape[1:], np.nan)
        for name in names])
    return tv_kl_weights(counts, series.angles_deg, names, background=background,
                         iterations=options.tv.iterations, seed=seed, nz=options.nz,
                         device=device, raw_counts=raw_counts, to_volume_frame=to_volume_frame)


def _tv_data(series: TiltSeries, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Gross counts clipped at 0 and the background, each ``(c, n_tilt, ny, nx)``."""
    counts = np.stack([series.summed(name).astype(np.float32) for name in names])
    background = np.stack([
        series.background.get(name, np.zeros(counts.shape[1:], np.float32)) for name in names
    ]).astype(np.float32)
    # Interpolation in alignment can leave tiny negative ringing on float channels.
    np.clip(counts, 0, None, out=counts)
    return counts, background


def _tv(series: TiltSeries, names: list[str], options: ReconstructOptions, device: str,
        tv_weights: list[WeightCurves] | None) -> np.ndarray:
    counts, background = _tv_data(series, names)
    if options.tv.weight == AUTO:
        weights = chosen_weights(tv_weights, names)
    else:
        weights = channel_weights(options.tv.weight, names, TV_WEIGHT)
    log.info("TV-KL weights %s", dict(zip(names, np.round(weights, 4).tolist(), strict=True)))
    return tv_kl(counts, series.angles_deg, weight=weights, iterations=options.tv.iterations,
                 background=background, nz=options.nz, device=device)


def fused_series(series: TiltSeries, options: ReconstructOptions, *, seed: int = 0,
                 device: str = "auto", raw: TiltSeries | None = None,
                 to_volume_frame=None, tv_weights: list[WeightCurves] | None = None
                 ) -> tuple[dict[str, np.ndarray], FusedResult]:
    """Fused HAADF + EDX reconstruction of the elements of an aligned series.

    Parameters
    ----------
    series : TiltSeries
        Aligned series with a HAADF channel and element counts.
    options : ReconstructOptions
        ``nz`` and ``fused``.
    seed : int
        Seeds the count splits of ``weight: auto`` and ``haadf_weight: auto``.
    device : {"auto", "cpu", "cuda"}
    raw : TiltSeries, optional
        The series before alignment: ``weight: auto`` and ``haadf_weight: auto`` split its
        integer counts and align the halves with ``to_volume_frame``; default: split the
        aligned counts, which must then be integers.
    to_volume_frame : callable, optional
        ``(n_tilt, ny, nx) -> (n_tilt, ny, nx)``, the alignment.
    tv_weights : list of WeightCurves, optional
        ``weight: auto``: the elements' TV-KL weights chosen already
        (:func:`tv_weight_curves` of the elements); default: chosen here.

    Returns
    -------
    volumes : dict of str to ndarray, each (nz, ny, nx) float32
        The element volumes (counts per voxel length) and ``HAADF``, the model's HAADF
        volume ``s sum_e Z_e^gamma c_e / k_e + r``.
    result : FusedResult
    """
    fused = options.fused
    names = series.elements
    if series.haadf is None or not names:
        raise EdxtomoInputError("method fused needs a HAADF channel and at least one element; "
                                f"the series has {list(series.channels)}")
    counts, background = _tv_data(series, names)
    if fused.weight == AUTO and tv_weights is None:
        tv_weights = tv_weight_curves(_elements_only(series), options, seed=seed, device=device,
                                      raw=raw, to_volume_frame=to_volume_frame)
    weights = (chosen_weights(tv_weights, names) if fused.weight == AUTO
               else channel_weights(fused.weight, names, TV_WEIGHT))
    log.info("fused TV weights %s", dict(zip(names, np.round(weights, 4).tolist(), strict=True)))
    halves = None
    if fused.haadf_weight == AUTO and raw is not None:
        split = [split_counts(raw.summed(name), np.random.default_rng([seed, i]))
                 for i, name in enumerate(names)]
        halves = tuple(np.stack([to_volume_frame(pair[k]) for pair in split]) for k in (0, 1))
    result = fused_reconstruct(
        counts, background, series.summed(HAADF).astype(np.float32), series.angles_deg,
        atomic_numbers(names), channel_weights(fused.sensitivity, names, 1.0),
        list(weights), haadf_weight=fused.haadf_weight,
        gamma_range=fused.gamma_range, residual_cost=fused.residual_cost,
        iterations=fused.iterations, seed=seed, halves=halves, nz=options.nz, device=device)
    volumes = {HAADF: result.haadf_volume()}
    volumes.update(zip(names, result.volumes, strict=True))
    return volumes, result


def _elements_only(series: TiltSeries) -> TiltSeries:
    """The element channels of a series (no HAADF), whose TV-KL weights ``fused`` uses."""
    return TiltSeries({name: series.channels[name] for name in series.elements},
                      series.angles_deg, series.pixel_size_nm, dict(series.provenance),
                      series.background)


def atomic_numbers(elements: list[str]) -> list[int]:
    """Atomic numbers from exspy's element database."""
    unknown = [e for e in elements if e not in element_database()]
    if unknown:
        raise EdxtomoInputError(f"method fused: no atomic number for channels {unknown}")
    return [atomic_number(e) for e in elements]
