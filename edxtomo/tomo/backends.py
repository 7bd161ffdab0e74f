"""External reconstruction backends (astra-toolbox, tomopy) behind the SIRT/FBP interface.

Both work slice by slice on ``(n_tilt, nx)`` sinograms and are mapped onto the geometry of
:mod:`edxtomo.tomo.projector`:

- ASTRA: 2D ``parallel`` geometry with detector spacing 1, ``nx`` bins, volume geometry
  ``(nz rows, nx cols)`` with row = our ``iz``, and ``ProjectionAngles = -theta``. With the
  ``strip`` kernel ASTRA's projector is then the very matrix of our projector (tested). Only
  2D algorithms are used: ``SIRT``/``FBP`` on the CPU and ``SIRT_CUDA``/``FBP_CUDA`` when the
  device resolves to CUDA and ``astra.use_cuda()`` is true. ASTRA's 3D and CUDA calls are never
  reached otherwise (without a GPU they kill the process with SIGFPE).
- tomopy: ``tomopy.recon`` on ``(n_tilt, ny, nx)`` data with ``center = (nx-1)/2``. Its angle
  sign and slice orientation are calibrated once per process by projecting an asymmetric probe
  with ``tomopy.project`` and matching it against our projector, so no convention is assumed.
  tomopy is not a pip dependency: it comes from the conda environment ``envs/recon.yaml``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo.device import resolve_device

log = logging.getLogger(__name__)

ASTRA_FILTERS = {
    "ramp": "ram-lak",
    "shepp-logan": "shepp-logan",
    "cosine": "cosine",
    "hamming": "hamming",
    "hann": "hann",
}
TOMOPY_FILTERS = {
    "ramp": "ramlak",
    "shepp-logan": "shepp",
    "cosine": "cosine",
    "hamming": "hamming",
    "hann": "hann",
}


def reconstruct(
    backend: str,
    method: str,
    data: np.ndarray,
    angles_deg: np.ndarray,
    nz: int,
    *,
    iterations: int = 1,
    nonneg: bool = False,
    filter_name: str = "ramp",
    device: str = "auto",
    workers: int = 1,
    progress: bool = True,
) -> np.ndarray:
    """Reconstruct ``(c, n_tilt, ny, nx)`` float32 data into ``(c, nz, ny, nx)``.

    Parameters
    ----------
    backend : {"astra", "tomopy"}
    method : {"sirt", "fbp"}
    data : ndarray, shape (c, n_tilt, ny, nx), float32
    angles_deg : ndarray, shape (n_tilt,)
    nz : int
        Volume depth; tomopy needs ``nz <= nx`` with ``nx - nz`` even (its ``nx x nx`` slice
        is cropped to the central ``nz`` rows).
    iterations, nonneg : SIRT options.
    filter_name : FBP filter, a key of :data:`ASTRA_FILTERS`.
    device : {"auto", "cpu", "cuda"}
        ASTRA only: CUDA algorithms when this resolves to CUDA and ASTRA was built with CUDA.
    workers : int
        CPU worker processes, each taking a share of the slices (the etspy pattern).
    progress : bool
        tqdm bar over slices (ASTRA) or iterations (tomopy).
    """
    if backend == "astra":
        return _astra(
            method, data, angles_deg, nz, iterations, nonneg, filter_name, device, workers, progress
        )
    if backend == "tomopy":
        return _tomopy(
            method, data, angles_deg, nz, iterations, nonneg, filter_name, workers, progress
        )
    raise EdxtomoInputError(f"unknown backend {backend!r}; expected 'astra' or 'tomopy'")


# ----------------------------------------------------------------------------- ASTRA


def _astra_uses_cuda(device: str) -> bool:
    import astra

    wanted = resolve_device(device).type
    if wanted != "cuda":
        return False
    if astra.use_cuda():
        return True
    if str(device).lower().startswith("cuda"):
        raise EdxtomoInputError(
            f"device {device!r} with backend 'astra': this astra-toolbox build has no CUDA "
            "support (astra.use_cuda() is False); use device 'cpu'"
        )
    log.warning("astra-toolbox has no CUDA support here; running its CPU algorithms")
    return False


def _astra_slices(
    sinograms: np.ndarray,
    angles_deg: np.ndarray,
    nz: int,
    method: str,
    iterations: int,
    nonneg: bool,
    filter_name: str,
    use_cuda: bool,
) -> np.ndarray:
    """ASTRA 2D reconstruction of ``(k, n_tilt, nx)`` sinograms into ``(k, nz, nx)``."""
    import astra

    nx = sinograms.shape[-1]
    proj_geom = astra.create_proj_geom("parallel", 1.0, nx, -np.deg2rad(angles_deg))
    vol_geom = astra.create_vol_geom(nz, nx)
    projector = astra.create_projector("cuda" if use_cuda else "strip", proj_geom, vol_geom)
    rec_id = astra.data2d.create("-vol", vol_geom, 0.0)
    sino_id = astra.data2d.create("-sino", proj_geom, 0.0)
    cfg = astra.astra_dict(method.upper() + ("_CUDA" if use_cuda else ""))
    cfg["ProjectorId"] = projector
    cfg["ProjectionDataId"] = sino_id
    cfg["ReconstructionDataId"] = rec_id
    if method == "sirt" and nonneg:
        cfg["option"] = {"MinConstraint": 0.0}
    if method == "fbp":
        cfg["FilterType"] = ASTRA_FILTERS[filter_name]
    algorithm = astra.algorithm.create(cfg)
    out = np.empty((sinograms.shape[0], nz, nx), dtype=np.float32)
    try:
        for k, sinogram in enumerate(sinograms):
            astra.data2d.store(sino_id, sinogram)
            astra.data2d.store(rec_id, 0.0)
            astra.algorithm.run(algorithm, iterations if method == "sirt" else 1)
            out[k] = astra.data2d.get(rec_id)
    finally:
        astra.algorithm.delete(algorithm)
        astra.data2d.delete([rec_id, sino_id])
        astra.projector.delete(projector)
    return out


def _astra(
    method, data, angles_deg, nz, iterations, nonneg, filter_name, device, workers, progress
) -> np.ndarray:
    use_cuda = _astra_uses_cuda(device)
    c, n_tilt, ny, nx = data.shape
    # One sinogram per (channel, y): (c * ny, n_tilt, nx).
    sinograms = np.ascontiguousarray(data.transpose(0, 2, 1, 3).reshape(c * ny, n_tilt, nx))
    options = (angles_deg, nz, method, iterations, nonneg, filter_name, use_cuda)
    n_workers = 1 if use_cuda else max(1, int(workers))
    groups = np.array_split(np.arange(c * ny), min(c * ny, 4 * n_workers))
    bar = tqdm(total=c * ny, desc=f"ASTRA {method.upper()}", unit="slice", disable=not progress)
    results = []
    with bar:
        if n_workers == 1:
            for group in groups:
                results.append(_astra_slices(sinograms[group], *options))
                bar.update(len(group))
        else:
            # Processes, not threads: ASTRA's CPU algorithms hold the GIL. "spawn" keeps the
            # workers free of the parent's OpenMP/torch thread state.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(n_workers, mp_context=context) as pool:
                futures = [pool.submit(_astra_slices, sinograms[g], *options) for g in groups]
                for group, future in zip(groups, futures, strict=True):
                    results.append(future.result())
                    bar.update(len(group))
    volume = np.concatenate(results).reshape(c, ny, nz, nx)
    return np.ascontiguousarray(volume.transpose(0, 2, 1, 3))


# ----------------------------------------------------------------------------- tomopy


def _import_tomopy():
    try:
        import tomopy
    except ImportError as error:
        raise EdxtomoInputError(
            "backend 'tomopy' needs tomopy, which is not importable in this environment; "
            "run the rule with the conda environment envs/recon.yaml (snakemake --sdm conda), "
            "or choose backend 'torch' or 'astra'"
        ) from error
    return tomopy


# The 8 symmetries of a square slice: optional transpose, then optional flips of each axis.
_ORIENTATIONS = list(itertools.product((False, True), repeat=3))


def _orient(slices: np.ndarray, transpose: bool, flip_a: bool, flip_b: bool) -> np.ndarray:
    """Apply a slice symmetry to the last two axes."""
    out = np.swapaxes(slices, -1, -2) if transpose else slices
    out = out[..., ::-1, :] if flip_a else out
    return out[..., :, ::-1] if flip_b else out


def _unorient(slices: np.ndarray, transpose: bool, flip_a: bool, flip_b: bool) -> np.ndarray:
    """Inverse of :func:`_orient`."""
    out = slices[..., ::-1, :] if flip_a else slices
    out = out[..., :, ::-1] if flip_b else out
    return np.swapaxes(out, -1, -2) if transpose else out


@functools.cache
def _tomopy_orientation() -> tuple[float, tuple[bool, bool, bool]]:
    """``(angle_sign, orientation)`` such that tomopy, given ``_orient(slice, *orientation)``
    at angles ``angle_sign * theta``, projects as our projector does at ``theta``."""
    from edxtomo.tomo.projector import project

    tomopy = _import_tomopy()
    n = 33
    probe = np.zeros((n, 1, n), dtype=np.float32)
    # Three unequal points with no symmetry: every transform projects differently.
    for (z, x), value in {(4, 16): 1.0, (16, 26): 2.0, (25, 9): 3.0}.items():
        probe[z, 0, x] = value
    angles = np.array([-50.0, 20.0, 65.0])
    ours = project(probe, angles, device="cpu")[:, 0]
    slice_zx = probe[:, 0]
    best = None
    for sign in (1.0, -1.0):
        for orientation in _ORIENTATIONS:
            theirs = tomopy.project(
                np.ascontiguousarray(_orient(slice_zx, *orientation))[None],
                sign * np.deg2rad(angles),
                center=(n - 1) / 2,
                pad=False,
            )[:, 0]
            error = float(np.abs(theirs - ours).sum() / np.abs(ours).sum())
            if best is None or error < best[0]:
                best = (error, sign, orientation)
    error, sign, orientation = best
    if error > 0.2:
        raise RuntimeError(
            f"could not map tomopy's geometry onto edxtomo's (best mismatch {error:.2f})"
        )
    log.info(
        "tomopy geometry: angle sign %+g, slice (transpose, flip, flip) %s, mismatch %.3f",
        sign,
        orientation,
        error,
    )
    return sign, orientation


def _tomopy(
    method, data, angles_deg, nz, iterations, nonneg, filter_name, workers, progress
) -> np.ndarray:
    tomopy = _import_tomopy()
    c, n_tilt, ny, nx = data.shape
    if nz > nx or (nx - nz) % 2:
        raise EdxtomoInputError(
            f"backend 'tomopy' reconstructs nx x nx slices and crops their centre; nz={nz} "
            f"must be at most nx={nx} and differ from it by an even number"
        )
    sign, orientation = _tomopy_orientation()
    theta = sign * np.deg2rad(angles_deg)
    options = {"center": (nx - 1) / 2, "ncore": max(1, int(workers))}
    volume = np.empty((c, nz, ny, nx), dtype=np.float32)
    z0 = (nx - nz) // 2
    for ch in range(c):
        if method == "fbp":
            rec = tomopy.recon(
                data[ch], theta, algorithm="fbp", filter_name=TOMOPY_FILTERS[filter_name], **options
            )
        else:
            rec = None
            for _ in tqdm(range(iterations), desc="tomopy SIRT", disable=not progress):
                # One iteration per call so that non-negativity is applied after each update,
                # as in the torch and ASTRA backends.
                rec = tomopy.recon(
                    data[ch], theta, algorithm="sirt", num_iter=1, init_recon=rec, **options
                )
                if nonneg:
                    np.maximum(rec, 0, out=rec)
        ours = _unorient(rec, *orientation)  # (ny, nx, nx) as (y, z, x)
        volume[ch] = ours[:, z0 : z0 + nz].transpose(1, 0, 2)
    return volume
