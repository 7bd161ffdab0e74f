"""SIRT speed and memory: edxtomo's torch backend against ASTRA and a scipy baseline.

The case (issue 6): a 256-slice, 256 x 256 core-shell phantom, 31 tilts over +-70 degrees,
noise-free projections, SIRT 100 iterations, non-negative. Each method runs in its own
process, so its wall time (reconstruction only: imports excluded, system-matrix construction
and worker start-up included) and peak resident memory are its own. Peak memory is the larger
of the process tree's RSS sampled every 20 ms and the worker's own ``VmHWM``; it includes
about 240 MB of imported Python, numpy, torch and ASTRA.
RMSE is against the phantom, over the slices every method reconstructed. Every worker gets
the environment of the workflow's jobs (``edxtomo.runtime.JOB_ENVIRONMENT``: idle OpenMP
threads sleep, ``OMP_WAIT_POLICY=PASSIVE``) unless it is set already; the table says which.

CPU methods:
- ``torch``: ``edxtomo.tomo.sirt`` (sparse strip-area matrix, all slices batched).
- ``astra``: ASTRA's 2D CPU ``SIRT`` with the ``strip`` kernel, slice by slice, one process
  per core (what etspy does). ``--astra-slices K`` runs only the K central slices and scales
  the time by ``slices / K`` (slices are independent and cost the same); the table marks it.
- ``scipy``: the same SIRT with ``scipy.sparse`` products on all slices at once.

With a CUDA GPU the same table is printed for ``--gpu-sizes`` (default 256 and 512 cubed):
torch on CUDA against ASTRA's ``SIRT_CUDA`` slice by slice (the etspy GPU path) and ASTRA's
``SIRT3D_CUDA`` on the whole volume (geometry matched at run time on a probe, see
``astra3d_orientation``).

Usage::

    python bench/sirt.py                      # the full case
    python bench/sirt.py --slices 32          # fewer slices, same slice size
    python bench/sirt.py --astra-slices 16    # ASTRA on 16 slices, time extrapolated
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from edxtomo.runtime import set_job_environment

CPU_METHODS = ("torch", "astra", "scipy")
GPU_METHODS = ("torch-cuda", "astra-cuda-2d", "astra-cuda-3d")


def phantom(n: int, ny: int, seed: int = 0) -> np.ndarray:
    """Core-shell particles with off-centre cores, ``(n, ny, n)`` float32 in [0, 1.5]."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(
        *[np.arange(m, dtype=np.float32) - (m - 1) / 2 for m in (n, ny, n)],
        indexing="ij",
        sparse=True,
    )
    volume = np.zeros((n, ny, n), dtype=np.float32)
    for _ in range(12):
        radius = rng.uniform(0.08, 0.16) * n
        # Inside the cylinder every tilt sees, so no method is judged on truncation.
        r_pos = rng.uniform(0, 0.45 * n - radius)
        phi = rng.uniform(0, 2 * np.pi)
        centre = (r_pos * np.sin(phi), rng.uniform(-0.35, 0.35) * ny, r_pos * np.cos(phi))
        offset = rng.normal(0, 0.15 * radius, 3)
        shell = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
        core = np.sqrt(
            (z - centre[0] - offset[0]) ** 2
            + (y - centre[1] - offset[1]) ** 2
            + (x - centre[2] - offset[2]) ** 2
        )
        # Linear partial-volume edges: occupancy ramps over one voxel across the surface.
        volume = np.maximum(volume, 0.5 * np.clip(radius - shell + 0.5, 0, 1))
        volume += np.clip(0.6 * radius - core + 0.5, 0, 1) * (shell < radius)
    return volume


def scipy_sirt(proj: np.ndarray, angles: np.ndarray, iterations: int) -> np.ndarray:
    """Reference SIRT with scipy.sparse on all slices at once (same matrix and update)."""
    from edxtomo.tomo import system_matrix

    n_tilt, ny, nx = proj.shape
    matrix = system_matrix(angles, nx, nx)
    transpose = matrix.T.tocsr()
    with np.errstate(divide="ignore"):
        inv_row = np.where(matrix.sum(1).A1 > 0, 1 / matrix.sum(1).A1, 0)[:, None]
        inv_col = np.where(matrix.sum(0).A1 > 0, 1 / matrix.sum(0).A1, 0)[:, None]
    b = np.ascontiguousarray(proj.transpose(0, 2, 1).reshape(n_tilt * nx, ny))
    x = np.zeros((nx * nx, ny), dtype=np.float32)
    for _ in range(iterations):
        residual = (b - matrix @ x) * inv_row.astype(np.float32)
        x += (transpose @ residual) * inv_col.astype(np.float32)
        np.maximum(x, 0, out=x)
    return x.reshape(nx, nx, ny).transpose(0, 2, 1)


