"""Time of each step of the deep pipeline, and the model-based solvers compared.

Table 1, per device and size: seconds of every step (denoising, model-based reconstruction,
view enrichment, final reconstruction) with the full training budget, and in the same run the
reference SIRT (100 iterations, torch backend) on the same data, with the ratio; on CUDA the
peak device memory of each step (``torch.cuda.max_memory_allocated``, reset between steps),
and for every size the peak host RSS of the process so far.

* CPU: the demo size, 64 x 64 px, 13 tilts, 5 elements + HAADF, 64^3 volume.
* CUDA (when a GPU is visible): ``--gpu-sizes`` (default 256,512,1024) px, 13 tilts, 3
  elements (Zn, Se, S) + HAADF, size^3 volume. Goals on one H100: 1,024^2 within 40 GiB and
  5 minutes, 256^2 within 15 s.

The specimen of size <= 256 is the quantum-dot phantom of ``bench/quality.py`` at size^3.
Larger fields tile its 256^3 phantom: ``size / 256`` copies side by side in x (a slab 256
voxels deep, centred in the size^3 volume that is reconstructed), and ``size / 256`` bands
of it in y, each with its own Poisson draw. The projector never couples y slices, so the
bands cost one projection of a 256 x 256 x size block each; a size^3 phantom would take
5 x 4 GiB and minutes of voxelisation at 1,024. Each row is printed (and flushed) as soon as
it is measured, and on CUDA the pipeline's log lines carry timestamps, so a run cut short
still reports the steps it finished.

Table 2 (CPU, demo size): the objective ``1/2||Ax - y||^2 + w TV(x)`` reached by the
preconditioned PDHG and by split-Bregman (the paper's solver) for the same number of
projection pairs, which is why PDHG is the default of step b.

Usage::

    python bench/deep.py [--threads 2] [--skip-cpu] [--skip-cuda] [--skip-solvers]
        [--gpu-sizes 256,512,1024] [--memory-gib 40] [--prepare-only 1024]
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ELEMENTS, PRESET, make_specimen  # noqa: E402

from edxtomo.deep import denoise_projections, reconstruct_deep  # noqa: E402
from edxtomo.io import TiltSeries  # noqa: E402
from edxtomo.options import DeepOptions  # noqa: E402
from edxtomo.options.deep import MBIR_WEIGHT  # noqa: E402
from edxtomo.simulate.counts import count_series, phantom_volumes  # noqa: E402
from edxtomo.tomo import project, sirt  # noqa: E402
from edxtomo.tomo.tv import mbir_l2, total_variation  # noqa: E402

# The library defaults follow the device (budget auto); the tables are measured with
# the full training on every device.
FULL_BUDGET, _ = DeepOptions(budget="full").with_budget("cpu")
ANGLES = np.linspace(-60, 60, 13)
COUNTS_PER_TILT = 800.0
TILE = 256


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_field(size: int, elements: list[str]) -> TiltSeries:
    """The tilt series of a ``size`` px field (see the module notes), ``elements`` + HAADF."""
    if size <= TILE:
        series, _, _ = make_specimen(size, 0, ANGLES, COUNTS_PER_TILT)
    else:
        if size % TILE:
            raise SystemExit(f"GPU sizes above {TILE} must be multiples of {TILE}, got {size}")
        spec = yaml.safe_load(PRESET.read_text())
        rng = np.random.default_rng(0)
        reps = size // TILE
        _, densities = phantom_volumes(spec, (TILE,) * 3, 60.0, rng)
        band = {e: np.tile(densities[e], (1, 1, reps)) for e in ELEMENTS}
        parts = [count_series(band, ANGLES, float(spec["voxel_size_nm"]),
                              COUNTS_PER_TILT * reps, rng)[0] for _ in range(reps)]
        series = TiltSeries(
            {k: np.concatenate([p.channels[k] for p in parts], axis=1)
             for k in parts[0].channels},
            ANGLES, parts[0].pixel_size_nm, {},
            {k: np.concatenate([p.background[k] for p in parts], axis=1)
             for k in parts[0].background})
    keep = [*elements, "HAADF"]
    series.channels = {k: v for k, v in series.channels.items() if k in keep}
    series.background = {k: v for k, v in series.background.items() if k in keep}
    return series


def time_pipeline(size: int, elements: list[str], device: str,
                  options: DeepOptions) -> list[tuple[str, float, float | None]]:
    """``(step, seconds, peak GiB on CUDA or None)`` of each step and the SIRT reference."""
    t = time.perf_counter()
    series = make_field(size, elements)
    print(f"  specimen built in {time.perf_counter() - t:.1f} s (host RSS peak "
          f"{peak_rss_gib():.1f} GiB)", flush=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    denoised = denoise_projections(series, seed=0, device=device,
                                   options=options.denoise, progress=False)
    _sync(device)
    rows = [("a. denoise (train + inference)", time.perf_counter() - t, _peak_gib(device))]
    print(f"  a. denoise {rows[0][1]:.1f} s" + ("" if rows[0][2] is None else
          f", peak GPU memory {rows[0][2]:.1f} GiB"), flush=True)
    result = reconstruct_deep(denoised.projections, ANGLES, options, seed=0,
                              device=device, progress=False)
    peaks = {k: v / 2**30 for k, v in result.peak_memory_bytes.items()}
    rows += [("b. model-based (PDHG, TV)", result.seconds["mbir"], peaks.get("mbir")),
             ("c. view enrichment (train + dense views)", result.seconds["enrich"],
              peaks.get("enrich")),
             ("d. final (TV on the dense views)", result.seconds["final"], peaks.get("final"))]
    overall = max((p for _, _, p in rows if p is not None), default=None)
    rows.append(("whole pipeline", sum(seconds for _, seconds, _ in rows), overall))
    net = np.stack([series.net_counts(e) for e in elements])
    del series, denoised, result
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    sirt(net, ANGLES, iterations=100, device=device, progress=False)
    _sync(device)
    rows.append(("reference: SIRT 100 it.", time.perf_counter() - t, _peak_gib(device)))
    return rows


def _peak_gib(device: str) -> float | None:
    if device != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return peak


def compare_solvers(size: int = 64) -> list[tuple[str, int, float]]:
    angles = ANGLES
    _, truth, expected = make_specimen(size, 0, angles, COUNTS_PER_TILT)
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
    parser.add_argument("--gpu-sizes", default="256,512,1024",
                        help="comma-separated field sizes (px) of the CUDA rows")
    parser.add_argument("--memory-gib", type=float, default=None,
                        help="reconstruct.deep.mbir.memory_gib of the runs (default: free memory)")
    parser.add_argument("--prepare-only", type=int, default=None, metavar="SIZE",
                        help="only build the specimen of SIZE px and print its time and RSS")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.prepare_only:
        t = time.perf_counter()
        series = make_field(args.prepare_only, ["Zn", "Se", "S"])
        print(f"specimen {args.prepare_only} px: {time.perf_counter() - t:.1f} s, "
              f"{series.n_tilt} tilts, peak host RSS {peak_rss_gib():.2f} GiB")
        return
    # step b's weight fixed, as in the rows measured before: the search of `weight: auto`
    # would multiply step b's time and is not what this table compares
    options = FULL_BUDGET.model_copy(update={"mbir": FULL_BUDGET.mbir.model_copy(
        update={"memory_gib": args.memory_gib, "weight": MBIR_WEIGHT})})
    cases = []
    if not args.skip_cpu:
        cases.append(("cpu", 64, ELEMENTS))
    if torch.cuda.is_available() and not args.skip_cuda:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("edxtomo").setLevel(logging.INFO)
        cases += [("cuda", int(size), ["Zn", "Se", "S"]) for size in args.gpu_sizes.split(",")]
    else:
        logging.basicConfig(level=logging.WARNING)
    for device, size, elements in cases:
        name = torch.cuda.get_device_name() if device == "cuda" else (
            f"CPU, {torch.get_num_threads()} threads")
        print(f"\n{device} ({name}): {size}x{size} px, 13 tilts, {len(elements)} elements + "
              f"HAADF, {size}^3 volume, full budget"
              + (f", memory_gib {args.memory_gib}" if args.memory_gib else ""), flush=True)
        rows = time_pipeline(size, elements, device, options)
        reference = rows[-1][1]
        print("| step | seconds | / SIRT 100 | peak GPU GiB |\n|---|---|---|---|")
        for step, seconds, peak in rows:
            memory = "-" if peak is None else f"{peak:.1f}"
            print(f"| {step} | {seconds:.1f} | {seconds / reference:.1f} | {memory} |")
        print(f"peak host RSS so far: {peak_rss_gib():.1f} GiB", flush=True)
    if not args.skip_solvers:
        print("\nstep b solvers, 64^3 x 5 elements, 13 tilts, 5% Gaussian noise, TV, CPU:")
        print("| solver | projection pairs | objective | seconds |\n|---|---|---|---|")
        for solver, pairs, objective, seconds in compare_solvers():
            print(f"| {solver} | {pairs} | {objective:.5g} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
