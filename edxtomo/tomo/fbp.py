"""Filtered backprojection, batched over slices and channels.

The inversion formula is ``f(x) = integral over [0, pi) of (p_theta * h)(u) d theta`` with the
ramp ``|nu|`` (nu in cycles per pixel) in Fourier space. The ramp is built from its
band-limited spatial kernel (Kak & Slaney, eq. 3.61), which gets the zero-frequency term right,
on projections zero-padded to at least twice their width. The backprojection is the exact
adjoint of :func:`edxtomo.tomo.project`, and each angle is weighted by the angular interval it
represents (midpoint rule on the sorted angles), scaled so that the weights sum to ``pi``.
FBP of the projections of a uniform object of density 1 gives 1 inside it when the angles
cover 180 degrees. A limited tilt range is treated as representative of the half circle, as
ASTRA does (its weight is ``pi / n_tilt`` per angle): the measured Fourier wedge is scaled by
``180 / range``, which keeps the density of roughly isotropic objects right on average while
the missing wedge elongates them along z.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo._checks import prepare_projections, restore_kind, slices_per_chunk
from edxtomo.tomo.projector import Projector
from edxtomo.tomo.sirt import BACKENDS

log = logging.getLogger(__name__)

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def ramp_filter(n_pad: int, filter_name: str = "hann") -> np.ndarray:
    """Frequency response of the windowed ramp filter on an ``n_pad``-point real FFT.

    Parameters
    ----------
    n_pad : int
        Padded projection length (even).
    filter_name : {"ramp", "shepp-logan", "cosine", "hamming", "hann"}
        Window applied to the ramp: none, ``sinc(nu)``, ``cos(pi nu)``,
        ``0.54 + 0.46 cos(2 pi nu)``, ``0.5 + 0.5 cos(2 pi nu)``, with nu in cycles per pixel.

    Returns
    -------
    ndarray, shape (n_pad // 2 + 1,), float64
        The response at ``numpy.fft.rfftfreq(n_pad)``; about ``|nu|`` for ``"ramp"``.
    """
    if filter_name not in FILTERS:
        raise EdxtomoInputError(f"unknown FBP filter {filter_name!r}; expected one of {FILTERS}")
    kernel = np.zeros(n_pad)
    kernel[0] = 0.25
    odd = np.concatenate([np.arange(1, n_pad // 2 + 1, 2), np.arange(n_pad // 2 - 1, 0, -2)])
    kernel[1::2] = -1.0 / (np.pi * odd) ** 2
    response = np.fft.rfft(kernel).real
    nu = np.fft.rfftfreq(n_pad)
    window = {
        "ramp": np.ones_like(nu),
        "shepp-logan": np.sinc(nu),
        "cosine": np.cos(np.pi * nu),
        "hamming": 0.54 + 0.46 * np.cos(2 * np.pi * nu),
        "hann": 0.5 + 0.5 * np.cos(2 * np.pi * nu),
    }[filter_name]
    return response * window


def angular_weights(angles_deg: np.ndarray) -> np.ndarray:
    """Weight of each projection in FBP: its share of the half circle, in radians.

    Parameters
    ----------
    angles_deg : ndarray, shape (n_tilt,)
        Tilt angles in degrees, in any order.

    Returns
    -------
    ndarray, shape (n_tilt,)
        Midpoint-rule intervals of the sorted angles (the two end angles get the same
        interval as their neighbour gap), scaled to sum to ``pi``; equal spacing gives
        ``pi / n_tilt`` each.
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.size == 1:
        return np.array([np.pi])
    order = np.argsort(angles)
    sorted_angles = angles[order]
    edges = np.concatenate(
        [
            [sorted_angles[0] - (sorted_angles[1] - sorted_angles[0]) / 2],
            (sorted_angles[1:] + sorted_angles[:-1]) / 2,
            [sorted_angles[-1] + (sorted_angles[-1] - sorted_angles[-2]) / 2],
        ]
    )
    widths = np.empty_like(angles)
    widths[order] = np.diff(edges)
    return np.pi * widths / widths.sum()


def fbp(
    projections,
    angles_deg,
    filter: str = "hann",  # noqa: A002 - the name the workflow configuration uses
    backend: str = "torch",
    device: str | torch.device = "auto",
    nz: int | None = None,
    prefilter: str | None = None,
    chunk_slices: int | None = None,
) -> np.ndarray | torch.Tensor:
    """Filtered backprojection of a tilt series.

    Parameters
    ----------
    projections : ndarray or torch.Tensor, shape ([c,] n_tilt, ny, nx)
        Projections; a leading channel axis is kept.
    angles_deg : array_like, shape (n_tilt,)
        Tilt angles in degrees (convention of :mod:`edxtomo.tomo.projector`).
    filter : {"ramp", "shepp-logan", "cosine", "hamming", "hann"}
        Window of the ramp filter, see :func:`ramp_filter`.
    backend : {"torch", "astra", "tomopy"}
        As for :func:`edxtomo.tomo.sirt`. ASTRA weights all angles equally
        (``pi / n_tilt``), which equals :func:`angular_weights` for evenly spaced angles.
    device : {"auto", "cpu", "cuda"}
    nz : int, optional
        Volume depth; defaults to ``nx``.
    prefilter : str, optional
        Projection filter applied first, see :mod:`edxtomo.tomo.prefilter`.
    chunk_slices : int, optional
        Process this many y slices at a time to bound memory.

    Returns
    -------
    ndarray (float32) or torch.Tensor, shape ([c,] nz, ny, nx)
        Densities in projection units per voxel length.
    """
    if backend not in BACKENDS:
        raise EdxtomoInputError(f"unknown FBP backend {backend!r}; expected one of {BACKENDS}")
    if filter not in FILTERS:
        raise EdxtomoInputError(f"unknown FBP filter {filter!r}; expected one of {FILTERS}")
    data, angles, nz, squeeze = prepare_projections(projections, angles_deg, prefilter, nz)
    c, n_tilt, ny, nx = data.shape
    log.info(
        "FBP (%s backend, %s filter): %d channel(s), %d tilts, volume %d x %d x %d",
        backend,
        filter,
        c,
        n_tilt,
        nz,
        ny,
        nx,
    )
    if backend != "torch":
        from edxtomo.tomo import backends

        volume = backends.reconstruct(
            backend, "fbp", data, angles, nz, filter_name=filter, device=device, progress=False
        )
        return restore_kind(volume, squeeze, projections)
    projector = Projector(angles, nx, nz, device)
    n_pad = max(64, int(2 ** np.ceil(np.log2(2 * nx))))
    response = torch.as_tensor(
        ramp_filter(n_pad, filter), dtype=torch.complex64, device=projector.device
    )
    weights = torch.as_tensor(
        angular_weights(angles), dtype=torch.float32, device=projector.device
    )[None, :, None, None]
    # Padded real and complex copies of the projections, plus the volume and its column copy.
    bytes_per_slice = 4 * c * (n_tilt * (nx + 3 * n_pad) + 2 * nz * nx)
    chunk = slices_per_chunk(
        ny, bytes_per_slice, 4 * c * nz * ny * nx, projector.device, chunk_slices, "FBP"
    )
    volume = np.empty((c, nz, ny, nx), dtype=np.float32)
    with torch.no_grad():
        for y0 in range(0, ny, chunk):
            y1 = min(y0 + chunk, ny)
            block = torch.from_numpy(np.ascontiguousarray(data[:, :, y0:y1]))
            block = block.to(projector.device)
            spectrum = torch.fft.rfft(block, n=n_pad, dim=-1) * response
            filtered = torch.fft.irfft(spectrum, n=n_pad, dim=-1)[..., :nx] * weights
            volume[:, :, y0:y1] = projector.adjoint(filtered.contiguous()).cpu().numpy()
    return restore_kind(volume, squeeze, projections)
