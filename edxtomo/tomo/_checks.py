"""Input validation shared by the projector, SIRT, FBP and the backends."""

from __future__ import annotations

import numpy as np
import torch

from edxtomo.errors import EdxtomoInputError
from edxtomo.io.angles import check_angles
from edxtomo.tomo.device import available_bytes
from edxtomo.tomo.prefilter import prefilter_projections


def check_stack(data, what: str, *, finite: bool = True) -> None:
    """Check a ``(n, ny, nx)`` or ``(c, n, ny, nx)`` array or tensor.

    Raises
    ------
    EdxtomoInputError
        Wrong number of dimensions, an empty axis, or (with ``finite``) NaN/inf values.
    """
    shape = tuple(data.shape)
    if len(shape) not in (3, 4):
        raise EdxtomoInputError(
            f"{what} must be 3D (n, ny, nx) or 4D (channel, n, ny, nx), got shape {shape}"
        )
    if min(shape) == 0:
        raise EdxtomoInputError(f"{what} is empty: shape {shape}")
    if finite:
        ok = (
            bool(torch.isfinite(data).all())
            if isinstance(data, torch.Tensor)
            else bool(np.isfinite(data).all())
        )
        if not ok:
            raise EdxtomoInputError(f"{what} contains non-finite values (NaN or inf)")


def as_channel_stack(data, what: str) -> tuple[np.ndarray | torch.Tensor, bool]:
    """Validate a stack and give it a channel axis: ``(c, n, ny, nx)`` plus "had none"."""
    check_stack(data, what)
    squeeze = data.ndim == 3
    return (data[None] if squeeze else data), squeeze


def slices_per_chunk(
    ny: int,
    bytes_per_slice: int,
    output_bytes: int,
    device: torch.device,
    chunk_slices: int | None,
    what: str,
) -> int:
    """Number of y slices to process at once, checked against the free memory.

    Parameters
    ----------
    ny : int
        Slices in the volume.
    bytes_per_slice : int
        Working memory (on ``device``) per y slice, all channels included.
    output_bytes : int
        Size of the result, held in host memory.
    device : torch.device
        Where the working arrays live.
    chunk_slices : int or None
        Requested slices per chunk; None means all of them at once.
    what : str
        Name of the computation, for the message.

    Raises
    ------
    EdxtomoInputError
        Before anything is allocated, when the result or the working set would not fit; the
        message names the ``chunk_slices`` value that would.
    """
    if chunk_slices is not None and chunk_slices < 1:
        raise EdxtomoInputError(f"chunk_slices must be a positive integer, got {chunk_slices}")
    chunk = ny if chunk_slices is None else min(int(chunk_slices), ny)
    host_free = available_bytes(torch.device("cpu"))
    if output_bytes > host_free:
        raise EdxtomoInputError(
            f"the {what} result needs {output_bytes / 2**30:.2f} GiB but only "
            f"{host_free / 2**30:.2f} GiB of memory are free; bin the projections or "
            "reconstruct fewer channels at a time"
        )
    free = host_free - output_bytes if device.type == "cpu" else available_bytes(device)
    # Leave a fifth for the allocator, the sparse matrices and short-lived temporaries.
    budget = int(0.8 * free)
    if chunk * bytes_per_slice > budget:
        fit = budget // bytes_per_slice
        hint = (
            f"set chunk_slices={fit} (or fewer) to process the y slices in chunks"
            if fit >= 1
            else "even one slice does not fit: bin the projections"
        )
        raise EdxtomoInputError(
            f"{what} of {chunk} y slices at once needs about "
            f"{chunk * bytes_per_slice / 2**30:.2f} GiB on {device}, but "
            f"{free / 2**30:.2f} GiB are free; {hint}"
        )
    return chunk


def prepare_projections(projections, angles_deg, prefilter: str | None, nz: int | None):
    """Front end of SIRT and FBP: checks, a channel axis, float32 numpy, the prefilter.

    Returns
    -------
    data : ndarray, shape (c, n_tilt, ny, nx), float32
    angles : ndarray, shape (n_tilt,)
    nz : int
        Volume depth (``nx`` when None was given).
    squeeze : bool
        Whether the input had no channel axis.
    """
    if isinstance(projections, torch.Tensor):
        projections = projections.detach().cpu().numpy()
    data, squeeze = as_channel_stack(np.asarray(projections), "projections")
    angles = check_angles(angles_deg, data.shape[1])
    nz = data.shape[-1] if nz is None else int(nz)
    if nz < 1:
        raise EdxtomoInputError(f"nz must be a positive number of voxels, got {nz}")
    return prefilter_projections(data, prefilter), angles, nz, squeeze


def restore_kind(volume: np.ndarray, squeeze: bool, like) -> np.ndarray | torch.Tensor:
    """Drop the added channel axis; a tensor (on its device) when ``like`` was one."""
    volume = volume[0] if squeeze else volume
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(volume).to(like.device)
    return volume
