"""Extraction speed and memory: edxtomo's lazy path against a naive dense HyperSpy path.

The case (issue 4): realistic large tilts, 512 x 512 px and 4096 channels of 10 eV, about
10^6 counts each (In, P, Zn, Se, S lines on a bremsstrahlung continuum, 4 frames, 4 Super-X
detectors), written as Velox files by the simulator's writer (``edxtomo.simulate.velox``).

Each path runs in its own process over the same files, so its time and peak resident memory
(``ru_maxrss``, imports included; the RSS right after the imports is printed beside it) are
its own:

- ``edxtomo``: :func:`edxtomo.extract.extract_tilt_series` on one file at a time (lazy
  read, sparse reduction, background model, HAADF), then on all files at once.
- ``naive``: ``hyperspy.api.load`` of the dense spectrum image, then exspy's
  ``get_lines_intensity`` with integration windows of 1.2 FWHM and exspy's background
  windows, and the summed spectrum.

The first tilt of each process includes numba's compilation (rosettasciio's stream readers,
sparse); "warm" is the mean over the others. The dense size is that of one uint16 spectrum
image, ``ny * nx * n_channel * 2`` bytes, the memory goal.

Usage::

    python bench/extract.py                    # 3 tilts of 512 x 512 x 4096, 10^6 counts
    python bench/extract.py --size 256 --tilts 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ELEMENTS = ("In", "P", "Zn", "Se", "S")
LINES = ("In_La", "P_Ka", "Zn_Ka", "Se_Ka", "S_Ka")
DISPERSION_EV = 10.0
OFFSET_EV = -250.0
N_FRAMES = 4
N_DETECTORS = 4


def _blobs(shape: tuple[int, int], rng: np.random.Generator, n: int) -> np.ndarray:
    """Sum of ``n`` Gaussian blobs, normalised to sum 1."""
    y, x = np.indices(shape, dtype=np.float32)
    image = np.zeros(shape, dtype=np.float32)
    for cy, cx, sigma in zip(rng.uniform(0.2, 0.8, n) * shape[0],
                             rng.uniform(0.2, 0.8, n) * shape[1],
                             rng.uniform(0.03, 0.08, n) * shape[0], strict=True):
        image += np.exp(-0.5 * ((y - cy) ** 2 + (x - cx) ** 2) / sigma**2)
    return image / image.sum()


def write_tilt(path: Path, size: int, n_channel: int, n_counts: int, angle_deg: float,
               seed: int) -> Path:
    """One simulated Velox file: half the counts in the lines, half in the continuum."""
    from edxtomo.extract import element_lines, xray_fwhm_keV
    from edxtomo.simulate.velox import VeloxSettings, XrayEvents, write_velox_emd

    rng = np.random.default_rng(seed)
    shape = (size, size)
    mass = _blobs(shape, rng, 12)
    pixel, energy = [], []
    n_line = n_counts // (2 * len(LINES))
    for line in LINES:
        element = line.split("_")[0]
        centre = element_lines(element)[line][0]
        sigma = float(xray_fwhm_keV(centre, 130.0)) / 2.3548
        pixel.append(rng.choice(mass.size, n_line, p=_blobs(shape, rng, 6).ravel()))
        energy.append(rng.normal(centre, sigma, n_line))
    n_continuum = n_counts - n_line * len(LINES)
    pixel.append(rng.choice(mass.size, n_continuum, p=mass.ravel()))
    # Kramers-like continuum, ~1/E above 0.5 keV, up to the end of the spectrum.
    high = (OFFSET_EV + DISPERSION_EV * (n_channel - 1)) / 1e3
    energy.append(0.5 * (high / 0.5) ** rng.random(n_continuum))
    pixel, energy = np.concatenate(pixel), np.concatenate(energy)
    channel = np.clip(np.rint((energy * 1e3 - OFFSET_EV) / DISPERSION_EV), 0, n_channel - 1)
    events = XrayEvents(
        frame=rng.integers(0, N_FRAMES, pixel.size), y=pixel // size, x=pixel % size,
        channel=channel.astype(np.int64), detector=rng.integers(0, N_DETECTORS, pixel.size))
    haadf = rng.poisson(1e3 * mass / mass.max() + 50).astype(np.float32)
    settings = VeloxSettings(
        pixel_size_nm=0.5, n_channels=n_channel, dispersion_ev=DISPERSION_EV,
        energy_offset_ev=OFFSET_EV, beam_energy_kev=300.0, tilt_deg=angle_deg,
        elements=ELEMENTS, n_frames=N_FRAMES, n_detectors=N_DETECTORS)
    return write_velox_emd(path, events, {"HAADF": haadf}, settings, uuid_seed=seed)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_edxtomo(paths: list[Path]) -> dict:
    import exspy  # noqa: F401  (imported by both paths before the baseline RSS)
    import hyperspy.api  # noqa: F401

    from edxtomo.extract import extract_tilt_series

    after_import = _rss_mib()
    times = []
    for path in paths:
        start = time.perf_counter()
        extract_tilt_series([path], elements=list(ELEMENTS))
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    series, _ = extract_tilt_series(paths, elements=list(ELEMENTS))
    series_time = time.perf_counter() - start
    counts = {e: int(series.channels[e].sum()) for e in ELEMENTS}
    return {"times": times, "series_time": series_time, "after_import": after_import,
            "peak": _rss_mib(), "counts": counts}


def worker_naive(paths: list[Path]) -> dict:
    import exspy  # noqa: F401
    import hyperspy.api as hs

    after_import = _rss_mib()
    times, counts = [], dict.fromkeys(ELEMENTS, 0)
    for path in paths:
        start = time.perf_counter()
        signal = hs.load(path, select_type="spectrum_image")
        signal.set_elements(list(ELEMENTS))
        signal.set_lines(list(LINES))
        windows = signal.estimate_background_windows(xray_lines=list(LINES))
        maps = signal.get_lines_intensity(list(LINES), integration_windows=1.2,
                                          background_windows=windows)
        signal.sum(axis=(0, 1))
        times.append(time.perf_counter() - start)
        for line, image in zip(LINES, maps, strict=True):
            counts[line.split("_")[0]] += int(np.asarray(image.data).sum())
        del signal, maps
    return {"times": times, "series_time": float("nan"), "after_import": after_import,
            "peak": _rss_mib(), "counts": counts}


def run_worker(mode: str, paths: list[Path]) -> dict:
    command = [sys.executable, __file__, "--worker", mode, *map(str, paths)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image size in pixels")
    parser.add_argument("--channels", type=int, default=4096, help="energy channels")
    parser.add_argument("--counts", type=float, default=1e6, help="counts per tilt")
    parser.add_argument("--tilts", type=int, default=3, help="number of tilts (files)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker = {"edxtomo": worker_edxtomo, "naive": worker_naive}[args.worker]
        print(json.dumps(worker(args.paths)))
        return

    dense_mib = args.size**2 * args.channels * 2 / 2**20
    with tempfile.TemporaryDirectory(prefix="edxtomo-bench-") as folder:
        start = time.perf_counter()
        paths = [write_tilt(Path(folder) / f"tilt_{i:03d}.emd", args.size, args.channels,
                            int(args.counts), -30.0 + 30.0 * i, seed=i)
                 for i in range(args.tilts)]
        print(f"wrote {args.tilts} Velox files of {args.size} x {args.size} px x "
              f"{args.channels} channels, {args.counts:.0e} counts each "
              f"({time.perf_counter() - start:.1f} s); dense uint16 spectrum image "
              f"{dense_mib:.0f} MiB")
        results = {mode: run_worker(mode, paths) for mode in ("edxtomo", "naive")}

    print(f"\n{'path':<10}{'first tilt s':>14}{'warm s/tilt':>13}{'series s/tilt':>15}"
          f"{'RSS imports MiB':>17}{'peak RSS MiB':>14}{'peak/dense':>12}")
    for mode, r in results.items():
        warm = np.mean(r["times"][1:]) if len(r["times"]) > 1 else float("nan")
        print(f"{mode:<10}{r['times'][0]:>14.2f}{warm:>13.2f}"
              f"{r['series_time'] / args.tilts:>15.2f}{r['after_import']:>17.0f}"
              f"{r['peak']:>14.0f}{r['peak'] / dense_mib:>12.2f}")
    ours, naive = results["edxtomo"], results["naive"]
    speedup = np.mean(naive["times"][1:] or naive["times"]) / np.mean(
        ours["times"][1:] or ours["times"])
    print(f"\nwarm speed-up edxtomo / naive: {speedup:.1f}x; peak RSS ratio "
          f"{ours['peak'] / naive['peak']:.2f}")
    print("gross window counts, edxtomo:", ours["counts"])
    print("net counts (background subtracted), naive:", naive["counts"])


if __name__ == "__main__":
    main()
