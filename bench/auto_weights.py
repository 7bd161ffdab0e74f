"""Step b's ``weight: auto`` (left-out tilts): accuracy against the truth-tuned weight, and cost.

Builds the seeded quantum-dot specimen of ``bench/quality.py`` (``qd_demo``, In/P/Zn/Se/S),
and stands in for step a's output with *simulated denoised views*: the noise-free net
projections at ``--counts`` per element and tilt plus a residual error of ``--error`` times
the mean signal, averaged over 1 px neighbours (correlated, as a denoiser leaves it; the
model of ``tests/test_weights.py``). Step b is TV-KL with the iterations of ``--budget``.

Rows:

* ``auto, band of 16 rows`` -- :func:`edxtomo.tomo.weights.weights_by_left_out_tilts` with
  its defaults (the figure);
* ``auto, every row`` -- the same search over every y row (the reference for cost);
* ``truth-tuned`` -- the weight with the best PSNR on a grid a factor 2 apart;
* ``one step b reconstruction`` -- the cost of the solve the weight is chosen for.

Usage::

    python bench/auto_weights.py --size 64 --tilts 13 --threads 2

Prints a markdown table: weights and PSNR (dB) per element, seconds, and the ratio of the
search's time to the reference's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ELEMENTS, make_specimen  # noqa: E402

from edxtomo.metrics import particle_region, psnr  # noqa: E402
from edxtomo.options import DeepOptions  # noqa: E402
from edxtomo.tomo.tv import tv_kl  # noqa: E402
from edxtomo.tomo.weights import DENOISED_GRID, weights_by_left_out_tilts  # noqa: E402

log = logging.getLogger("bench.auto_weights")

TRUTH_GRID = 0.002 * 2.0 ** np.arange(9)
"""Weights the truth tunes over: 0.002-0.51, a factor 2 apart."""


def denoised_views(expected: np.ndarray, error: float, seed: int) -> np.ndarray:
    """``(c, n_tilt, ny, nx)`` noise-free views plus a correlated error of ``error`` times
    their mean, clipped at 0."""
    rng = np.random.default_rng([seed, 5])
    noise = rng.normal(0.0, error * expected.mean(), expected.shape)
    noise = (noise + np.roll(noise, 1, axis=-1) + np.roll(noise, 1, axis=-2)) / 3
    return np.clip(expected + noise, 0, None).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="volume edge in voxels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tilts", type=int, default=13)
    parser.add_argument("--counts", type=float, default=800.0,
                        help="net counts per element and tilt")
    parser.add_argument("--error", type=float, default=0.1,
                        help="residual error of the denoised views, times their mean")
    parser.add_argument("--budget", choices=["fast", "full"], default="fast",
                        help="step b's iterations (fast: the CPU default)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("edxtomo").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    opts, _ = DeepOptions(budget=args.budget).with_budget("cpu")
    iterations = opts.mbir.outer * opts.mbir.inner
    angles = np.linspace(-60, 60, args.tilts)
    _, truth, expected = make_specimen(args.size, args.seed, angles, args.counts)
    views = denoised_views(np.asarray(expected, np.float32), args.error, args.seed)
    region = particle_region(truth)

    def solve(data, angles_deg, weights):
        return tv_kl(data, angles_deg, weight=weights, iterations=iterations, device="cpu",
                     progress=False)

    def scores(weights):
        volumes = solve(np.tile(views, (len(weights) // len(ELEMENTS), 1, 1, 1)), angles,
                        weights)
        return np.array([psnr(volumes[i], truth[i % len(ELEMENTS)], region)
                         for i in range(len(volumes))])

    rows = []

    def add(label, weights, psnr_db, seconds):
        rows.append((label, weights, psnr_db, seconds))
        log.info("%s: weights %s, PSNR %s dB, %.1f s", label, weights, psnr_db, seconds)

    def search(label, band_rows):
        start = time.perf_counter()
        chosen = weights_by_left_out_tilts(views, angles, ELEMENTS, solve, grid=DENOISED_GRID,
                                           band_rows=band_rows, device="cpu").chosen
        seconds = time.perf_counter() - start
        add(label, chosen, scores(chosen), seconds)

    search("auto, band of 16 rows", 16)
    start = time.perf_counter()
    solve(views, angles, np.full(len(ELEMENTS), 0.03))
    add("one step b reconstruction", None, None, time.perf_counter() - start)
    # channel j * n_elements + i: element i at weight j
    tuned = scores(np.repeat(TRUTH_GRID, len(ELEMENTS))).reshape(len(TRUTH_GRID), -1)
    add("truth-tuned", TRUTH_GRID[tuned.argmax(axis=0)], tuned.max(axis=0), np.nan)
    search("auto, every row", None)
    reference = rows[-1][3]
    table = pd.DataFrame([
        {"row": label,
         **{f"{e} weight": (np.nan if w is None else w[i]) for i, e in enumerate(ELEMENTS)},
         **{f"{e} dB": (np.nan if p is None else p[i]) for i, e in enumerate(ELEMENTS)},
         "time_s": t, "time / every row": t / reference}
        for label, w, p, t in rows])
    print(f"{args.size}^3, {args.tilts} tilts, {args.counts:g} counts, error {args.error:g}, "
          f"seed {args.seed}, {iterations} PDHG iterations, {torch.get_num_threads()} threads")
    print(table.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
