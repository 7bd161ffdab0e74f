"""Parallel-beam projector and its exact adjoint, batched over slices and channels.

Geometry (shared by every stage): volumes are ``(nz, ny, nx)``, projections
``(n_tilt, ny, nx)``, the tilt axis is y. With centred coordinates
``x_c = ix - (nx-1)/2``, ``z_c = iz - (nz-1)/2`` and ``u_c = iu - (nx-1)/2``, the projection
at angle ``theta`` integrates along the lines ``x_c cos(theta) + z_c sin(theta) = u_c``. A
point at ``z_c = +d`` thus appears at ``u_c = +d sin(theta)``. ASTRA's 2D ``parallel``
geometry with ``ProjectionAngles = -theta`` and the ``strip`` kernel is the same operator.

Discretisation: a strip-area (exact footprint) system matrix. Each voxel is a unit square;
its shadow on the detector at ``theta`` is the trapezoid ``box(|cos|) * box(|sin|)``
(unit area) centred on ``x_c cos + z_c sin``, and its weight in detector bin ``u`` is the
trapezoid's area inside ``[u - 1/2, u + 1/2]``. Hence at 0 degrees the projection equals
``volume.sum(axis=0)`` exactly and every voxel whose shadow stays on the detector deposits
exactly its value at every angle (mass conservation). One ``(n_tilt*nx, nz*nx)`` matrix serves
all y slices and channels: the volume is laid out as columns ``(nz*nx, channel*ny)`` and
multiplied in blocks of columns, which keeps the dense operand cache-resident on the CPU
(32 columns: 5x faster than one wide product on a 2-core Xeon). The adjoint is the exact
transpose, held as its own CSR matrix.
"""

from __future__ import annotations

import functools
import logging
import warnings

import numpy as np
import scipy.sparse
import torch

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo._checks import check_angles, check_stack
from edxtomo.tomo.device import available_bytes, resolve_device

log = logging.getLogger(__name__)

# Columns per sparse-dense product. On the CPU, 32 float32 columns (128-byte rows) keep the
# rows of the dense operand that one detector row touches inside L2; measured on the 256^2 x
# 31-tilt case: 0.063 s per forward product at 32 columns vs 0.16 s at 256. cuSPARSE wants
# wide products, so the GPU takes many columns at once.
BLOCK_COLUMNS = {"cpu": 32, "cuda": 1024}


def _ramp_integral(s: np.ndarray) -> np.ndarray:
    s = np.maximum(s, 0.0)
    s *= s
    s *= 0.5
    return s


def _trapezoid_cdf(t: np.ndarray, long: float, short: float) -> np.ndarray:
    """Cumulative distribution of the unit-area trapezoid ``box(long) * box(short)``."""
    if short < 1e-6:
        return np.clip(t / long + 0.5, 0.0, 1.0)
    return (
        _ramp_integral(t + (long + short) / 2)
        - _ramp_integral(t + (long - short) / 2)
        - _ramp_integral(t - (long - short) / 2)
        + _ramp_integral(t - (long + short) / 2)
    ) / (long * short)


def _angle_weights(theta: float, nx: int, nz: int) -> tuple[np.ndarray, np.ndarray]:
    """Strip-area weights of one tilt: detector bins and weights, each ``(nz * nx, 3)``.

    Voxel ``iz * nx + ix`` deposits ``weights[v, k]`` in bin ``bins[v, k]``; the 3 bins of a
    voxel ascend, and entries outside the detector or below 1e-7 have weight 0.
    """
    cos, sin = np.cos(theta), np.sin(theta)
    long, short = max(abs(cos), abs(sin)), min(abs(cos), abs(sin))
    x_c = np.arange(nx) - (nx - 1) / 2
    z_c = np.arange(nz)[:, None] - (nz - 1) / 2
    # Shadow centre of every voxel in detector-index units, (nz * nx, 1).
    centre = (cos * x_c + sin * z_c + (nx - 1) / 2).reshape(-1, 1)
    # The shadow is at most sqrt(2) wide, so it overlaps at most 3 detector bins; their 4
    # edges are evaluated once (bin k spans edges k and k + 1).
    first_bin = np.floor(centre - (long + short) / 2 + 0.5)
    cdf = _trapezoid_cdf(first_bin - 0.5 - centre + np.arange(4), long, short)
    weights = np.diff(cdf, axis=1)
    bins = first_bin.astype(np.int64) + np.arange(3)
    weights[(weights <= 1e-7) | (bins < 0) | (bins >= nx)] = 0.0
    return bins, weights


