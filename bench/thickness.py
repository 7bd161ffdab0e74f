"""Benchmark: shell-thickness ray casting per particle and element.

Prints, for particle crops of several sizes, the time of
:func:`edxtomo.thickness.shell_thickness` on the 1-degree grid (181 x 360 rays), the time
of a reference that casts the same rays one at a time with ``scipy.ndimage.map_coordinates``
(the straightforward loop, which counts samples above the threshold without sub-sample
crossings; timed on a subset of rays and scaled to the full grid), their
ratio, and the map's mean absolute error against the analytic thickness of the phantom.

Usage: ``python bench/thickness.py [--sizes 32 48 64] [--reference-rays 2000]``

With ``--specimens``, the accuracy on reconstructions instead: seeded ``qd_demo`` specimens
(:func:`edxtomo.simulate.counts.phantom_volumes`, :func:`~edxtomo.simulate.counts.count_series`)
at each tilt count and dose, reconstructed by ``sirt`` (100 iterations), ``tv`` (TV-KL,
weight 0.3, 300 iterations) and ``deep`` (``--budget fast`` on a CPU, ``full`` for the GPU
figures), each true particle measured from its true centre inside its Voronoi cell. Per
method, tilts, dose and element it prints the bias of the mean thickness and the error of
the CV against the simulator's analytic truth for each reading of ``shell_thickness``: the
blurred-shell fit per ray (``profile_fit``), and, as the references measured in the same
run, the half maximum of the mean-profile level, of the 90th percentile of the ray maxima
and of the aligned mean profile (``aligned_profile``); and the ratio of the smaller of the
first two biases to the fit's. ``--volumes DIR`` keeps
the reconstructions there and reuses them. For the GPU run::

    python bench/thickness.py --specimens --methods tv deep --budget full --device cuda \
        --size 96 --seeds 0 1 --tilts 13 7 --counts 800 3000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import ndimage as ndi

from edxtomo.thickness import (
    ray_directions,
    shared_blur_vox,
    shell_thickness,
    solid_angle_weights,
    sphere_grid,
)
from edxtomo.thickness.rays import REFERENCES

PRESET = Path(__file__).resolve().parents[1] / "resources" / "specimens" / "qd_demo.yaml"
SHELL_ELEMENTS = ("Zn", "Se", "S")

SUPERSAMPLE = 3


def shell_phantom(size: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Partial-volume spherical shell filling a cube of ``size`` voxels; (volume, centre,
    inner radius, thickness) in voxels."""
    center = np.full(3, (size - 1) / 2) + [0.3, -0.2, 0.1]
    outer = 0.4 * size
    inner, thickness = 0.6 * outer, 0.4 * outer
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    grid = np.arange(size, dtype=float)
    volume = np.zeros((size,) * 3)
    for dz in offsets:
        for dy in offsets:
            for dx in offsets:
                z, y, x = np.meshgrid(grid + dz - center[0], grid + dy - center[1],
                                      grid + dx - center[2], indexing="ij", sparse=True)
                r = np.sqrt(z**2 + y**2 + x**2)
                volume += (r >= inner) & (r < inner + thickness)
    return (volume / SUPERSAMPLE**3).astype(np.float32), center, inner, thickness


def reference_per_ray(volume, center, directions, radii, level) -> np.ndarray:
    """Thickness (voxels) ray by ray: one map_coordinates call and a run search per ray."""
    step = radii[1] - radii[0]
    thickness = np.empty(len(directions))
    for i, d in enumerate(directions):
        profile = ndi.map_coordinates(volume, center[:, None] + d[:, None] * radii, order=1)
        above = profile > level
        thickness[i] = above.sum() * step
    return thickness


