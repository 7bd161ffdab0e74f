"""Alignment speed and accuracy: edxtomo.align against etspy on the same misaligned series.

Two cases at 256 x 256 px, misaligned with the simulator's model
(``edxtomo.simulate.acquisition.apply_misalignment``: drift up to +-20 px, axis rotation and
offset drawn up to +-10 deg and +-10 px) from a voxel phantom of four core-shell particles
projected by ``edxtomo.tomo.project``:

- ``HAADF``: 29 tilts over +-70 degrees, HAADF ~ Z^1.7 x thickness, Poisson at 2,000 counts
  at the brightest pixel.
- ``EDX``: 13 tilts over +-60 degrees, In (core), Se and S (shell) maps with 1,000 counts
  per element and tilt plus 0.002 background counts per pixel, Poisson; no HAADF.

Methods: ``edxtomo`` (``align_series`` with the default ``AlignOptions``: rotation scan,
sequential registration, projection matching), ``edxtomo, no PM`` (``refine="none"``), and
``etspy`` (the same reference stack, transposed to etspy's axis along x:
``stack_register("PC")`` then ``tilt_align("CoM")``, the etspy tutorial's path). Figures:
wall time per tilt; the RMS translation error against the truth, up to what the data cannot
tell (a specimen shift in x-z and a common y shift; edxtomo only, etspy keeps its own
conventions); the axis-rotation error; and for every method, and the unaligned input, the
misfit ``||A x - b|| / ||b||`` of a 50-iteration SIRT of the aligned reference binned by 2
(convention free). The ratio row is etspy's time over edxtomo's.

Usage::

    python bench/align.py                  # both cases, device auto, 1 torch thread
    python bench/align.py --device cuda    # SIRT inside the alignment on the GPU
    python bench/align.py --cases EDX --seed 3

BLAS threads are set to ``--threads`` before numpy is imported: on an oversubscribed CPU the
OpenBLAS worker threads spin and made skimage's sub-pixel registration 19x slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--cases", nargs="+", default=["HAADF", "EDX"], choices=["HAADF", "EDX"])
ARGS.add_argument("--device", default="auto", help="SIRT device: auto, cpu or cuda")
ARGS.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
ARGS.add_argument("--seed", type=int, default=0)
ARGS.add_argument("--no-etspy", action="store_true", help="skip the etspy reference")

if __name__ == "__main__":
    _options = ARGS.parse_args()
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = str(_options.threads)

import numpy as np  # noqa: E402

N_PX = 256
# (x, y, z) centre, core radius, shell radius, as fractions of the field width.
PARTICLES = (
    ((0.02, -0.02, 0.03), 0.06, 0.10),
    ((-0.16, 0.20, -0.08), 0.05, 0.08),
    ((0.14, -0.22, 0.10), 0.04, 0.07),
    ((0.10, 0.12, -0.16), 0.03, 0.06),
)


def phantom(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Core and shell occupancy volumes ``(n, n, n)`` (z, y, x), one-voxel linear edges."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) - (n - 1) / 2] * 3,
                          indexing="ij", sparse=True)
    core = np.zeros((n, n, n), dtype=np.float32)
    outer = np.zeros_like(core)
    for (cx, cy, cz), r_core, r_shell in PARTICLES:
        distance = np.sqrt((x - cx * n) ** 2 + (y - cy * n) ** 2 + (z - cz * n) ** 2)
        core = np.maximum(core, np.clip(r_core * n - distance + 0.5, 0, 1))
        outer = np.maximum(outer, np.clip(r_shell * n - distance + 0.5, 0, 1))
    return core, outer - core


def misaligned_series(case: str, seed: int, device: str):
    """The case's TiltSeries and its truth ``(alpha_deg, offset_px, shifts_xy)``."""
    from edxtomo.io import HAADF, TiltSeries
    from edxtomo.simulate.acquisition import apply_misalignment
    from edxtomo.tomo import project

    rng = np.random.default_rng(seed)
    angles = np.arange(-70.0, 70.1, 5.0) if case == "HAADF" else np.arange(-60.0, 60.1, 10.0)
    alpha, offset = rng.uniform(-10, 10, size=2)
    shifts = rng.uniform(-20, 20, size=(len(angles), 2))
    core, shell = (project(v, angles, device=device) for v in phantom(N_PX))

    def misalign(stack):
        return np.stack([apply_misalignment(image, sx, sy, alpha, offset)
                         for image, (sx, sy) in zip(stack, shifts, strict=True)])

    if case == "HAADF":
        haadf = misalign(49**1.7 * core + 30**1.7 * shell)
        channels = {HAADF: rng.poisson(haadf * 2000 / haadf.max()).astype(np.float32)}
        background = {}
    else:
        channels, background = {}, {}
        for element, maps in (("In", core), ("Se", shell), ("S", shell)):
            signal = misalign(maps)
            expected = signal / signal.sum(axis=(1, 2), keepdims=True) * 1000 + 0.002
            channels[element] = rng.poisson(expected).astype(np.int32)
            background[element] = np.full(expected.shape, 0.002, dtype=np.float32)
    return TiltSeries(channels, angles, 1.0, background=background), (alpha, offset, shifts)


