"""The analyze stage on one reconstruction: segment the particles, then measure every shell.

:func:`analyze_volumes` holds the order (:mod:`edxtomo.particles` then
:mod:`edxtomo.thickness`); :func:`analyze_specimen` reads a reconstruction folder into it;
:func:`write_analysis` writes the folder of the ``analyze`` rule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edxtomo.io import HAADF, atomic_path, replicate_folders, write_labels
from edxtomo.options import AnalyzeOptions
from edxtomo.particles import Segmentation, load_specimen, segment_particles
from edxtomo.thickness import (
    ShellMaps,
    add_intervals,
    particle_thickness_table,
    ray_step_deg,
    stack_shell_maps,
)

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    """Segmentation and shell measurements of one reconstruction.

    Attributes
    ----------
    segmentation : Segmentation
        Labels ``(nz, ny, nx)`` and the particle table.
    thickness : DataFrame
        One row per particle and element (:data:`edxtomo.thickness.ROW_COLUMNS`).
    maps : dict of (int, str) to ShellMaps
        The thickness maps behind each row.
    voxel_size_nm : float
    """

    segmentation: Segmentation
    thickness: pd.DataFrame
    maps: dict[tuple[int, str], ShellMaps]
    voxel_size_nm: float


def analyze_specimen(recon_dir: str | Path, options: AnalyzeOptions,
                     replicate_dir: str | Path | None = None) -> Analysis:
    """Segment the volumes of a reconstruction folder and measure each particle's shells.

    Parameters
    ----------
    recon_dir : path-like
        A folder of ``{channel}.tif`` volumes (one reconstruction method).
    options : AnalyzeOptions
    replicate_dir : path-like, optional
        The method's count-split replicates (:func:`edxtomo.uncertainty.write_replicates`),
        see :func:`analyze_volumes`.

    Returns
    -------
    Analysis
    """
    volumes, voxel_size_nm = _load_volumes(recon_dir)
    haadf = volumes.pop(HAADF, None)
    replicates = None if replicate_dir is None else [
        _load_volumes(folder)[0] for folder in replicate_folders(replicate_dir)]
    return analyze_volumes(volumes, voxel_size_nm, options, haadf=haadf, replicates=replicates)


def analyze_volumes(
    volumes: dict[str, np.ndarray],
    voxel_size_nm: float,
    options: AnalyzeOptions,
    *,
    haadf: np.ndarray | None = None,
    replicates: Sequence[dict[str, np.ndarray]] | None = None,
) -> Analysis:
    """Segment element volumes into particles and measure each particle's shells.

    Parameters
    ----------
    volumes : dict of str to ndarray, each (nz, ny, nx)
        Element volumes of one specimen.
    voxel_size_nm : float
        Isotropic voxel size in nm.
    options : AnalyzeOptions
    haadf : ndarray, shape (nz, ny, nx), optional
        HAADF volume, segmented instead of the elements when ``options.segment_on`` is
        ``auto``.
    replicates : sequence of dict of str to ndarray, optional
        Count-split replicates of ``volumes`` (:func:`edxtomo.uncertainty.method_replicates`),
        measured with the same particles: the thickness table gets its 95% intervals
        (:func:`edxtomo.thickness.add_intervals`). Without them the interval columns are NaN.

    Returns
    -------
    Analysis
    """
    segmentation = segment_particles(
        volumes, voxel_size_nm,
        haadf=haadf if options.segment_on == "auto" else None,
        threshold=options.threshold, min_volume_nm3=options.min_volume_nm3)
    log.info("%d particles at threshold %.4g", len(segmentation.table), segmentation.threshold)
    step_deg = ray_step_deg(options.step_deg, _largest_radius_vox(segmentation, voxel_size_nm))
    log.info("rays every %.3g degrees", step_deg)
    rows, maps = _thickness(volumes, segmentation, voxel_size_nm, options, step_deg)
    if replicates is not None:
        rows = add_intervals(rows, [_thickness(r, segmentation, voxel_size_nm, options,
                                               step_deg)[0] for r in replicates])
        log.info("intervals from %d count-split replicates", len(replicates))
    log.info("flags: %s", dict(zip(*np.unique(rows["flag"], return_counts=True), strict=True)))
    return Analysis(segmentation, rows, maps, voxel_size_nm)


def _load_volumes(folder: str | Path) -> tuple[dict[str, np.ndarray], float]:
    """The ``{channel}.tif`` volumes of a folder (HAADF included) and their voxel size."""
    return load_specimen({p.stem: p for p in sorted(Path(folder).glob("*.tif"))})


def _largest_radius_vox(segmentation: Segmentation, voxel_size_nm: float) -> float:
    """Radius (voxels) of the sphere of the largest particle's volume; 0 with no particle."""
    diameters_nm = segmentation.table["equivalent_diameter_nm"]
    return float(diameters_nm.max()) / 2.0 / voxel_size_nm if len(diameters_nm) else 0.0


def _thickness(volumes: dict[str, np.ndarray], segmentation: Segmentation,
               voxel_size_nm: float, options: AnalyzeOptions, step_deg: float):
    """:func:`particle_thickness_table` of the element volumes with the analyze options and
    rays every ``step_deg`` degrees."""
    elements = {name: v for name, v in volumes.items() if name != HAADF}
    return particle_thickness_table(
        elements, segmentation.labels, segmentation.table, voxel_size_nm,
        center=options.center, step_deg=step_deg, threshold=options.shell_threshold,
        reference=options.shell_level)


def write_analysis(analysis: Analysis, directory: str | Path) -> None:
    """Write ``labels.tif``, ``particles.tsv``, ``thickness.tsv`` and ``thickness_maps.npz``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_labels(out / "labels.tif", analysis.segmentation.labels, analysis.voxel_size_nm)
    for table, name in ((analysis.segmentation.table, "particles.tsv"),
                        (analysis.thickness, "thickness.tsv")):
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    with atomic_path(out / "thickness_maps.npz") as tmp, open(tmp, "wb") as stream:
        np.savez_compressed(stream, **stack_shell_maps(analysis.maps))
