"""The analyze stage on one reconstruction: segment the particles, then measure every shell.

:func:`analyze_specimen` holds the order (:mod:`edxtomo.particles` then
:mod:`edxtomo.thickness`); :func:`write_analysis` writes the folder of the ``analyze`` rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edxtomo.io import HAADF, atomic_path, write_labels
from edxtomo.options import AnalyzeOptions
from edxtomo.particles import Segmentation, load_specimen, segment_particles
from edxtomo.thickness import ShellMaps, particle_thickness_table, stack_shell_maps

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


def analyze_specimen(recon_dir: str | Path, options: AnalyzeOptions) -> Analysis:
    """Segment the volumes of a reconstruction folder and measure each particle's shells.

    Parameters
    ----------
    recon_dir : path-like
        A folder of ``{channel}.tif`` volumes (one reconstruction method).
    options : AnalyzeOptions

    Returns
    -------
    Analysis
    """
    volumes, voxel_size_nm = load_specimen(
        {p.stem: p for p in sorted(Path(recon_dir).glob("*.tif"))})
    haadf = volumes.pop(HAADF, None)
    segmentation = segment_particles(
        volumes, voxel_size_nm,
        haadf=haadf if options.segment_on == "auto" else None,
        threshold=options.threshold, min_volume_nm3=options.min_volume_nm3)
    log.info("%d particles at threshold %.4g", len(segmentation.table), segmentation.threshold)
    rows, maps = particle_thickness_table(
        volumes, segmentation.labels, segmentation.table, voxel_size_nm,
        center=options.center, step_deg=options.step_deg, threshold=options.shell_threshold)
    log.info("flags: %s", dict(zip(*np.unique(rows["flag"], return_counts=True), strict=True)))
    return Analysis(segmentation, rows, maps, voxel_size_nm)


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