def astra3d_orientation(astra) -> tuple[float, tuple[bool, bool, bool]]:
    """Angle sign and (z, y, x) flips that map ASTRA's ``parallel3d`` onto our geometry.

    Our y becomes ASTRA's Z (its rotation axis): volumes go in as ``(y, z, x)`` and data as
    ``(y, tilt, x)``. Which way ASTRA's axes and angles run is found by forward-projecting an
    asymmetric probe with ``FP3D_CUDA`` under each candidate and keeping the one equal to our
    projector (so this is only ever called with a CUDA ASTRA): ASTRA given ``flip(V)`` at
    ``sign * theta`` then projects like we do ``V`` at ``theta``.
    """
    from edxtomo.tomo import project

    n = 16
    probe = np.zeros((n, n, n), dtype=np.float32)
    for (z, y, x), value in {(3, 5, 9): 1.0, (11, 9, 4): 2.0, (7, 13, 12): 3.0}.items():
        probe[z, y, x] = value
    angles = np.array([-50.0, 25.0])
    ours = project(probe, angles, device="cpu")
    vol_geom = astra.create_vol_geom(n, n, n)
    best = None
    for sign in (1.0, -1.0):
        for flips in itertools.product((False, True), repeat=3):
            flipped = probe[tuple(slice(None, None, -1 if f else 1) for f in flips)]
            geom = astra.create_proj_geom("parallel3d", 1.0, 1.0, n, n, sign * np.deg2rad(angles))
            sino_id, sino = astra.create_sino3d_gpu(
                np.ascontiguousarray(flipped.transpose(1, 0, 2)), geom, vol_geom
            )
            astra.data3d.delete(sino_id)
            error = float(np.abs(sino.transpose(1, 0, 2) - ours).sum() / ours.sum())
            if best is None or error < best[0]:
                best = (error, sign, flips)
    error, sign, flips = best
    if error > 0.2:
        raise RuntimeError(f"no ASTRA 3D geometry matches ours (best mismatch {error:.2f})")
    return sign, flips


def astra3d_sirt(proj: np.ndarray, angles: np.ndarray, iterations: int) -> np.ndarray:
    """ASTRA's SIRT3D_CUDA on the whole volume, returned in our orientation."""
    import astra

    n_tilt, ny, nx = proj.shape
    sign, flips = astra3d_orientation(astra)
    vol_geom = astra.create_vol_geom(nx, nx, ny)
    proj_geom = astra.create_proj_geom("parallel3d", 1.0, 1.0, ny, nx, sign * np.deg2rad(angles))
    sino_id = astra.data3d.create("-sino", proj_geom, np.ascontiguousarray(proj.transpose(1, 0, 2)))
    rec_id = astra.data3d.create("-vol", vol_geom, 0.0)
    cfg = astra.astra_dict("SIRT3D_CUDA")
    cfg.update(ProjectionDataId=sino_id, ReconstructionDataId=rec_id, option={"MinConstraint": 0.0})
    algorithm = astra.algorithm.create(cfg)
    astra.algorithm.run(algorithm, iterations)
    volume = astra.data3d.get(rec_id).transpose(1, 0, 2)
    astra.algorithm.delete(algorithm)
    astra.data3d.delete([sino_id, rec_id])
    return np.ascontiguousarray(volume[tuple(slice(None, None, -1 if f else 1) for f in flips)])


def own_peak_rss_mb() -> float:
    """Peak RSS of this process since its ``exec``, in MB.

    Linux keeps ``ru_maxrss`` across ``execve``, so a child of a large parent would report
    the parent's size; ``VmHWM`` belongs to the new address space.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(method: str, workdir: Path, iterations: int, workers: int) -> None:
    """Reconstruct ``workdir/proj_<method>.npy``; write the volume and the wall time."""
    import torch

    from edxtomo.tomo import sirt

    proj = np.load(workdir / f"proj_{method}.npy")
    angles = np.load(workdir / "angles.npy")
    start = time.perf_counter()
    if method == "scipy":
        volume = scipy_sirt(proj, angles, iterations)
    elif method == "astra-cuda-3d":
        volume = astra3d_sirt(proj, angles, iterations)
    else:
        backend, device = {
            "torch": ("torch", "cpu"),
            "torch-cuda": ("torch", "cuda"),
            "astra": ("astra", "cpu"),
            "astra-cuda-2d": ("astra", "cuda"),
        }[method]
        volume = sirt(
            proj,
            angles,
            iterations=iterations,
            backend=backend,
            device=device,
            progress=False,
            workers=workers,
        )
        if device == "cuda":
            torch.cuda.synchronize()
    wall = time.perf_counter() - start
    np.save(workdir / f"volume_{method}.npy", volume)
    (workdir / f"time_{method}.json").write_text(
        json.dumps({"wall_s": wall, "maxrss_mb": own_peak_rss_mb()})
    )


def run_in_subprocess(method: str, workdir: Path, args) -> dict:
    """Run :func:`worker` in a fresh process; sample its process tree's RSS meanwhile."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--workdir",
        str(workdir),
        "--iterations",
        str(args.iterations),
        "--workers",
        str(args.workers),
    ]
    process = subprocess.Popen(command)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = process.wait()
    stop.set()
    thread.join()
    if code != 0:
        raise RuntimeError(f"method {method} failed with exit code {code}")
    result = json.loads((workdir / f"time_{method}.json").read_text())
    # Sampling can miss a short peak of the worker itself; its VmHWM cannot.
    result["peak_rss_mb"] = max(peak / 2**20, result["maxrss_mb"])
    result["volume"] = np.load(workdir / f"volume_{method}.npy")
    return result