@functools.lru_cache(maxsize=4)
def _cached_matrices(angles_key: tuple[float, ...], nx: int, nz: int):
    """The system matrix and its transpose, both CSR (see :func:`system_matrix`).

    The transpose is assembled directly: voxel ``v``'s row holds its (tilt, bin) entries,
    which ascend in ``tilt * nx + bin`` when laid out tilt by tilt, so no sort is needed.
    One tilt's float64 temporaries are computed at a time.
    """
    n_tilt, n_vox = len(angles_key), nz * nx
    rows = np.empty((n_vox, n_tilt, 3), dtype=np.int32)
    values = np.empty((n_vox, n_tilt, 3), dtype=np.float32)
    for i, theta in enumerate(np.deg2rad(angles_key)):
        bins, weights = _angle_weights(theta, nx, nz)
        rows[:, i] = bins + i * nx
        values[:, i] = weights
    keep = values > 0
    transpose = scipy.sparse.csr_matrix(
        (values[keep], rows[keep], np.concatenate([[0], np.cumsum(keep.sum(axis=(1, 2)))])),
        shape=(n_vox, n_tilt * nx),
    )
    return transpose.T.tocsr(), transpose


def _cached_system_matrix(angles_key: tuple[float, ...], nx: int, nz: int):
    return _cached_matrices(angles_key, nx, nz)[0]


def system_matrix(angles_deg, nx: int, nz: int | None = None) -> scipy.sparse.csr_matrix:
    """The projector of one y slice as a sparse matrix.

    Parameters
    ----------
    angles_deg : array_like, shape (n_tilt,)
        Tilt angles in degrees.
    nx : int
        Slice width in voxels; also the number of detector bins.
    nz : int, optional
        Slice depth (beam direction at 0 degrees) in voxels; defaults to ``nx``.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_tilt * nx, nz * nx), float32
        Row ``i * nx + iu`` is detector bin ``iu`` at tilt ``i``; column ``iz * nx + ix`` is
        voxel ``(iz, ix)``. Cached per ``(angles, nx, nz)``; treat it as read-only.
    """
    angles = check_angles(angles_deg)
    nz = nx if nz is None else nz
    if nx < 1 or nz < 1:
        raise EdxtomoInputError(f"slice size must be positive, got nz={nz}, nx={nx}")
    return _cached_system_matrix(tuple(angles.tolist()), int(nx), int(nz))


def _to_torch_csr(matrix: scipy.sparse.csr_matrix, device: torch.device) -> torch.Tensor:
    index_dtype = torch.int32 if matrix.nnz < 2**31 else torch.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr).to(index_dtype),
            torch.from_numpy(matrix.indices).to(index_dtype),
            torch.from_numpy(matrix.data),
            size=matrix.shape,
            check_invariants=False,
        ).to(device)


@functools.lru_cache(maxsize=4)
def _cached_operators(angles_key: tuple[float, ...], nx: int, nz: int, device: str):
    matrix, transpose = _cached_matrices(angles_key, nx, nz)
    device_ = torch.device(device)
    return (
        _to_torch_csr(matrix, device_),
        _to_torch_csr(transpose, device_),
        torch.from_numpy(np.asarray(matrix.sum(axis=1), np.float32).ravel()).to(device_),
        torch.from_numpy(np.asarray(matrix.sum(axis=0), np.float32).ravel()).to(device_),
    )