def translation_error_px(transforms, angles_deg, truth) -> float:
    """RMS per-tilt translation error in the true axis frame, up to the unobservable part."""
    alpha, offset, shifts = truth

    def total(a_deg, o, s):
        a = np.deg2rad(a_deg)
        return np.array([o * np.cos(a), o * np.sin(a)])[None] + s

    a = np.deg2rad(alpha)
    to_axis = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    estimate = total(transforms["axis_rotation_deg"].iloc[0], transforms["axis_offset_px"].iloc[0],
                     transforms[["shift_x_px", "shift_y_px"]].to_numpy())
    error = (estimate - total(alpha, offset, shifts)) @ to_axis.T
    theta = np.deg2rad(angles_deg)
    track = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    across = error[:, 0] - track @ np.linalg.lstsq(track, error[:, 0], rcond=None)[0]
    along = error[:, 1] - error[:, 1].mean()
    return float(np.sqrt(np.mean(across**2 + along**2)))


def sirt_misfit(stack: np.ndarray, angles_deg: np.ndarray, device: str) -> float:
    """``||A x - b|| / ||b||`` of a 50-iteration SIRT of the stack binned by 2."""
    from edxtomo.tomo import project, sirt

    n, ny, nx = stack.shape
    b = stack.reshape(n, ny // 2, 2, nx // 2, 2).sum(axis=(2, 4)).astype(np.float32)
    volume = sirt(b, angles_deg, 50, progress=False, device=device)
    return float(np.linalg.norm(project(volume, angles_deg, device=device) - b)
                 / np.linalg.norm(b))


def run_etspy(reference: np.ndarray, angles_deg: np.ndarray) -> tuple[float, np.ndarray]:
    """etspy's phase-correlation registration and centre-of-mass tilt-axis alignment."""
    from etspy.api import TomoStack

    stack = TomoStack(np.ascontiguousarray(reference.transpose(0, 2, 1)),
                            tilts=angles_deg)
    start = time.perf_counter()
    aligned = stack.stack_register("PC").tilt_align("CoM")
    elapsed = time.perf_counter() - start
    return elapsed, np.asarray(aligned.data, dtype=np.float32).transpose(0, 2, 1)


def bench_case(case: str, options) -> list[tuple]:
    from edxtomo.align import align_series, reference_stack
    from edxtomo.options.align import AlignOptions

    series, truth = misaligned_series(case, options.seed, options.device)
    angles = series.angles_deg
    name, reference = reference_stack(series)
    rows = [(case, "unaligned", "", "", "", sirt_misfit(reference, angles, options.device))]
    for label, align_options in (("edxtomo", AlignOptions()),
                                 ("edxtomo, no PM", AlignOptions(refine="none"))):
        start = time.perf_counter()
        aligned, transforms, _ = align_series(series, align_options, device=options.device,
                                              progress=False)
        per_tilt = (time.perf_counter() - start) / series.n_tilt
        rows.append((
            case, label, per_tilt, translation_error_px(transforms, angles, truth),
            transforms["axis_rotation_deg"].iloc[0] - truth[0],
            sirt_misfit(reference_stack(aligned, name)[1], angles, options.device),
        ))
    if not options.no_etspy:
        elapsed, aligned = run_etspy(reference, angles)
        rows.append((case, "etspy PC + CoM", elapsed / series.n_tilt, "", "",
                     sirt_misfit(aligned, angles, options.device)))
        rows.append((case, "time ratio etspy / edxtomo", rows[-1][2] / rows[1][2], "", "", ""))
    return rows


def main() -> None:
    options = _options
    import torch

    from edxtomo.tomo import resolve_device

    torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    print(f"device {device}, {options.threads} torch/BLAS thread(s), seed {options.seed}, "
          f"{N_PX} x {N_PX} px, load average {os.getloadavg()[0]:.1f}")
    header = ("case", "method", "time/tilt (s)", "shift RMS err (px)", "axis err (deg)",
              "SIRT misfit")
    rows = [row for case in options.cases for row in bench_case(case, options)]

    def cell(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(cell(v) for v in row) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