def reconstruct(series, method: str, budget: str, seed: int, device: str) -> dict:
    """Volumes of an (aligned, drift-free) series by ``sirt``, ``tv`` or ``deep`` (no
    self-check)."""
    from edxtomo.options import DeepOptions, ReconstructOptions

    if method in ("sirt", "tv"):
        from edxtomo.tomo.methods import reconstruct_series

        options = ReconstructOptions(sirt={"iterations": 100},
                                     tv={"weight": 0.3, "iterations": 300})
        return reconstruct_series(series, method, options, device=device)
    from edxtomo.deep import run_deep

    identity = pd.DataFrame({"angle_deg": series.angles_deg, "shift_x_px": 0.0,
                             "shift_y_px": 0.0, "axis_rotation_deg": 0.0, "axis_offset_px": 0.0,
                             "correlation": 1.0, "registered": True})
    options = DeepOptions(budget=budget, selfcheck=False)
    return run_deep(series, series, identity, options, seed=seed, device=device,
                    progress=False).result.volumes


def particle_errors(volumes: dict, particles: list, voxel_nm: float, step_deg: float) -> list:
    """Bias of the mean and error of the CV per particle, element and level."""
    from edxtomo.simulate.phantoms import bounding_radius, true_shell_thickness

    shape = next(iter(volumes.values())).shape
    grid = np.indices(shape).reshape(3, -1).T
    centers = np.array([p["center_vox"] for p in particles])
    distance = np.linalg.norm(grid[:, None, :] - centers[None], axis=2)
    owner = distance.argmin(axis=1).reshape(shape)
    theta, phi = sphere_grid(step_deg)
    weights = solid_angle_weights(theta.size, phi.size)

    def mean_cv(t):
        mean = (weights * t).sum()
        return mean, np.sqrt((weights * (t - mean) ** 2).sum()) / mean

    rows = []
    blur = []  # one blur per particle, as particle_shell_maps fits it
    for i, particle in enumerate(particles):
        cell = (owner == i) & (distance[:, i].reshape(shape) <= bounding_radius(particle)
                               / voxel_nm + 3)
        blur.append(shared_blur_vox(
            {e: np.where(cell, volumes[e], 0.0) for e in SHELL_ELEMENTS},
            particle["center_vox"], voxel_nm, {"step_deg": step_deg}))
        for element in SHELL_ELEMENTS:
            true_mean, true_cv = mean_cv(true_shell_thickness(
                particle, element, theta[:, None], phi[None, :]))
            crop = np.where(cell, volumes[element], 0.0)
            for level in REFERENCES:
                maps = shell_thickness(crop, particle["center_vox"], voxel_nm, step_deg,
                                       reference=level, blur_vox=blur[i])
                mean, cv = mean_cv(maps.thickness_nm)
                rows.append({"element": element, "level": level, "true_nm": true_mean,
                             "bias": mean / true_mean - 1, "cv_error": cv - true_cv})
    return rows


def specimens(args) -> None:
    """The ``--specimens`` table: thickness bias against dose and tilt count."""
    from edxtomo.simulate.counts import count_series, phantom_volumes

    spec = yaml.safe_load(PRESET.read_text())
    voxel_nm = float(spec["voxel_size_nm"])
    rows = []
    for n_tilts in args.tilts:
        angles = np.linspace(-60, 60, n_tilts)
        for counts in args.counts:
            for seed in args.seeds:
                rng = np.random.default_rng(seed)
                particles, densities = phantom_volumes(spec, (args.size,) * 3, 60.0, rng)
                series, _ = count_series(densities, angles, voxel_nm, counts, rng)
                for method in args.methods:
                    start = time.perf_counter()
                    cache = (args.volumes / f"{method}_{args.budget}_{args.size}_{n_tilts}t_"
                             f"{counts:.0f}c_seed{seed}.npz") if args.volumes else None
                    if cache is not None and cache.exists():
                        volumes = dict(np.load(cache))
                    else:
                        volumes = reconstruct(series, method, args.budget, seed, args.device)
                        if cache is not None:
                            np.savez(cache, **{e: volumes[e] for e in SHELL_ELEMENTS})
                    seconds = time.perf_counter() - start
                    for row in particle_errors(volumes, particles, voxel_nm, args.step):
                        rows.append({"method": method, "tilts": n_tilts, "counts": counts,
                                     "seed": seed, "seconds": seconds, **row})
    print(f"{args.size}^3 at {voxel_nm} nm, seeds {args.seeds}, deep budget {args.budget}; "
          "bias of the mean thickness (%) and CV error (absolute), mean over particles")
    print_bias_table(rows)


