"""Benchmark: coverage of the count-split intervals on seeded simulated specimens.

One InP/ZnSe/ZnS dot per 40^3 field at 0.7 nm, shells of 4.3 and 3.6 voxels (thicker than
TV-KL's blur, so that the thickness is read with a bias smaller than its noise: the intervals
cover the noise only, see the README), 13 tilts over +-60 deg, ``--counts`` net counts per
element and tilt. Each seed: the full TV-KL reconstruction and ``--replicates`` delete-a-group
replicates (:func:`edxtomo.uncertainty.method_replicates`), the particles segmented and
measured with their intervals (:func:`edxtomo.analyze.analyze_volumes`), each row compared
with the simulator's true mean thickness.

Prints per element the fraction of rows whose nominal 95% interval holds the truth, the
nominal level as the reference and their ratio, the mean bias and the mean relative
half-width. Acceptance (issue 13): at least 85% over the rows of several seeds. Were the
intervals calibrated, the count of covering rows out of 30 (10 seeds, 3 elements) would be
Binomial(30, 0.95): at least 26 (85%) with probability 0.985, while intervals with a true
coverage of 70% reach it with probability 0.03 only.

Usage: ``python bench/intervals_coverage.py [--seeds 0 1 ... 9] [--replicates 5] [--counts 3000]
[--device cuda] [--method tv|sirt] [--level mean_profile|ray_maxima|profile_fit]``
(``tests/test_thickness_coverage.py`` runs :func:`specimen_rows` with ``sirt`` in the suite).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from edxtomo.analyze import analyze_volumes
from edxtomo.io import HAADF
from edxtomo.options import AnalyzeOptions, ReconstructOptions
from edxtomo.simulate.counts import count_series, phantom_volumes
from edxtomo.simulate.phantoms import true_shell_thickness
from edxtomo.thickness import solid_angle_weights, sphere_grid
from edxtomo.tomo.methods import reconstruct_series
from edxtomo.uncertainty import method_replicates

SPECIMEN = {
    "voxel_size_nm": 0.7,
    "supersample": 2,
    "specimen": {
        "kind": "quantum_dots", "count": 1, "touching_pairs": 0, "z_spread_nm": 0.0,
        "margin_nm": 2.0,
        "core": {"material": "InP", "radius_nm": [2.2, 0.1]},
        "shells": [
            {"material": "ZnSe", "thickness_nm": [3.0, 0.2], "anisotropy": 0.3,
             "missing_patches": 0},
            {"material": "ZnS", "thickness_nm": [2.5, 0.2], "anisotropy": 0.3,
             "missing_patches": 0},
        ],
    },
}
SHELL_ELEMENTS = ("Zn", "Se", "S")
FIELD_VOX = 40


def specimen_rows(seed: int, counts: float, replicates: int, device: str, method: str = "tv",
                  level: str = "mean_profile") -> list[dict]:
    """Thickness rows with intervals of one seeded specimen, beside the true mean.

    ``method``: ``tv`` (TV-KL, weight 0.3, 100 iterations) or ``sirt`` (100 iterations);
    ``level``: the ``analyze.shell_level`` reading.
    """
    rng = np.random.default_rng(seed)
    (particle,), densities = phantom_volumes(SPECIMEN, (FIELD_VOX,) * 3, 60.0, rng)
    angles = np.linspace(-60, 60, 13)
    series, _ = count_series({e: densities[e] for e in SHELL_ELEMENTS}, angles,
                             SPECIMEN["voxel_size_nm"], counts, rng)
    series.channels.pop(HAADF)
    transforms = pd.DataFrame({"angle_deg": angles, "shift_x_px": 0.0, "shift_y_px": 0.0,
                               "axis_rotation_deg": 0.0, "axis_offset_px": 0.0,
                               "correlation": 1.0, "registered": True})
    recon = ReconstructOptions(tv={"iterations": 100, "weight": 0.3}, sirt={"iterations": 100})
    options = AnalyzeOptions(step_deg=6.0, segment_on="elements", shell_level=level)
    analysis = analyze_volumes(
        reconstruct_series(series, method, recon, device=device, seed=seed),
        SPECIMEN["voxel_size_nm"], options,
        replicates=method_replicates(series, transforms, method, recon, replicates, seed=seed,
                                     device=device))
    theta, phi = sphere_grid(options.step_deg)
    weights = solid_angle_weights(theta.size, phi.size)
    rows = []
    for row in analysis.thickness.to_dict("records"):
        truth = true_shell_thickness(particle, row["element"], theta[:, None], phi[None, :])
        rows.append(row | {"seed": seed, "true_mean_nm": float((weights * truth).sum())})
    return rows


def covered(table: pd.DataFrame) -> pd.Series:
    """Whether each row's interval of the mean thickness holds the true mean."""
    return ((table["thickness_mean_nm_ci_low"] <= table["true_mean_nm"])
            & (table["true_mean_nm"] <= table["thickness_mean_nm_ci_high"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--replicates", type=int, default=5)
    parser.add_argument("--counts", type=float, default=3000.0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--method", default="tv", choices=["tv", "sirt"])
    parser.add_argument("--level", default="mean_profile",
                        choices=["mean_profile", "ray_maxima", "profile_fit"])
    args = parser.parse_args()
    start = time.perf_counter()
    table = pd.DataFrame([row for seed in args.seeds
                          for row in specimen_rows(seed, args.counts, args.replicates,
                                                   args.device, args.method, args.level)])
    seconds = time.perf_counter() - start
    table["covered"] = covered(table)
    table["bias"] = table["thickness_mean_nm"] / table["true_mean_nm"] - 1
    table["half_width"] = ((table["thickness_mean_nm_ci_high"]
                            - table["thickness_mean_nm_ci_low"]) / 2 / table["true_mean_nm"])
    print(f"{len(args.seeds)} seeds, K = {args.replicates}, {args.counts:.0f} counts per "
          f"element and tilt, {args.method}, {args.level}; {seconds:.0f} s, load "
          f"{os.getloadavg()[0]:.1f}")
    header = (f"{'element':>7} {'rows':>5} {'coverage':>9} {'nominal':>8} {'ratio':>6} "
              f"{'bias':>7} {'half-width':>11}")
    print(header)
    print("-" * len(header))
    groups = [*table.groupby("element"), ("all", table)]
    for element, part in groups:
        coverage = part["covered"].mean()
        print(f"{element:>7} {len(part):>5} {coverage:>9.2f} {0.95:>8.2f} "
              f"{coverage / 0.95:>6.2f} {100 * part['bias'].mean():>+6.1f}% "
              f"{100 * part['half_width'].mean():>10.1f}%")


if __name__ == "__main__":
    main()
