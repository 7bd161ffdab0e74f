"""Can held-out counts tell whether deep's steps c and d helped?

Steps c (view enrichment) and d (the final reconstruction) trade the shells against the
core at the full budget (``bench/README.md``). The self-check already splits the counts
into halves A and B and runs steps a-d on A. This bench asks whether the Poisson deviance on
half B, which the self-check computes for the final volume, also ranks step b's volume
against the final one the way the truth does.

For each seeded ``qd_demo`` specimen (:func:`bench.quality.make_specimen`) and tilt count:
split the counts (:func:`edxtomo.deep.selfcheck.split_halves`), denoise half A, run steps
b-d, and per element print the truth's verdict (PSNR of the final volume minus step b's, dB)
beside the held-out one (deviance of step b's volume minus the final one's, in percent of
the final one's: positive when the final volume predicts B better), and whether they agree.

Usage::

    python bench/selfcheck_steps.py --size 96 --seeds 0 1 2 --tilts 7 13 --device cuda
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pandas as pd
import torch
from quality import ELEMENTS, deep_options, make_specimen

from edxtomo.deep import denoise_projections, reconstruct_deep
from edxtomo.deep.selfcheck import score, split_halves
from edxtomo.metrics import particle_region, psnr


def run_case(size: int, seed: int, n_tilts: int, counts: float, device: str,
             budget: str) -> list[dict]:
    """One specimen: per element, the truth's and half B's verdicts on steps c+d."""
    angles = np.linspace(-60, 60, n_tilts)
    series, truth, _ = make_specimen(size, seed, angles, counts)
    half_a, half_b = split_halves(series, seed)
    options = deep_options(budget)
    denoised = denoise_projections(half_a, seed=seed, device=device, options=options.denoise,
                                   progress=False)
    result = reconstruct_deep(denoised.projections, angles, options, seed=seed, device=device,
                              progress=False)
    mask = np.ones_like(next(iter(half_b.values())), bool)
    held_out = {e: half_b[e] for e in ELEMENTS}
    deviance = {step: score(volumes, held_out, half_a.background, angles, mask, device)
                for step, volumes in (("b", result.mbir_volumes), ("d", result.volumes))}
    region = particle_region(truth)
    rows = []
    for i, element in enumerate(ELEMENTS):
        gain_db = (psnr(result.volumes[element], truth[i], region)
                   - psnr(result.mbir_volumes[element], truth[i], region))
        gain_percent = 100 * (deviance["b"][element] - deviance["d"][element]) / \
            deviance["d"][element]
        rows.append({"seed": seed, "tilts": n_tilts, "element": element,
                     "truth_gain_db": gain_db, "heldout_gain_percent": gain_percent,
                     "agree": bool(np.sign(gain_db) == np.sign(gain_percent))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tilts", type=int, nargs="+", default=[13])
    parser.add_argument("--counts", type=float, default=800.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget", choices=["full", "fast"], default="full")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [row for n_tilts in args.tilts for seed in args.seeds
            for row in run_case(args.size, seed, n_tilts, args.counts, args.device,
                                args.budget)]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    print(f"agreement: {table.agree.mean():.2f} of {len(table)} element rows; where the truth "
          f"moved more than 0.3 dB: "
          f"{table[table.truth_gain_db.abs() > 0.3].agree.mean():.2f}")


if __name__ == "__main__":
    main()
