"""Time of each step of the deep pipeline, and the model-based solvers compared.

Table 1, per device: seconds of every step (denoising, model-based reconstruction, view
enrichment with the final reconstruction) with the default settings, and in the same run the
reference SIRT (100 iterations, torch backend) on the same data, with the ratio.

* CPU: the demo size, 64 x 64 px, 13 tilts, 5 elements + HAADF, 64^3 volume.
* CUDA (when a GPU is visible): 256 x 256 px, 13 tilts, 3 elements + HAADF, 256^3 volume.
  The goal for the whole pipeline on one H100 is 120 s.

Table 2 (CPU, demo size): the objective ``1/2||Ax - y||^2 + w TV(x)`` reached by the
preconditioned PDHG and by split-Bregman (the paper's solver) for the same number of
projection pairs, which is why PDHG is the default of step b.

Usage::

    python bench/deep.py [--threads 2] [--skip-cuda] [--skip-solvers]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ELEMENTS, make_specimen  # noqa: E402

from edxtomo.deep import denoise_projections, reconstruct_deep  # noqa: E402
from edxtomo.options import DeepOptions
from edxtomo.options.deep import MBIR_WEIGHT  # noqa: E402
from edxtomo.tomo import project, sirt  # noqa: E402
from edxtomo.tomo.tv import mbir_l2, total_variation  # noqa: E402

# The library defaults follow the device (budget auto); the tables are measured with
# the full training on every device.
FULL_BUDGET, _ = DeepOptions(budget="full").with_budget("cpu")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_pipeline(size: int, elements: list[str], device: str) -> list[tuple[str, float]]:
    angles = np.linspace(-60, 60, 13)
    series, _, _ = make_specimen(size, 0, angles, 800.0)
    keep = [*elements, "HAADF"]
    series.channels = {k: v for k, v in series.channels.items() if k in keep}
    series.background = {k: v for k, v in series.background.items() if k in keep}
    t = time.perf_counter()
    denoised = denoise_projections(series, seed=0, device=device,
                                   options=FULL_BUDGET.denoise, progress=False)
    _sync(device)
    rows = [("a. denoise (train + inference)", time.perf_counter() - t)]
    result = reconstruct_deep(denoised.projections, angles, FULL_BUDGET, seed=0,
                              device=device, progress=False)
    rows += [("b. model-based (PDHG, TV)", result.seconds["mbir"]),
             ("c. view enrichment (train + dense views)", result.seconds["enrich"]),
             ("d. final (TV on the dense views)", result.seconds["final"])]
    rows.append(("whole pipeline", sum(seconds for _, seconds in rows)))
    net = np.stack([series.net_counts(e) for e in elements])
    t = time.perf_counter()
    sirt(net, angles, iterations=100, device=device, progress=False)
    _sync(device)
    rows.append(("reference: SIRT 100 it.", time.perf_counter() - t))
    return rows


def compare_solvers(size: int = 64) -> list[tuple[str, int, float]]:
    angles = np.linspace(-60, 60, 13)
    _, truth, expected = make_specimen(size, 0, angles, 800.0)
    rng = np.random.default_rng(0)
    data = (expected + rng.normal(0, 0.05 * expected.max(), expected.shape)).astype(np.float32)
    peak = data.max(axis=(1, 2, 3), keepdims=True)
    weights = np.full(len(ELEMENTS), MBIR_WEIGHT, np.float32)
    rows = []
    for outer, inner in ((5, 10), (10, 20), (20, 20), (30, 30)):
        for solver in ("pdhg", "split_bregman"):
            t = time.perf_counter()
            volume = mbir_l2(data, angles, reg="tv", weight=weights, outer=outer, inner=inner,
                             solver=solver, device="cpu", progress=False)
            seconds = time.perf_counter() - t
            x = volume / peak
            fit = 0.5 * float(((project(volume, angles, device="cpu") - data) ** 2 / peak**2)
                              .sum())
            tv = float((torch.as_tensor(weights) * total_variation(torch.as_tensor(x))).sum())
            rows.append((solver, outer * inner, fit + tv, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-cuda", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-solvers", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = []
    if not args.skip_cpu:
        cases.append(("cpu", 64, ELEMENTS))
    if torch.cuda.is_available() and not args.skip_cuda:
        cases.append(("cuda", 256, ["Zn", "Se", "S"]))
    for device, size, elements in cases:
        name = torch.cuda.get_device_name() if device == "cuda" else (
            f"CPU, {torch.get_num_threads()} threads")
        print(f"\n{device} ({name}): {size}x{size} px, 13 tilts, {len(elements)} elements + "
              f"HAADF, {size}^3 volume, default settings")
        rows = time_pipeline(size, elements, device)
        reference = rows[-1][1]
        print("| step | seconds | / SIRT 100 |\n|---|---|---|")
        for step, seconds in rows:
            print(f"| {step} | {seconds:.1f} | {seconds / reference:.1f} |")
    if not args.skip_solvers:
        print("\nstep b solvers, 64^3 x 5 elements, 13 tilts, 5% Gaussian noise, TV, CPU:")
        print("| solver | projection pairs | objective | seconds |\n|---|---|---|---|")
        for solver, pairs, objective, seconds in compare_solvers():
            print(f"| {solver} | {pairs} | {objective:.5g} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
