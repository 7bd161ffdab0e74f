"""Planning an acquisition: the precision of the shell thickness against dose and tilts.

A grid point is a dose (mean net X-ray counts per element and tilt) and a tilt scheme. At
each point :func:`measure_point` simulates the preset's specimen (one specimen for the whole
grid, :func:`edxtomo.simulate.counts.phantom_volumes`), draws ``repeats`` independent noisy
series (:func:`edxtomo.simulate.counts.count_series`), reconstructs each with the plan's
method, measures it as the ``analyze`` rule does (:func:`edxtomo.analyze.analyze_specimen`)
and compares every particle's mean shell thickness with the truth.

:func:`summarize_plan` turns the rows into the error per element: the bias (mean of
measured - true) and the precision (the spread of one particle's measurement over the noise
draws, pooled over particles) with the 95% interval it implies. :func:`fit_dose` fits the
counting-statistics law ``sd = c / sqrt(dose)`` per tilt scheme and element and gives the
least dose that reaches a target; :func:`recommendations` says it in one line per element.

What the plan covers: Poisson noise of the counts, the reconstruction and the measurement.
It does not cover alignment errors (the simulated series are aligned), detector artefacts,
or a specimen unlike the preset.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import TiltSeries, write_volume
from edxtomo.options import AnalyzeOptions, ReconstructOptions
from edxtomo.options.plan import PlanOptions, TiltScheme
from edxtomo.simulate import true_shell_thickness
from edxtomo.simulate.counts import count_series, phantom_volumes
from edxtomo.statistics import CONFIDENCE
from edxtomo.thickness import FLAG_OK, ray_step_deg, solid_angle_weights, sphere_grid

log = logging.getLogger(__name__)

Z95 = float(norm.ppf(0.5 + CONFIDENCE / 2))
"""Two-sided 95% quantile of the normal law (1.96): a 95% interval is +- Z95 sd."""
FLAG_NOT_FOUND = "not_found"
"""A true particle that no segmented particle matches (missed, or merged with a neighbour)."""
POINT_COLUMNS = ("counts_per_tilt", "scheme", "n_tilts", "tilt_first_deg", "tilt_last_deg",
                 "repeat", "particle", "element", "true_mean_nm", "measured_mean_nm",
                 "error_nm", "flag")
GRID_KEYS = ["scheme", "n_tilts", "tilt_first_deg", "tilt_last_deg", "counts_per_tilt",
             "element"]
PLAN_COLUMNS = (*GRID_KEYS, "true_mean_nm", "bias_nm", "sd_nm", "interval_width_nm",
                "rmse_nm", "n_particles", "n_measured", "n_rows")


def scheme_angles(scheme: TiltScheme) -> np.ndarray:
    """The ``n_tilts`` angles of a scheme in degrees, evenly spaced over its range inclusive."""
    return np.linspace(*scheme.tilt_range_deg, scheme.n_tilts)


def volume_shape(spec: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(nz, ny, nx)`` of a preset's volume: ``volume_depth_px`` (default nx) and the scan."""
    ny, nx = (int(n) for n in spec["image_shape_px"])
    return int(spec.get("volume_depth_px") or nx), ny, nx


def true_mean_thickness(particle: Mapping[str, Any], element: str, step_deg: float) -> float:
    """Solid-angle mean of a particle's true shell thickness (nm) on the rays' grid.

    The same directions and weights as the measurement (:func:`edxtomo.thickness.
    shell_statistics`), so the two means differ by the measurement's error alone.
    """
    theta, phi = sphere_grid(step_deg)
    thickness = true_shell_thickness(particle, element, theta[:, None], phi[None, :])
    return float((solid_angle_weights(theta.size, phi.size) * thickness).sum())


def _identity_transforms(angles_deg: np.ndarray) -> pd.DataFrame:
    """The transform table of an already aligned series (:mod:`edxtomo.align.apply`)."""
    zeros = np.zeros(len(angles_deg))
    return pd.DataFrame({"angle_deg": angles_deg, "shift_x_px": zeros, "shift_y_px": zeros,
                         "axis_rotation_deg": zeros, "axis_offset_px": zeros,
                         "correlation": 1.0, "registered": True})


def reconstruct_volumes(series: TiltSeries, method: str, options: ReconstructOptions,
                        seed: int, device: str) -> dict[str, np.ndarray]:
    """Volumes ``(nz, ny, nx)`` of every channel of an aligned series, as the workflow's
    ``reconstruct`` rules make them (``deep`` without its self-check); ``seed`` seeds the
    count splits of ``weight: auto`` and the deep training."""
    if method != "deep":
        from edxtomo.tomo.methods import reconstruct_series

        return reconstruct_series(series, method, options, device=device, seed=seed)
    from edxtomo.deep import run_deep

    deep = options.deep.model_copy(update={"selfcheck": False})
    run = run_deep(series, series, _identity_transforms(series.angles_deg), deep,
                   nz=options.nz, seed=seed, device=device, progress=False)
    return run.result.volumes


