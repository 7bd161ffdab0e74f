"""Many particles: the analysis of a realistic field with 30+ particles, time and correctness.

A field of the ``qd_field`` preset's size (256^3 voxels of 0.25 nm) is filled with core-shell
particles drawn by the simulator (some pairs touching), placed in a wider field and cropped,
so that some particles are cut by the border. The element volumes are the simulator's truth
densities, blurred by a Gaussian of 1 voxel (a reconstruction's resolution) with Gaussian
noise added (seeded); no acquisition is simulated. ``edxtomo.analyze.analyze_volumes`` runs
on them with the demo's analyze options (its segmentation also timed alone), and on the
``qd_demo`` field (4 particles, 64^3) as the reference measured in the same run.

Checks against the truth: every particle whose centre is in the field is found once (a
touching pair gives two particles), every segmented particle belongs to a different
particle, ``touches_border`` is set exactly on the particles that cross a face (within the
blur), and their thickness rows carry the ``touches_border`` flag (they stay out of the
per-sample statistics).

    python bench/particles.py [--count 32] [--touching-pairs 4] [--seed 0] [--step-deg 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from edxtomo.analyze import analyze_volumes
from edxtomo.options import AnalyzeOptions
from edxtomo.particles import segment_particles
from edxtomo.simulate import build_specimen, load_preset, voxelize
from edxtomo.simulate.phantoms import outer_radius
from edxtomo.simulate.placement import fibonacci_sphere

ROOT = Path(__file__).resolve().parent.parent
FIELD_PRESET = ROOT / "resources/specimens/qd_field.yaml"
DEMO_PRESET = ROOT / "resources/specimens/qd_demo.yaml"
BLUR_VOX = 1.0
NOISE_FRACTION = 0.05  # noise sigma as a fraction of each element's highest density
# A particle whose surface clears every face by more than this is inside, one that passes a
# face by more than this is cut; in between either answer is accepted: the mask's edge is the
# half maximum of the blurred, noisy signal (Gaussian of 1 voxel plus the segmentation's own
# smoothing of 1 voxel), which moves it by up to about a voxel each way.
BORDER_SLACK_VOX = 1.0


def specimen(preset: Path, count: int | None, touching_pairs: int | None, pad_vox: int,
             z_spread_nm: float | None, seed: int):
    """Particles placed in a field widened by ``pad_vox`` on each side in y and x.

    Returns the particles (centres in the cropped field's voxels), the densities of the
    cropped field ``(nz, ny, nx)`` per element (atoms/nm^3) and the voxel size in nm.
    """
    spec = load_preset(preset)
    voxel_nm = float(spec["voxel_size_nm"])
    ny, nx = spec["image_shape_px"]
    nz = int(spec.get("volume_depth_px") or nx)
    wide = (nz, ny + 2 * pad_vox, nx + 2 * pad_vox)
    described = dict(spec["specimen"], margin_nm=0.0)
    for key, value in (("count", count), ("touching_pairs", touching_pairs),
                       ("z_spread_nm", z_spread_nm)):
        if value is not None:
            described[key] = value
    # tilt 0: the particles need only fit in the (wide) volume, not in every projection.
    particles = build_specimen(described, wide, voxel_nm, 0.0, np.random.default_rng(seed))
    densities = voxelize(particles, wide, voxel_nm, supersample=2)
    crop = (slice(None), slice(pad_vox, pad_vox + ny), slice(pad_vox, pad_vox + nx))
    for p in particles:
        p["center_vox"] = (np.asarray(p["center_vox"]) - [0, pad_vox, pad_vox]).tolist()
    return particles, {el: d[crop] for el, d in densities.items()}, voxel_nm


def observed(densities, seed: int):
    """The truth densities as a reconstruction would show them: blurred, with noise."""
    rng = np.random.default_rng(seed)
    volumes = {}
    for el, density in densities.items():
        blurred = ndi.gaussian_filter(density, BLUR_VOX)
        noise = rng.normal(0.0, NOISE_FRACTION * density.max(), density.shape)
        volumes[el] = (blurred + noise).astype(np.float32)
    return volumes


def border_truth(particle, shape, voxel_nm: float) -> bool | None:
    """True when the particle crosses a face, False when clearly inside, None in between.

    The particle's extent along each axis is that of its outer surface (the simulator's
    outer radius over 2,000 directions), in voxel coordinates: it reaches a face when it
    passes the centre of the first or last voxel (the half-maximum edge of the blurred mask).
    """
    directions = fibonacci_sphere()
    surface = outer_radius(particle, directions)[:, None] * directions / voxel_nm
    center = np.asarray(particle["center_vox"])
    low, high = center + surface.min(axis=0), center + surface.max(axis=0)
    clearance = min(low.min(), (np.asarray(shape) - 1 - high).min())
    if clearance < -BORDER_SLACK_VOX:
        return True
    return False if clearance > BORDER_SLACK_VOX else None


def check(particles, analysis, shape, voxel_nm: float) -> list[str]:
    """Disagreements between the analysis and the truth (empty when it is correct)."""
    problems = []
    labels, table = analysis.segmentation.labels, analysis.segmentation.table
    centers = np.array([p["center_vox"] for p in particles])
    inside = np.all((centers >= 0) & (centers <= np.asarray(shape) - 1), axis=1)
    for p, is_inside in zip(particles, inside, strict=True):
        if is_inside and labels[tuple(np.round(p["center_vox"]).astype(int))] == 0:
            problems.append(f"particle {p['id']} (centre in the field) not segmented")
    found = table[["centroid_z_nm", "centroid_y_nm", "centroid_x_nm"]].to_numpy() / voxel_nm
    owner = np.argmin(np.linalg.norm(found[:, None] - centers[None], axis=2), axis=1)
    for ids, count in zip(*np.unique(owner, return_counts=True), strict=True):
        if count > 1:
            problems.append(f"particle {particles[ids]['id']} split into {count} pieces")
    for p in particles:
        for other in p["touching"]:
            a, b = (labels[tuple(np.round(particles[k - 1]["center_vox"]).astype(int))]
                    for k in (p["id"], other))
            if inside[p["id"] - 1] and inside[other - 1] and a == b:
                problems.append(f"touching particles {p['id']} and {other} not split")
    flags = analysis.thickness.groupby("particle")["flag"].first()
    for row, k in zip(table.itertuples(), owner, strict=True):
        expected = border_truth(particles[k], shape, voxel_nm)
        if expected is not None and row.touches_border != expected:
            problems.append(f"particle {particles[k]['id']}: touches_border "
                            f"{row.touches_border}, truth {expected}")
        if row.touches_border != ("touches_border" in flags[row.particle]):
            problems.append(f"segment {row.particle}: thickness flag {flags[row.particle]!r}")
    return problems


def timed_analysis(volumes, voxel_nm: float, options: AnalyzeOptions):
    """The analysis, its wall time, and the wall time of its segmentation alone."""
    start = time.perf_counter()
    segment_particles(volumes, voxel_nm, threshold=options.threshold,
                      min_volume_nm3=options.min_volume_nm3)
    segmented = time.perf_counter()
    analysis = analyze_volumes(volumes, voxel_nm, options)
    return analysis, time.perf_counter() - segmented, segmented - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--touching-pairs", type=int, default=4)
    parser.add_argument("--z-spread-nm", type=float, default=12.0)
    parser.add_argument("--pad-vox", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-deg", type=lambda v: v if v == "auto" else float(v),
                        default="auto", help="angular step of the rays (default: auto)")
    args = parser.parse_args()
    # The demo's analyze settings (config/config.yaml), rays at --step-deg.
    options = AnalyzeOptions(center="In", step_deg=args.step_deg)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # the analyze rule runs with 1 thread
    rows = []
    for name, preset, count, pairs, spread, pad in (
        ("qd_demo (reference)", DEMO_PRESET, None, None, None, 0),
        ("qd_field, many particles", FIELD_PRESET, args.count, args.touching_pairs,
         args.z_spread_nm, args.pad_vox),
    ):
        particles, densities, voxel_nm = specimen(preset, count, pairs, pad, spread, args.seed)
        volumes = observed(densities, args.seed)
        shape = next(iter(volumes.values())).shape
        analysis, seconds, segment_seconds = timed_analysis(volumes, voxel_nm, options)
        problems = check(particles, analysis, shape, voxel_nm)
        n_found = len(analysis.segmentation.table)
        rows.append((name, shape, len(particles), n_found,
                     int(analysis.segmentation.table["touches_border"].sum()),
                     segment_seconds, seconds, seconds / max(n_found, 1), problems))
    print(f"load average {os.getloadavg()[0]:.2f}, 1 thread, rays every {args.step_deg} deg\n")
    print("| field | shape | truth particles | segmented | touching border | segmentation (s) "
          "| analysis (s) | per particle (s) | correct |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, shape, n_true, n_found, n_border, segment, seconds, per, problems in rows:
        print(f"| {name} | {'x'.join(map(str, shape))} | {n_true} | {n_found} | {n_border} "
              f"| {segment:.1f} | {seconds:.1f} | {per:.2f} | "
              f"{'yes' if not problems else 'NO'} |")
    print(f"\nper-particle ratio, field / reference: {rows[1][7] / rows[0][7]:.2f}")
    for name, *_, problems in rows:
        for problem in problems:
            print(f"{name}: {problem}")


if __name__ == "__main__":
    main()