def benchmark(methods, n: int, ny: int, args, astra_slices: int | None) -> None:
    from edxtomo.tomo import project

    angles = np.linspace(-args.tilt_range, args.tilt_range, args.tilts)
    truth = phantom(n, ny, seed=args.seed)
    proj = project(truth, angles, device="cpu")
    subset = slice(0, ny)
    if astra_slices and astra_slices < ny:
        y0 = (ny - astra_slices) // 2
        subset = slice(y0, y0 + astra_slices)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        np.save(workdir / "angles.npy", angles)
        for method in methods:
            partial = method.startswith("astra") and method != "astra-cuda-3d"
            data = proj[:, subset] if partial else proj
            np.save(workdir / f"proj_{method}.npy", np.ascontiguousarray(data))
            load_before = os.getloadavg()[0]
            result = run_in_subprocess(method, workdir, args)
            load = (load_before + os.getloadavg()[0]) / 2
            scale = ny / data.shape[1]
            volume = result["volume"] if partial else result["volume"][:, subset]
            rmse = float(np.sqrt(np.mean((volume - truth[:, subset]) ** 2)))
            rows.append(
                (
                    method,
                    data.shape[1],
                    result["wall_s"],
                    result["wall_s"] * scale,
                    result["peak_rss_mb"],
                    rmse,
                    load,
                )
            )
    reference = rows[0][3]
    print(
        f"\nSIRT {args.iterations} it, non-negative, {args.tilts} tilts over "
        f"+-{args.tilt_range:g} deg, {ny} slices of {n} x {n}; "
        f"RMSE over slices {subset.start}-{subset.stop - 1} (phantom max 1.5)"
    )
    print(
        f"{'method':<15}{'slices run':>11}{'wall s':>10}{'full-case s':>13}"
        f"{'x ' + rows[0][0]:>12}{'peak RSS MB':>13}{'RMSE':>10}{'load':>7}"
    )
    for method, run, wall, full, rss, rmse, load in rows:
        mark = "*" if run < ny else " "
        print(
            f"{method:<15}{run:>11}{wall:>10.1f}{full:>12.1f}{mark}{full / reference:>12.1f}"
            f"{rss:>13.0f}{rmse:>10.5f}{load:>7.1f}"
        )
    if any(run < ny for _, run, *_ in rows):
        print("* time scaled linearly from the slices run to all slices (independent slices)")
    print(
        "load: 1-min load average over the run, the method itself included; on a shared "
        "machine a load above the core count slows multi-threaded methods most"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=256, help="y slices (default 256)")
    parser.add_argument("--size", type=int, default=256, help="slice size nx = nz")
    parser.add_argument("--tilts", type=int, default=31)
    parser.add_argument("--tilt-range", type=float, default=70.0, help="+- degrees")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="ASTRA CPU worker processes (default: one per core)",
    )
    parser.add_argument(
        "--astra-slices",
        type=int,
        default=None,
        help="run ASTRA CPU on this many central slices and extrapolate",
    )
    parser.add_argument("--methods", default=",".join(CPU_METHODS))
    parser.add_argument("--gpu-sizes", default="256,512")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.workdir, args.iterations, args.workers)
        return

    # Before torch loads OpenMP, which reads the wait policy once; the workers inherit it.
    set_job_environment()
    import torch

    print(
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )
    benchmark(args.methods.split(","), args.size, args.slices, args, args.astra_slices)
    if torch.cuda.is_available():
        import astra

        gpu_methods = ["torch-cuda"] + (
            ["astra-cuda-2d", "astra-cuda-3d"] if astra.use_cuda() else []
        )
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        for size in (int(s) for s in args.gpu_sizes.split(",")):
            benchmark(gpu_methods, size, size, args, None)


if __name__ == "__main__":
    main()
