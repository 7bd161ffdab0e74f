"""Robustness of ``fused`` (issue 14): a gold marker the X-ray maps miss, a saturating HAADF.

The seeded qd_demo dots of ``tests/test_fused.py`` (its ``specimen``: 7 tilts over +-60 deg,
``--counts`` net counts per element and tilt plus 30% background, a HAADF of 2000 electrons
at the brightest pixel drawn with gamma 1.7). Per seed, three HAADFs over the same counts:

* ``linear`` -- the dots alone;
* ``marker`` -- plus a 3 nm carbon film and a 2.5 nm Au marker beside the dots;
* ``saturated`` -- the linear HAADF saturating towards ``--saturation`` times its peak.

Rows (fused: HAADF weight 1, TV weight 0.3; TV-KL the same weight, never sees the HAADF):

* ``element mass in the marker (%)`` -- fused on ``marker`` against TV-KL (the reference);
* ``saturated / linear element mass`` -- per element, in the particles, fused on
  ``saturated`` over fused on ``linear`` (the reference, 1);
* ``PSNR (dB)`` -- per element, fused on ``linear`` against TV-KL;
* ``seconds`` -- one fused reconstruction against one TV-KL.

Usage::

    python bench/fused_robustness.py --size 48 --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_fused import ELEMENTS, PRESET, Z, marker_site, specimen  # noqa: E402

from edxtomo.metrics import particle_region, psnr  # noqa: E402
from edxtomo.tomo.fused import fused_reconstruct  # noqa: E402
from edxtomo.tomo.tv import tv_kl  # noqa: E402


def timed(function, *args, **kwargs):
    """``function(*args, **kwargs)`` and its wall time in seconds."""
    start = time.perf_counter()
    return function(*args, **kwargs), time.perf_counter() - start


def fused(data, iterations):
    return timed(fused_reconstruct, data["counts"], data["background"], data["haadf"],
                 data["angles"], Z, data["sensitivity"], [0.3] * len(Z), haadf_weight=1.0,
                 iterations=iterations, device="cpu", progress=False)


def seed_rows(size, seed, counts, saturation, iterations):
    """The table's rows for one seed."""
    linear = specimen(size, 7, counts, seed)
    voxel = yaml.safe_load(PRESET.read_text())["voxel_size_nm"]
    support = {"film_thickness_nm": 3.0, "film_z_nm": -12.0,
               "markers": [{"center_nm": marker_site(linear["truth"], voxel, 2.5),
                            "radius_nm": 2.5}]}
    marked = specimen(size, 7, counts, seed, support=support)
    saturated = specimen(size, 7, counts, seed, saturation=saturation)
    tv, tv_s = timed(tv_kl, linear["counts"], linear["angles"], weight=0.3,
                     iterations=iterations, background=linear["background"], device="cpu",
                     progress=False)
    (fused_linear, fused_s), (fused_marked, _), (fused_saturated, _) = (
        fused(data, iterations) for data in (linear, marked, saturated))
    marker = marked["support"]["Au"] > 0
    inside = linear["truth"].sum(axis=0) > 0
    region = particle_region(linear["truth"])
    rows = [{"seed": seed, "row": "element mass in the marker (%)",
             "figure": 100 * fused_marked.volumes[:, marker].sum() / fused_marked.volumes.sum(),
             "reference": 100 * tv[:, marker].sum() / tv.sum()},
            {"seed": seed, "row": "seconds, fused / TV-KL", "figure": fused_s,
             "reference": tv_s}]
    mass = (fused_saturated.volumes[:, inside].sum(axis=1)
            / fused_linear.volumes[:, inside].sum(axis=1))
    for i, element in enumerate(ELEMENTS):
        rows.append({"seed": seed, "row": f"saturated / linear mass, {element}",
                     "figure": mass[i], "reference": 1.0})
        rows.append({"seed": seed, "row": f"PSNR {element} (dB), fused / TV-KL",
                     "figure": psnr(fused_linear.volumes[i], linear["truth"][i], region),
                     "reference": psnr(tv[i], linear["truth"][i], region)})
    print(f"seed {seed}: saturation level fitted {fused_saturated.model.saturation_level:.4g} "
          f"(true {saturation * 2000:g} before the offset), linear HAADF "
          f"{fused_linear.model.saturation_level:.4g}; residual share with the marker "
          f"{fused_marked.residual_share:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="volume edge in voxels")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--counts", type=float, default=1000.0,
                        help="net counts per element and tilt")
    parser.add_argument("--saturation", type=float, default=1.5,
                        help="HAADF saturation level over its linear peak")
    parser.add_argument("--iterations", type=int, default=100, help="PDHG iterations")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [row for seed in args.seeds
            for row in seed_rows(args.size, seed, args.counts, args.saturation,
                                 args.iterations)]
    table = pd.DataFrame(rows)
    table["ratio"] = table["figure"] / table["reference"]
    print(f"{args.size}^3, 7 tilts, {args.counts:g} counts, saturation {args.saturation:g}, "
          f"{args.iterations} iterations, {torch.get_num_threads()} thread(s)")
    print(table.to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
