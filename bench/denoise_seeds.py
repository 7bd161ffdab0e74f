"""How much step a's result depends on its training seed, at one training budget.

For each specimen (the seeded quantum-dot phantoms of ``bench/quality.py``, 13 tilts,
``--counts`` net counts per element and tilt), the series is denoised with ``--seeds``
training seeds (100, 101, ...), and every element's denoised net projections are scored
against the noise-free ones: PSNR in dB, the peak being the maximum of the noise-free
projections. The reference, measured in the same run, is the PSNR of the raw net counts
(the counts less their expected background), which step a starts from; the ratio column
is the gain in dB.

Usage::

    python bench/denoise_seeds.py [--budget fast] [--size 64] [--specimens 0 1 2]
        [--seeds 8] [--device auto] [--threads 2] [--steps N] [--batch-size N]

``--steps`` and ``--batch-size`` override the budget's, to compare training schedules on
the same specimens and seeds.

Prints one markdown table: per specimen and element, the raw PSNR, the denoised PSNR's mean
+- standard deviation (min-max) over the training seeds, and the mean gain.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from quality import ELEMENTS, deep_options, make_specimen

from edxtomo.deep import denoise_projections

ANGLES = np.linspace(-60, 60, 13)


def projection_psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB) of ``estimate`` against ``truth``, both ``(n_tilt, ny, nx)``."""
    mse = float(np.mean((np.asarray(estimate, np.float64) - truth) ** 2))
    return 10 * np.log10(float(truth.max()) ** 2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=["full", "fast"], default="fast")
    parser.add_argument("--size", type=int, default=64, help="volume edge in voxels")
    parser.add_argument("--specimens", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seeds", type=int, default=8, help="training seeds per specimen")
    parser.add_argument("--counts", type=float, default=800.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=None, help="instead of the budget's")
    parser.add_argument("--batch-size", type=int, default=None, help="instead of the budget's")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = deep_options(args.budget).denoise
    options = options.model_copy(update={k: v for k, v in (
        ("steps", args.steps), ("batch_size", args.batch_size)) if v is not None})
    print(f"step a, budget {args.budget} ({options.steps} steps of {options.batch_size} views), "
          f"{args.size}^3, 13 tilts, "
          f"{args.counts:g} counts, training seeds 100-{99 + args.seeds}, device "
          f"{args.device}, torch threads {torch.get_num_threads()}")
    print("| specimen | element | raw counts (ref., dB) | denoised (dB) | gain (dB) |")
    print("|---|---|---|---|---|")
    for specimen in args.specimens:
        series, _, expected = make_specimen(args.size, specimen, ANGLES, args.counts)
        scores = {e: [] for e in ELEMENTS}
        for seed in range(100, 100 + args.seeds):
            denoised = denoise_projections(series, seed=seed, device=args.device,
                                           options=options, progress=False)
            for i, element in enumerate(ELEMENTS):
                scores[element].append(projection_psnr(denoised.projections[element],
                                                       np.asarray(expected[i])))
        for i, element in enumerate(ELEMENTS):
            raw = projection_psnr(series.net_counts(element), np.asarray(expected[i]))
            values = np.array(scores[element])
            print(f"| {specimen} | {element} | {raw:.2f} | {values.mean():.2f} +- "
                  f"{values.std():.2f} ({values.min():.1f}-{values.max():.1f}) | "
                  f"{values.mean() - raw:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