def print_bias_table(rows: list) -> None:
    """One line per method, tilts, dose and element: the three readings side by side."""
    table = pd.DataFrame(rows).groupby(["method", "tilts", "counts", "element", "level"])
    summary = table.agg(true_nm=("true_nm", "mean"), bias=("bias", "mean"),
                        cv_error=("cv_error", "mean"), n=("bias", "size")).unstack("level")
    names = {"profile_fit": "fit", "mean_profile": "mean", "ray_maxima": "max",
             "aligned_profile": "aln"}
    header = (f"{'method':>6} {'tilts':>5} {'counts':>6} {'el':>3} {'true nm':>8} "
              + " ".join(f"{'bias ' + names[r]:>9}" for r in REFERENCES)
              + f" {'ref/fit':>7} " + " ".join(f"{'dCV ' + names[r]:>8}" for r in REFERENCES)
              + f" {'n':>3}")
    print(header)
    print("-" * len(header))
    for (method, tilts, counts, element), r in summary.iterrows():
        bias = {level: r[("bias", level)] for level in REFERENCES}
        best_reference = min(abs(bias["mean_profile"]), abs(bias["ray_maxima"]))
        print(f"{method:>6} {tilts:>5} {counts:>6.0f} {element:>3} "
              f"{r[('true_nm', 'profile_fit')]:>8.2f} "
              + " ".join(f"{100 * bias[level]:>+8.1f}%" for level in REFERENCES)
              + f" {best_reference / max(abs(bias['profile_fit']), 1e-9):>7.1f} "
              + " ".join(f"{r[('cv_error', level)]:>+8.3f}" for level in REFERENCES)
              + f" {int(r[('n', 'profile_fit')]):>3}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64])
    parser.add_argument("--reference-rays", type=int, default=2000)
    parser.add_argument("--specimens", action="store_true",
                        help="accuracy on reconstructed simulated specimens instead of speed")
    parser.add_argument("--methods", nargs="+", default=["sirt", "tv", "deep"],
                        choices=["sirt", "tv", "deep"])
    parser.add_argument("--budget", default="fast", choices=["fast", "full"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tilts", type=int, nargs="+", default=[13])
    parser.add_argument("--counts", type=float, nargs="+", default=[800.0])
    parser.add_argument("--step", type=float, default=3.0, help="ray grid step (deg)")
    parser.add_argument("--volumes", type=Path, default=None,
                        help="folder that keeps the reconstructions and reuses them")
    args = parser.parse_args()
    if args.specimens:
        specimens(args)
        return

    theta_deg, phi_deg = sphere_grid(1.0)
    directions = ray_directions(theta_deg, phi_deg).reshape(-1, 3)
    n_rays = len(directions)
    subset = np.random.default_rng(0).choice(n_rays, args.reference_rays, replace=False)
    print(f"rays per particle and element: {n_rays} (1-degree grid), radial step 0.2 voxel")
    header = (f"{'crop':>6} {'edxtomo (s)':>12} {'per-ray loop (s)':>17} {'ratio':>7} "
              f"{'MAE (voxel)':>12}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        volume, center, inner, thickness = shell_phantom(size)
        max_radius = inner + thickness + 2.0  # the same rays for both
        start = time.perf_counter()
        maps = shell_thickness(volume, center, 1.0, max_radius_vox=max_radius)
        fast = time.perf_counter() - start
        error = (solid_angle_weights(*maps.thickness_nm.shape)
                 * np.abs(maps.thickness_nm - thickness)).sum()
        radii = np.arange(0.0, max_radius + 0.2, 0.2)
        start = time.perf_counter()
        reference_per_ray(volume, center, directions[subset], radii, maps.threshold_level)
        slow = (time.perf_counter() - start) * n_rays / len(subset)
        print(f"{size:>4}^3 {fast:>12.2f} {slow:>17.2f} {slow / fast:>7.1f} {error:>12.3f}")


if __name__ == "__main__":
    main()
