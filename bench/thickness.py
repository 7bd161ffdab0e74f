"""Benchmark: shell-thickness ray casting per particle and element.

Prints, for particle crops of several sizes, the time of
:func:`edxtomo.thickness.shell_thickness` on the 1-degree grid (181 x 360 rays), the time
of a reference that casts the same rays one at a time with ``scipy.ndimage.map_coordinates``
(the straightforward loop, which counts samples above the threshold without sub-sample
crossings; timed on a subset of rays and scaled to the full grid), their
ratio, and the map's mean absolute error against the analytic thickness of the phantom.

Usage: ``python bench/thickness.py [--sizes 32 48 64] [--reference-rays 2000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

from edxtomo.thickness import ray_directions, shell_thickness, solid_angle_weights, sphere_grid

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64])
    parser.add_argument("--reference-rays", type=int, default=2000)
    args = parser.parse_args()

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
