"""Shell thickness of every particle and element of a specimen, and per-sample summaries."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.particles import PARTICLE_CENTER, particle_regions
from edxtomo.statistics import INTERVAL_OK, INTERVAL_TOO_FEW, mean_interval
from edxtomo.thickness.equal_area import THICKNESS_COLUMNS, shell_statistics
from edxtomo.thickness.intervals import INTERVAL_COLUMNS
from edxtomo.thickness.rays import ShellMaps, shell_thickness
from edxtomo.thickness.sphere import sphere_grid

log = logging.getLogger(__name__)

ROW_COLUMNS = (
    "particle",
    "element",
    *THICKNESS_COLUMNS,
    *INTERVAL_COLUMNS,
    "element_level",
    "threshold_level",
    "center",
    "equivalent_diameter_nm",
    "sphericity",
    "flag",
)


FLAG_OK = "ok"


FLAG_TOUCHES_BORDER = "touches_border"


FLAG_ELEMENT_ABSENT = "element_absent"


FLAG_NO_PARTICLES = "no_particles"


SUMMARY_METRICS = (*THICKNESS_COLUMNS, "equivalent_diameter_nm", "sphericity")


def particle_center(
    volumes: Mapping[str, np.ndarray], mask: np.ndarray, center: str = PARTICLE_CENTER
) -> np.ndarray:
    """Centre of a particle in voxel coordinates, from its mask or one element.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
        Element volumes (cropped like ``mask``).
    mask : ndarray of bool, shape (nz, ny, nx)
        The particle's voxels.
    center : str
        ``"particle"``: centroid of ``mask``. An element symbol (``"In"`` for the core,
        ``"Se"`` for the first shell): centroid of that element inside the mask, weighted by
        its value, over the voxels above half of its 99th percentile there (so background
        inside the mask does not pull the centre towards the mask's centroid).

    Returns
    -------
    ndarray, shape (3,)
        ``(z, y, x)`` in voxel indices.
    """
    if not mask.any():
        raise ValueError("the particle mask is empty")
    if center == PARTICLE_CENTER:
        return np.argwhere(mask).mean(axis=0)
    if center not in volumes:
        raise EdxtomoInputError(
            f"centre element {center!r} is not among the volumes {sorted(volumes)}"
        )
    values = np.where(mask, np.clip(volumes[center], 0.0, None), 0.0)
    level = np.percentile(values[mask], 99)
    if not level > 0:
        log.warning("centre element %s is absent from the particle; using its mask", center)
        return np.argwhere(mask).mean(axis=0)
    values = np.where(values > level / 2, values, 0.0)
    return np.asarray(ndi.center_of_mass(values), dtype=float)


def particle_shell_maps(
    volumes: Mapping[str, np.ndarray],
    regions: np.ndarray,
    labels: np.ndarray,
    particle: int,
    voxel_size_nm: float,
    *,
    elements: Sequence[str] | None = None,
    center: str = PARTICLE_CENTER,
    box: tuple[slice, ...] | None = None,
    **options,
) -> tuple[dict[str, ShellMaps], np.ndarray]:
    """Shell maps of every element of one particle.

    Each element volume is cropped to the particle's region (its label grown by a margin,
    :func:`edxtomo.particles.particle_regions`) and zeroed outside it, so rays never reach a
    neighbour. With ``reference="profile_fit"`` the elements share one blur width: the one
    fitted to the element with the thickest shell (at the half-maximum reading), whose two
    edges fix it; a shell thinner than the blur alone trades its width against the blur.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
    regions : ndarray of int, shape (nz, ny, nx)
        Particle regions from :func:`edxtomo.particles.particle_regions`.
    labels : ndarray of int, shape (nz, ny, nx)
        The segmentation, for the centre of the particle.
    particle : int
        Label of the particle.
    voxel_size_nm : float
    elements : sequence of str, optional
        Elements to measure; default all of ``volumes``.
    center : str
        See :func:`particle_center`.
    box : tuple of slice, optional
        The particle's region's bounding box, ``ndi.find_objects(regions)[particle - 1]``;
        pass it when measuring many particles (one ``find_objects`` for all of them), since
        finding it costs a pass over the whole volume.
    **options
        Passed to :func:`shell_thickness` (``step_deg``, ``threshold``, ...).

    Returns
    -------
    maps : dict of str to ShellMaps
    center_vox : ndarray, shape (3,)
        The centre in voxel indices of the full volume.
    """
    elements = list(elements) if elements is not None else list(volumes)
    if box is None:
        box = ndi.find_objects(regions, max_label=particle)[particle - 1]
    if box is None:
        raise ValueError(f"particle {particle} has no region")
    offset = np.array([s.start for s in box], dtype=float)
    inside = regions[box] == particle
    cropped = {
        name: np.where(inside, np.asarray(vol, dtype=np.float32)[box], np.float32(0))
        for name, vol in volumes.items()
        if name in elements or name == center
    }
    center_vox = particle_center(cropped, labels[box] == particle, center)
    if options.get("reference") == "profile_fit" and options.get("blur_vox") is None:
        options = options | {"blur_vox": shared_blur_vox(
            {name: cropped[name] for name in elements}, center_vox, voxel_size_nm, options)}
    maps = {
        name: shell_thickness(cropped[name], center_vox, voxel_size_nm, **options)
        for name in elements
    }
    return maps, center_vox + offset


def shared_blur_vox(volumes: Mapping[str, np.ndarray], center_vox: np.ndarray,
                    voxel_size_nm: float, options: Mapping) -> float | None:
    """Blur width (voxels) fitted to the element whose shell reads thickest at half maximum.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
        One particle's element volumes, cropped and zeroed outside it.
    center_vox : ndarray, shape (3,)
        Ray origin in voxel indices of the crop.
    voxel_size_nm : float
    options : mapping
        :func:`shell_thickness` keyword arguments (``step_deg``, ``threshold``, ...).

    Returns
    -------
    float or None
        The blur (Gaussian sigma, voxels) of :mod:`edxtomo.thickness.profile_fit` on that
        element; None when no element has a shell.
    """
    threshold_options = dict(options) | {"reference": "mean_profile"}
    means = {}
    for name, volume in volumes.items():
        maps = shell_thickness(volume, center_vox, voxel_size_nm, **threshold_options)
        means[name] = float(np.mean(maps.thickness_nm))
    thickest = max(means, key=means.get)
    if not means[thickest] > 0:
        return None
    fitted = shell_thickness(volumes[thickest], center_vox, voxel_size_nm,
                             **(dict(options) | {"reference": "profile_fit"}))
    log.info("shared blur from %s: sigma %.2f nm", thickest, fitted.blur_nm)
    return fitted.blur_nm / voxel_size_nm


def particle_thickness_table(
    volumes: Mapping[str, np.ndarray],
    labels: np.ndarray,
    particles: pd.DataFrame,
    voxel_size_nm: float,
    *,
    elements: Sequence[str] | None = None,
    center: str = PARTICLE_CENTER,
    margin_vox: int = 3,
    min_thickness_nm: float = 0.0,
    absent_fraction: float = 0.2,
    **options,
) -> tuple[pd.DataFrame, dict[tuple[int, str], ShellMaps]]:
    """One row of shell statistics per particle and element, with a flag column.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
        Element volumes of one specimen.
    labels : ndarray of int, shape (nz, ny, nx)
        Segmentation from :func:`edxtomo.particles.segment_particles`.
    particles : DataFrame
        Its particle table (:data:`edxtomo.particles.PARTICLE_COLUMNS`).
    voxel_size_nm : float
    elements : sequence of str, optional
        Elements to measure; default all of ``volumes``.
    center : str
        ``"particle"`` or an element symbol, see :func:`particle_center`.
    margin_vox : int
        Voxels by which each particle's region extends beyond its label.
    min_thickness_nm : float
        See :func:`shell_statistics`.
    absent_fraction : float
        An element whose level in a particle is below this fraction of its highest level
        over all particles is absent from that particle: its thickness statistics are NaN
        (a relative threshold on noise would measure noise) and its ``no_shell_fraction`` 1.
    **options
        Passed to :func:`shell_thickness` (``step_deg``, ``threshold``, ``absolute``, ...).

    Returns
    -------
    rows : DataFrame
        :data:`ROW_COLUMNS`. The interval columns
        (:data:`~edxtomo.thickness.intervals.INTERVAL_COLUMNS`) are NaN here; they are
        filled from replicates by :func:`~edxtomo.thickness.intervals.add_intervals`.
        ``flag`` is ``ok``, or ``;``-joined ``touches_border`` (the
        particle is cut by the volume's edge: its shell may be truncated) and
        ``element_absent``. With no particle, one row per element flagged ``no_particles``
        with NaN statistics.
    maps : dict of (int, str) to ShellMaps
        The maps behind each row, keyed by (particle, element).
    """
    elements = list(elements) if elements is not None else list(volumes)
    missing = [name for name in elements if name not in volumes]
    if missing:
        raise EdxtomoInputError(f"no volume for element(s) {missing}; have {sorted(volumes)}")
    if particles.empty:
        log.warning("no particles: the thickness table holds one flagged row per element")
        return _no_particle_rows(elements, center), {}

    regions = particle_regions(labels, margin_vox)
    boxes = ndi.find_objects(regions)
    all_maps: dict[tuple[int, str], ShellMaps] = {}
    numbers = particles["particle"].astype(int)
    for particle in tqdm(numbers, desc="shell thickness", unit="particle"):
        maps, center_vox = particle_shell_maps(
            volumes, regions, labels, particle, voxel_size_nm,
            elements=elements, center=center, box=boxes[particle - 1], **options,
        )
        all_maps.update({(particle, name): m for name, m in maps.items()})
        log.info("particle %d: centre (z, y, x) = %s vox", particle, np.round(center_vox, 2))

    rows = []
    highest = {
        name: max(all_maps[(p, name)].reference_level for p in particles["particle"])
        for name in elements
    }
    for record in particles.to_dict("records"):
        particle = int(record["particle"])
        for name in elements:
            maps = all_maps[(particle, name)]
            flags = [FLAG_TOUCHES_BORDER] if record["touches_border"] else []
            absent = not maps.reference_level > absent_fraction * highest[name]
            if absent:
                flags.append(FLAG_ELEMENT_ABSENT)
                log.warning("particle %d: element %s is absent (level %.3g, highest %.3g)",
                            particle, name, maps.reference_level, highest[name])
                stats = dict.fromkeys(THICKNESS_COLUMNS, np.nan) | {"no_shell_fraction": 1.0}
            else:
                stats = shell_statistics(maps, min_thickness_nm)
                log.info("particle %d, %s: thickness %.2f +- %.2f nm, no shell on %.1f%%",
                         particle, name, stats["thickness_mean_nm"], stats["thickness_std_nm"],
                         100 * stats["no_shell_fraction"])
            if record["touches_border"]:
                log.warning("particle %d touches the volume's border", particle)
            rows.append({
                "particle": particle,
                "element": name,
                **stats,
                "element_level": maps.reference_level,
                "threshold_level": maps.threshold_level,
                "center": center,
                "equivalent_diameter_nm": record["equivalent_diameter_nm"],
                "sphericity": record["sphericity"],
                "flag": ";".join(flags) or FLAG_OK,
            })
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS)), all_maps


def _no_particle_rows(elements: Sequence[str], center: str) -> pd.DataFrame:
    rows = [
        dict.fromkeys(ROW_COLUMNS, np.nan)
        | {"element": name, "center": center, "flag": FLAG_NO_PARTICLES}
        for name in elements
    ]
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS)).astype({"particle": "Int64"})


def stack_shell_maps(maps: Mapping[tuple[int, str], ShellMaps]) -> dict[str, np.ndarray]:
    """The maps of :func:`particle_thickness_table` as arrays, e.g. for ``numpy.savez``.

    Returns
    -------
    dict
        ``particle`` (n_particle,) int, ``element`` (n_element,) str, ``theta_deg``
        (n_theta,), ``phi_deg`` (n_phi,), and ``thickness_nm``, ``inner_radius_nm``,
        ``outer_radius_nm``, each (n_particle, n_element, n_theta, n_phi), NaN where a
        (particle, element) pair has no map. Empty maps give zero-length arrays.
    """
    particles = sorted({p for p, _ in maps})
    elements = list(dict.fromkeys(e for _, e in maps))
    first = next(iter(maps.values()), None)
    theta_deg, phi_deg = (first.theta_deg, first.phi_deg) if first else sphere_grid(1.0)
    shape = (len(particles), len(elements), theta_deg.size, phi_deg.size)
    arrays: dict[str, np.ndarray] = {
        "particle": np.asarray(particles, dtype=np.int64),
        "element": np.asarray(elements, dtype=str),
        "theta_deg": theta_deg,
        "phi_deg": phi_deg,
    }
    for name in ("thickness_nm", "inner_radius_nm", "outer_radius_nm"):
        stacked = np.full(shape, np.nan)
        for (particle, element), m in maps.items():
            stacked[particles.index(particle), elements.index(element)] = getattr(m, name)
        arrays[name] = stacked
    return arrays


def summarize_samples(
    rows: pd.DataFrame,
    by: Sequence[str] = ("sample", "method", "element"),
    include_flags: Sequence[str] = (FLAG_OK,),
) -> pd.DataFrame:
    """Per-sample summaries over particles: mean and spread of each particle statistic.

    Parameters
    ----------
    rows : DataFrame
        Concatenated :func:`particle_thickness_table` rows with the ``by`` columns added.
    by : sequence of str
        Grouping columns (those absent from ``rows`` are skipped).
    include_flags : sequence of str
        Rows whose ``flag`` is one of these enter the statistics; the others are counted in
        ``n_excluded``.

    Returns
    -------
    DataFrame
        One row per group: the ``by`` columns, ``n_particles`` (rows used), ``n_excluded``,
        ``interval_flag`` (``ok``, or ``fewer_than_2_particles`` when no interval can be
        given), then for every metric ``m`` of :data:`SUMMARY_METRICS`, ``mean_m`` (mean
        over particles), ``mean_ci95_low_m`` and ``mean_ci95_high_m`` (Student t 95%
        interval of that mean, ``n - 1`` degrees of freedom, from
        :func:`edxtomo.statistics.mean_interval`; NaN for fewer than two particles with a
        finite value) and ``sd_m`` (sample standard deviation over particles, NaN for fewer
        than two). A group with no usable particle has NaN statistics.
    """
    keys = [key for key in by if key in rows.columns]
    if not keys:
        raise ValueError(f"none of the grouping columns {list(by)} is in the table")
    used = rows["flag"].isin(list(include_flags))
    records = []
    for group, frame in rows.groupby(keys, sort=True, dropna=False):
        good = frame[used.loc[frame.index]]
        record = dict(zip(keys, group, strict=True))
        record["n_particles"] = len(good)
        record["n_excluded"] = int(frame["particle"].notna().sum()) - len(good)
        record["interval_flag"] = INTERVAL_OK if len(good) > 1 else INTERVAL_TOO_FEW
        for metric in SUMMARY_METRICS:
            values = good[metric].astype(float)
            mean, low, high = mean_interval(values.to_numpy())
            record[f"mean_{metric}"] = mean
            record[f"mean_ci95_low_{metric}"] = low
            record[f"mean_ci95_high_{metric}"] = high
            record[f"sd_{metric}"] = values.std(ddof=1) if len(good) > 1 else np.nan
        records.append(record)
    return pd.DataFrame(records)
