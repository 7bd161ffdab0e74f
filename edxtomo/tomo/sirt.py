"""SIRT: the simultaneous iterative reconstruction technique, batched over slices and channels.

The update is ASTRA's SIRT with relaxation 1,

    x <- x + C A^T R (b - A x),    R = 1 / row sums of A,   C = 1 / column sums of A,

followed by ``x <- max(x, 0)`` when ``nonneg`` (ASTRA's ``MinConstraint = 0``). Rows or columns
with a zero sum (detector bins no voxel reaches, voxels no ray crosses) get weight 0.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo._checks import prepare_projections, restore_kind, slices_per_chunk
from edxtomo.tomo.projector import Projector

log = logging.getLogger(__name__)

BACKENDS = ("torch", "astra", "tomopy")


def _safe_reciprocal(values: torch.Tensor) -> torch.Tensor:
    return torch.where(values > 0, 1.0 / values.clamp(min=1e-12), torch.zeros_like(values))


def _sirt_torch(
    data: np.ndarray,
    angles: np.ndarray,
    nz: int,
    iterations: int,
    nonneg: bool,
    device: str | torch.device,
    chunk_slices: int | None,
    progress: bool,
    log_every: int,
) -> np.ndarray:
    c, n_tilt, ny, nx = data.shape
    projector = Projector(angles, nx, nz, device)
    # x, its backprojected update, b and the residual: two volume- and two sinogram-sized
    # arrays per slice and channel.
    bytes_per_slice = 4 * c * 2 * (nz * nx + n_tilt * nx)
    chunk = slices_per_chunk(
        ny, bytes_per_slice, 4 * c * nz * ny * nx, projector.device, chunk_slices, "SIRT"
    )
    inv_row = _safe_reciprocal(projector.row_sum)[None, :, None]
    inv_col = _safe_reciprocal(projector.col_sum)[None, :, None]
    volume = np.empty((c, nz, ny, nx), dtype=np.float32)
    n_chunks = -(-ny // chunk)
    bar = tqdm(total=iterations * n_chunks, desc="SIRT", unit="it", disable=not progress)
    with torch.no_grad(), bar:
        for k, y0 in enumerate(range(0, ny, chunk)):
            y1 = min(y0 + chunk, ny)
            sino = torch.from_numpy(np.ascontiguousarray(data[:, :, y0:y1]))
            b = projector.to_columns(sino.to(projector.device))
            x = torch.zeros((b.shape[0], nz * nx, b.shape[2]), dtype=torch.float32, device=b.device)
            # Buffers reused by every iteration: no allocation inside the loop.
            residual, update = torch.empty_like(b), torch.empty_like(x)
            b_norm = float(torch.linalg.vector_norm(b)) or 1.0
            for it in range(1, iterations + 1):
                projector.forward_columns(x, out=residual)
                torch.sub(b, residual, out=residual)
                norm = float(torch.linalg.vector_norm(residual))
                projector.adjoint_columns(residual.mul_(inv_row), out=update)
                x.addcmul_(update, inv_col)
                if nonneg:
                    x.clamp_(min=0)
                bar.update()
                bar.set_postfix(residual=f"{norm / b_norm:.4g}")
                if it % log_every == 0 or it == iterations:
                    log.info(
                        "SIRT slices %d-%d (chunk %d/%d) iteration %d/%d: residual norm %.6g "
                        "(relative %.4g)",
                        y0,
                        y1 - 1,
                        k + 1,
                        n_chunks,
                        it,
                        iterations,
                        norm,
                        norm / b_norm,
                    )
            volume[:, :, y0:y1] = projector.from_columns(x, c, y1 - y0).cpu().numpy()
    return volume


def sirt(
    projections,
    angles_deg,
    iterations: int = 100,
    backend: str = "torch",
    device: str | torch.device = "auto",
    nonneg: bool = True,
    nz: int | None = None,
    prefilter: str | None = None,
    chunk_slices: int | None = None,
    progress: bool = True,
    log_every: int = 10,
    workers: int = 1,
) -> np.ndarray | torch.Tensor:
    """Reconstruct a volume by SIRT, all y slices and channels at once.

    Parameters
    ----------
    projections : ndarray or torch.Tensor, shape ([c,] n_tilt, ny, nx)
        Projections (counts or intensities; converted to float32). A leading channel axis is
        reconstructed channel by channel and kept.
    angles_deg : array_like, shape (n_tilt,)
        Tilt angles in degrees, sign convention of :mod:`edxtomo.tomo.projector`.
    iterations : int
        Number of SIRT iterations.
    backend : {"torch", "astra", "tomopy"}
        ``"torch"``: the sparse projector of this package, on ``device``. ``"astra"``:
        astra-toolbox 2D SIRT slice by slice (``SIRT_CUDA`` when the device resolves to CUDA
        and ``astra.use_cuda()``, else CPU ``SIRT`` with the ``strip`` kernel). ``"tomopy"``:
        ``tomopy.recon(algorithm="sirt")`` (from the ``envs/recon.yaml`` environment).
    device : {"auto", "cpu", "cuda"}
        Device for the torch and ASTRA backends.
    nonneg : bool
        Clip negative voxels to 0 after every update (not available with tomopy).
    nz : int, optional
        Volume depth along the beam at 0 degrees; defaults to ``nx``.
    prefilter : str, optional
        Filter applied to each projection first, see :mod:`edxtomo.tomo.prefilter`;
        ``"box11"`` gives the conventional EDX baseline.
    chunk_slices : int, optional
        Reconstruct this many y slices at a time (all channels together) to bound memory;
        None does all at once. The memory check before allocation suggests a value.
    progress : bool
        Show a tqdm progress bar.
    log_every : int
        Log the residual norm ``||b - A x||`` every this many iterations.
    workers : int
        Parallel slice workers of the CPU ASTRA and tomopy backends.

    Returns
    -------
    ndarray (float32) or torch.Tensor, shape ([c,] nz, ny, nx)
        The reconstruction, same kind (and device) as ``projections``.

    Raises
    ------
    EdxtomoInputError
        Mismatched angles, non-finite or empty input, a volume that would not fit in memory,
        an unavailable device or backend.
    """
    if backend not in BACKENDS:
        raise EdxtomoInputError(f"unknown SIRT backend {backend!r}; expected one of {BACKENDS}")
    if iterations < 1:
        raise EdxtomoInputError(f"iterations must be at least 1, got {iterations}")
    data, angles, nz, squeeze = prepare_projections(projections, angles_deg, prefilter, nz)
    log.info(
        "SIRT (%s backend): %d channel(s), %d tilts, volume %d x %d x %d, %d iterations%s%s",
        backend,
        data.shape[0],
        data.shape[1],
        nz,
        data.shape[2],
        data.shape[3],
        iterations,
        ", non-negative" if nonneg else "",
        f", prefilter {prefilter}" if prefilter else "",
    )
    if backend == "torch":
        volume = _sirt_torch(
            data, angles, nz, iterations, nonneg, device, chunk_slices, progress, log_every
        )
    else:
        from edxtomo.tomo import backends

        volume = backends.reconstruct(
            backend,
            "sirt",
            data,
            angles,
            nz,
            iterations=iterations,
            nonneg=nonneg,
            device=device,
            workers=workers,
            progress=progress,
        )
    return restore_kind(volume, squeeze, projections)