def _blocked_product(
    matrix: torch.Tensor, blocks: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``matrix @ blocks[b]`` for every block: ``(nb, k, bs) -> (nb, m, bs)``, into ``out``.

    ``addmm_`` with ``beta=0`` overwrites ``out`` (NaN in it is not propagated) and is the
    same sparse-dense call as ``torch.mm``, so the result is identical to the last bit;
    ``torch.mm`` also zero-fills a new output and copies it (10-15% of a SIRT iteration
    at 64 x 128^2 on the CPU, ``bench/README.md``).
    """
    blocks = blocks.contiguous()
    if out is None:
        out = blocks.new_empty((blocks.shape[0], matrix.shape[0], blocks.shape[2]))
    for b in range(blocks.shape[0]):
        out[b].addmm_(matrix, blocks[b], beta=0)
    return out


class _SparseProduct(torch.autograd.Function):
    """``A @ x`` per column block, whose gradient is ``A^T @ g`` (the held transpose)."""

    @staticmethod
    def forward(ctx, blocks, matrix, transpose):
        ctx.transpose = transpose
        return _blocked_product(matrix, blocks)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return _blocked_product(ctx.transpose, grad), None, None


class Projector:
    """Forward projector and exact adjoint for one tilt geometry, on one device.

    Parameters
    ----------
    angles_deg : array_like, shape (n_tilt,)
        Tilt angles in degrees (sign convention in the module docstring).
    nx : int
        Volume width and number of detector bins.
    nz : int, optional
        Volume depth along the beam at 0 degrees; defaults to ``nx``.
    device : {"auto", "cpu", "cuda"} or torch.device
        Where the system matrix lives and the products run.

    Notes
    -----
    :meth:`forward` and :meth:`adjoint` take float32 tensors ``(c, nz, ny, nx)`` and
    ``(c, n_tilt, ny, nx)`` (the channel axis may be omitted) and are differentiable. The
    ``*_columns`` methods work on the internal layout ``(n_block, rows, block)`` that
    :meth:`to_columns` produces, so iterative solvers can stay in it without reshaping.
    """

    def __init__(
        self,
        angles_deg,
        nx: int,
        nz: int | None = None,
        device: str | torch.device = "auto",
    ) -> None:
        self.angles_deg = check_angles(angles_deg)
        self.nx = int(nx)
        self.nz = self.nx if nz is None else int(nz)
        self.n_tilt = self.angles_deg.size
        self.device = resolve_device(device)
        if self.nx < 1 or self.nz < 1:
            raise EdxtomoInputError(f"slice size must be positive, got nz={self.nz}, nx={self.nx}")
        # Up to 3 bins per voxel and tilt, int32 index + float32 value, matrix and transpose.
        matrix_bytes = 2 * 8 * 3 * self.n_tilt * self.nz * self.nx
        if matrix_bytes > available_bytes(self.device):
            raise EdxtomoInputError(
                f"the system matrix for {self.n_tilt} tilts of a {self.nz} x {self.nx} slice "
                f"needs about {matrix_bytes / 2**30:.1f} GiB, more than is free on "
                f"{self.device}; bin the projections"
            )
        self.matrix, self.transpose, self.row_sum, self.col_sum = _cached_operators(
            tuple(self.angles_deg.tolist()), self.nx, self.nz, str(self.device)
        )
        self.block_columns = BLOCK_COLUMNS[self.device.type]

    def __repr__(self) -> str:
        return f"Projector(n_tilt={self.n_tilt}, nz={self.nz}, nx={self.nx}, device={self.device})"

    def to_columns(self, stack: torch.Tensor) -> torch.Tensor:
        """``(c, n, ny, nx)`` -> ``(n_block, n*nx, block)``, zero-padded columns ``c*ny``."""
        c, n, ny, nx = stack.shape
        columns = stack.permute(1, 3, 0, 2).reshape(n * nx, c * ny)
        n_block = -(-c * ny // self.block_columns)
        width = -(-c * ny // n_block)
        columns = torch.nn.functional.pad(columns, (0, n_block * width - c * ny))
        return columns.reshape(n * nx, n_block, width).permute(1, 0, 2).contiguous()

    def from_columns(self, blocks: torch.Tensor, channels: int, ny: int) -> torch.Tensor:
        """Inverse of :meth:`to_columns`: ``(n_block, n*nx, block)`` -> ``(c, n, ny, nx)``."""
        n_block, rows, width = blocks.shape
        columns = blocks.permute(1, 0, 2).reshape(rows, n_block * width)[:, : channels * ny]
        return columns.reshape(rows // self.nx, self.nx, channels, ny).permute(2, 0, 3, 1)

    def forward_columns(
        self, blocks: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Project volume columns ``(nb, nz*nx, bs)`` to ``(nb, n_tilt*nx, bs)``.

        With ``out`` (contiguous, that shape) the result is written there and not tracked by
        autograd: for iterative solvers that reuse their buffers under ``torch.no_grad``.
        """
        if out is not None:
            return _blocked_product(self.matrix, blocks, out)
        return _SparseProduct.apply(blocks, self.matrix, self.transpose)

    def adjoint_columns(
        self, blocks: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Backproject columns ``(nb, n_tilt*nx, bs)`` to ``(nb, nz*nx, bs)``.

        ``out`` as in :meth:`forward_columns`.
        """
        if out is not None:
            return _blocked_product(self.transpose, blocks, out)
        return _SparseProduct.apply(blocks, self.transpose, self.matrix)

    def _apply(self, data: torch.Tensor, n_in: int, adjoint: bool) -> torch.Tensor:
        squeeze = data.ndim == 3
        stack = data.unsqueeze(0) if squeeze else data
        if stack.ndim != 4 or stack.shape[1] != n_in or stack.shape[3] != self.nx:
            raise EdxtomoInputError(
                f"expected shape ([c,] {n_in}, ny, {self.nx}) for this projector, "
                f"got {tuple(data.shape)}"
            )
        c, _, ny, _ = stack.shape
        blocks = self.to_columns(stack.to(self.device, torch.float32))
        product = self.adjoint_columns(blocks) if adjoint else self.forward_columns(blocks)
        out = self.from_columns(product, c, ny)
        return out[0] if squeeze else out

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Project ``([c,] nz, ny, nx)`` to ``([c,] n_tilt, ny, nx)``; differentiable."""
        return self._apply(volume, self.nz, adjoint=False)

    def adjoint(self, projections: torch.Tensor) -> torch.Tensor:
        """Backproject ``([c,] n_tilt, ny, nx)`` to ``([c,] nz, ny, nx)``; exact adjoint."""
        return self._apply(projections, self.n_tilt, adjoint=True)


def _run(data, angles_deg, device, nz: int | None, adjoint: bool):
    check_stack(data, "projections" if adjoint else "volume", finite=False)
    as_numpy = not isinstance(data, torch.Tensor)
    tensor = torch.from_numpy(np.asarray(data, dtype=np.float32)) if as_numpy else data
    if not as_numpy and str(device) == "auto":
        device = tensor.device
    nx = tensor.shape[-1]
    n_in = tensor.shape[-3]
    if adjoint:
        angles = check_angles(angles_deg, n_in)
        projector = Projector(angles, nx, nz, device)
        result = projector.adjoint(tensor)
    else:
        angles = check_angles(angles_deg)
        projector = Projector(angles, nx, n_in, device)
        result = projector.forward(tensor)
    if as_numpy:
        return result.detach().cpu().numpy()
    return result


def project(volume, angles_deg, *, device: str | torch.device = "auto"):
    """Parallel-beam projections of a volume.

    Parameters
    ----------
    volume : ndarray or torch.Tensor, shape ([c,] nz, ny, nx)
        Voxel values; a leading channel axis is kept.
    angles_deg : array_like, shape (n_tilt,)
        Tilt angles in degrees. A point at ``z_c = +d`` lands at ``u_c = +d sin(theta)``.
    device : {"auto", "cpu", "cuda"}
        Where to compute. For a tensor, ``"auto"`` means the tensor's own device.

    Returns
    -------
    ndarray (float32) or torch.Tensor, shape ([c,] n_tilt, ny, nx)
        Line integrals in voxel-length units (0 degrees gives ``volume.sum(axis=-3)``).
        Numpy in gives numpy out; a tensor in gives a differentiable tensor out.
    """
    return _run(volume, angles_deg, device, None, adjoint=False)


def backproject(projections, angles_deg, nz: int | None = None, *, device="auto"):
    """Exact adjoint of :func:`project`.

    Parameters
    ----------
    projections : ndarray or torch.Tensor, shape ([c,] n_tilt, ny, nx)
    angles_deg : array_like, shape (n_tilt,)
        Tilt angles in degrees.
    nz : int, optional
        Depth of the volume; defaults to ``nx``.
    device : {"auto", "cpu", "cuda"}
        For a tensor, ``"auto"`` means the tensor's own device.

    Returns
    -------
    ndarray (float32) or torch.Tensor, shape ([c,] nz, ny, nx)
        ``<project(x), y> == <x, backproject(y)>`` to float32 rounding.
    """
    return _run(projections, angles_deg, device, nz, adjoint=True)