def measure_volumes(volumes: Mapping[str, np.ndarray], voxel_size_nm: float,
                    options: AnalyzeOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``analyze`` rule's measurement of a set of volumes: (particles, thickness rows).

    The volumes pass through files, as between the ``reconstruct`` and ``analyze`` rules.
    """
    from edxtomo.analyze import analyze_specimen  # imports torch: not for the table jobs

    with tempfile.TemporaryDirectory(prefix="edxtomo-plan-") as folder:
        for name, volume in volumes.items():
            write_volume(Path(folder) / f"{name}.tif", volume, voxel_size_nm, name)
        analysis = analyze_specimen(folder, options)
    return analysis.segmentation.table, analysis.thickness


def match_particles(particles: Sequence[Mapping[str, Any]], table: pd.DataFrame,
                    voxel_size_nm: float) -> dict[int, int]:
    """The segmented particle of each true particle: ``{true id: label}``.

    A true particle takes the segmented particle whose centroid is nearest its centre, when
    closer than half its mean outer radius (a pair merged into one label has its centroid
    about one radius from either centre); a label claimed twice goes to the nearer one.

    Parameters
    ----------
    particles : sequence of dict
        True core-shell particles, with ``center_vox`` (voxel indices (z, y, x)).
    table : DataFrame
        The segmentation's particle table (centroids in nm from voxel 0).
    voxel_size_nm : float
    """
    if table.empty:
        return {}
    centroids = table[["centroid_z_nm", "centroid_y_nm", "centroid_x_nm"]].to_numpy()
    best: dict[int, tuple[float, int]] = {}
    for particle in particles:
        center_nm = np.asarray(particle["center_vox"], dtype=float) * voxel_size_nm
        distance = np.linalg.norm(centroids - center_nm, axis=1)
        k = int(np.argmin(distance))
        radius_nm = sum(float(layer["thickness"]["mean_nm"]) for layer in particle["layers"])
        label = int(table["particle"].iloc[k])
        if distance[k] < radius_nm / 2 and (label not in best or distance[k] < best[label][0]):
            best[label] = (float(distance[k]), int(particle["id"]))
    return {pid: label for label, (_, pid) in best.items()}


def measure_point(
    spec: Mapping[str, Any],
    scheme: TiltScheme,
    counts_per_tilt: float,
    options: PlanOptions,
    reconstruct: ReconstructOptions,
    analyze: AnalyzeOptions,
    *,
    tilt_max_deg: float,
    seed: int,
    device: str = "auto",
) -> pd.DataFrame:
    """Simulate, reconstruct and measure one grid point ``options.repeats`` times.

    Parameters
    ----------
    spec : mapping
        The parsed specimen preset; its own tilts and dose are not used.
    scheme : TiltScheme
    counts_per_tilt : float
        Mean net counts per element and tilt.
    options : PlanOptions
        Its ``repeats``, ``method`` and ``background_fraction`` are read.
    reconstruct : ReconstructOptions
        The settings of ``options.method``.
    analyze : AnalyzeOptions
        The measurement (segmentation and rays).
    tilt_max_deg : float
        Largest tilt of the whole grid (deg): the specimen, placed to stay in the field up
        to it, is then the same at every grid point.
    seed : int
        The specimen is drawn from ``SeedSequence(seed, spawn_key=(0,))``, the counts of
        repeat ``r`` from ``spawn_key=(1, r)``: the same draws at every grid point.
    device : {"auto", "cpu", "cuda"}

    Returns
    -------
    DataFrame
        :data:`POINT_COLUMNS`, one row per repeat, true particle and element; ``flag`` is
        the thickness table's (``ok``, ...) or :data:`FLAG_NOT_FOUND`.
    """
    voxel = float(spec["voxel_size_nm"])
    specimen_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    particles, densities = phantom_volumes(spec, volume_shape(spec), tilt_max_deg, specimen_rng)
    particles = [p for p in particles if p["kind"] == "core_shell"]
    if not particles:
        kind = spec["specimen"].get("kind")
        raise EdxtomoInputError("plan.preset: the plan measures the shells of core-shell "
                                f"particles (quantum_dots); this specimen is {kind!r}")
    # with `auto`, the truth on the finest grid `auto` may choose (a continuum mean to within
    # a fraction of a percent); the measurement's own grid is coarser only on small particles
    truth_step_deg = ray_step_deg(analyze.step_deg, radius_vox=np.inf)
    truth = {(p["id"], e): true_mean_thickness(p, e, truth_step_deg)
             for p in particles for e in densities}
    angles = scheme_angles(scheme)
    lo, hi = scheme.tilt_range_deg
    rows = []
    for repeat in range(options.repeats):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, repeat)))
        series, _ = count_series(densities, angles, voxel, counts_per_tilt, rng,
                                 options.background_fraction)
        volumes = reconstruct_volumes(series, options.method, reconstruct, seed, device)
        table, thickness = measure_volumes(volumes, voxel, analyze)
        labels = match_particles(particles, table, voxel)
        measured = thickness.set_index(["particle", "element"])
        for (pid, element), true_nm in truth.items():
            key = (labels.get(pid), element)
            found = key in measured.index
            value = float(measured.loc[key, "thickness_mean_nm"]) if found else np.nan
            rows.append({
                "counts_per_tilt": counts_per_tilt, "scheme": scheme.label,
                "n_tilts": scheme.n_tilts, "tilt_first_deg": lo, "tilt_last_deg": hi,
                "repeat": repeat, "particle": pid, "element": element,
                "true_mean_nm": true_nm, "measured_mean_nm": value,
                "error_nm": value - true_nm,
                "flag": measured.loc[key, "flag"] if found else FLAG_NOT_FOUND,
            })
        log.info("%s, %g counts, repeat %d: %d of %d particles found", scheme.label,
                 counts_per_tilt, repeat, len(labels), len(particles))
    return pd.DataFrame(rows, columns=list(POINT_COLUMNS))


def summarize_plan(points: pd.DataFrame) -> pd.DataFrame:
    """The error of the mean shell thickness per grid point and element.

    Only rows flagged ``ok`` count. ``bias_nm`` is the mean of measured - true over
    particles and repeats. ``sd_nm`` is the spread of one particle's measurement over the
    noise draws: the standard deviation over repeats, pooled over particles
    (``sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1))``), so that the particles' different true
    thicknesses do not enter it. ``interval_width_nm`` is the width of the 95% interval
    that this noise gives one particle, ``2 * 1.96 * sd_nm``; ``rmse_nm`` is
    ``sqrt(bias^2 + sd^2)``.

    Parameters
    ----------
    points : DataFrame
        Rows of :func:`measure_point` for any number of grid points.

    Returns
    -------
    DataFrame
        :data:`PLAN_COLUMNS`, one row per grid point and element.
    """
    ok = points[points["flag"] == FLAG_OK]
    per_particle = ok.groupby([*GRID_KEYS, "particle"])["error_nm"].agg(["var", "count"])
    dof = (per_particle["count"] - 1).clip(lower=0)
    pooled = (per_particle["var"].fillna(0) * dof).groupby(GRID_KEYS).sum()
    sd = np.sqrt(pooled / dof.groupby(GRID_KEYS).sum().replace(0, np.nan))
    groups = points.groupby(GRID_KEYS)
    table = pd.DataFrame({
        "true_mean_nm": groups["true_mean_nm"].mean(),
        "bias_nm": ok.groupby(GRID_KEYS)["error_nm"].mean(),
        "sd_nm": sd,
        "n_particles": ok.groupby(GRID_KEYS)["particle"].nunique(),
        "n_measured": ok.groupby(GRID_KEYS).size(),
        "n_rows": groups.size(),
    })
    table["interval_width_nm"] = 2 * Z95 * table["sd_nm"]
    table["rmse_nm"] = np.hypot(table["bias_nm"], table["sd_nm"])
    table["n_particles"] = table["n_particles"].fillna(0).astype(int)
    table["n_measured"] = table["n_measured"].fillna(0).astype(int)
    return table.reset_index()[list(PLAN_COLUMNS)]


FIT_COLUMNS = ("scheme", "n_tilts", "tilt_first_deg", "tilt_last_deg", "element",
               "coefficient_nm", "exponent", "counting_limited", "target_nm", "counts_needed",
               "within_grid", "least_counts_measured", "bias_at_max_counts_nm")
COUNTING_EXPONENTS = (-0.75, -0.25)
"""Free exponents of sd against counts taken as the counting law's -1/2: the spread at
least halves, and at most quarters, over a fourfold dose (wider than the scatter of a slope
fitted over a decade of doses from a few repeats)."""


def fit_dose(plan: pd.DataFrame, target_nm: float) -> pd.DataFrame:
    """The least dose that reaches a target precision, per tilt scheme and element.

    Counting statistics make the spread of a measurement fall as the inverse square root of
    the counts: ``sd = c * counts^-1/2``. ``c`` is fitted by least squares on ``log sd`` with
    that slope fixed (``log c = mean(log sd + log(counts) / 2)``); ``exponent`` is the free
    slope of ``log sd`` on ``log counts`` (two doses or more), which shows how well the law
    holds: ``counting_limited`` is false where it lies outside :data:`COUNTING_EXPONENTS`
    (the measurement, not the counting noise, sets the spread; one dose cannot tell, and
    counts as true). The dose whose 95% half-width ``1.96 sd`` equals ``target_nm`` is
    ``counts_needed = (1.96 c / target_nm)^2``; ``within_grid`` says whether it lies inside
    the doses measured (outside, it is an extrapolation). ``least_counts_measured`` is the
    least dose of the grid whose measured half-width meets the target (NaN: none), the
    answer where the law does not hold.

    Parameters
    ----------
    plan : DataFrame
        From :func:`summarize_plan`.
    target_nm : float
        Wanted half-width of the 95% interval (nm).

    Returns
    -------
    DataFrame
        :data:`FIT_COLUMNS`, one row per tilt scheme and element (NaN where no dose has a
        spread).
    """
    keys = [k for k in GRID_KEYS if k != "counts_per_tilt"]
    rows = []
    for values, part in plan.groupby(keys, sort=False):
        valid = part[np.isfinite(part["sd_nm"]) & (part["sd_nm"] > 0)]
        log_n, log_sd = np.log(valid["counts_per_tilt"]), np.log(valid["sd_nm"])
        coefficient = float(np.exp(np.mean(log_sd + log_n / 2))) if len(valid) else np.nan
        exponent = float(np.polyfit(log_n, log_sd, 1)[0]) if log_n.nunique() > 1 else np.nan
        needed = (Z95 * coefficient / target_nm) ** 2
        top = part.loc[part["counts_per_tilt"].idxmax()]
        meeting = part.loc[Z95 * part["sd_nm"] <= target_nm, "counts_per_tilt"]
        rows.append({
            **dict(zip(keys, values, strict=True)), "coefficient_nm": coefficient,
            "exponent": exponent,
            "counting_limited": bool(np.isnan(exponent) or COUNTING_EXPONENTS[0] <= exponent
                                     <= COUNTING_EXPONENTS[1]),
            "target_nm": target_nm, "counts_needed": needed,
            "within_grid": bool(part["counts_per_tilt"].min() <= needed
                                <= part["counts_per_tilt"].max()),
            "least_counts_measured": float(meeting.min()) if len(meeting) else np.nan,
            "bias_at_max_counts_nm": float(top["bias_nm"]),
        })
    return pd.DataFrame(rows, columns=list(FIT_COLUMNS))


def _about(counts: float) -> str:
    """A dose rounded to two significant figures, with thousands separators."""
    if not np.isfinite(counts):
        return "an unknown number of"
    return f"{float(f'{counts:.2g}'):,.0f}"


def _clause(row) -> str:
    """What one tilt scheme needs, or why no dose will do."""
    where = f"at {row.n_tilts} tilts ({row.tilt_first_deg:g} to {row.tilt_last_deg:g} deg)"
    if not row.counting_limited:
        law = f"its spread does not fall as 1/sqrt(counts) (exponent {row.exponent:+.2f})"
        if np.isnan(row.least_counts_measured):
            return f"is not reached by any dose simulated {where}, and {law}"
        return (f"is reached from {_about(row.least_counts_measured)} counts per element per "
                f"tilt {where} as simulated, but {law}")
    note = "" if row.within_grid else " (extrapolated beyond the doses simulated)"
    return f"needs about {_about(row.counts_needed)} counts per element per tilt {where}{note}"


def recommendations(fit: pd.DataFrame) -> list[str]:
    """One sentence per element: the counts per tilt that reach the target, per tilt scheme.

    Parameters
    ----------
    fit : DataFrame
        From :func:`fit_dose`.

    Returns
    -------
    list of str
        For example "±0.2 nm (95% interval) on the S shell needs about 1,900 counts per
        element per tilt at 13 tilts (-60 to 60 deg)"; a scheme whose spread does not follow
        the counting law says so instead, and a bias larger than the target is named.
    """
    lines = []
    for element, part in fit.groupby("element", sort=False):
        target = float(part["target_nm"].iloc[0])
        line = (f"±{target:g} nm (95% interval) on the {element} shell "
                + "; ".join(_clause(row) for row in part.itertuples()))
        biased = part[part["bias_at_max_counts_nm"].abs() > target]
        if not biased.empty:
            worst = biased.loc[biased["bias_at_max_counts_nm"].abs().idxmax()]
            line += (f"; but its bias at the highest dose, {worst['bias_at_max_counts_nm']:+.2f}"
                     " nm, exceeds the target and more counts do not remove it")
        lines.append(line)
    return lines
