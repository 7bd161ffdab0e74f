"""Model-based sparse-view reconstruction: TV or l1 regularised, non-negative.

Two objectives, both batched over channels (elements) with a weight per channel:

* :func:`tv_kl` -- Poisson log-likelihood (Kullback-Leibler data term) of raw counts, with
  the expected background under the line in the model, plus isotropic 3D total variation:
  ``sum(Ax + b - y log(Ax + b)) + w TV(x)``, ``x >= 0``. This is the classical method that
  the deep pipeline has to beat, and, on the denoised counts, its step b.
* :func:`mbir_l2` -- least squares plus l1 or TV, ``1/2 ||Ax - y||^2 + w R(x)``, ``x >= 0``,
  the model-based step of Han et al. (2021), who used l1 and split-Bregman with conjugate
  gradients.

Solvers:

* ``"pdhg"`` -- the primal-dual hybrid gradient method of Chambolle and Pock with the
  diagonal preconditioning of Pock and Chambolle (ICCV 2011). The step sizes are the inverse
  row and column sums of ``|K|``, ``K = [A; w grad]``, so no operator norm is needed and
  convergence is guaranteed; every proximal step is closed form (KL, l2, l1, TV, x >= 0).
* ``"split_bregman"`` -- the paper's scheme (Goldstein and Osher 2009): outer Bregman
  updates, each with ``inner`` conjugate-gradient steps on the quadratic sub-problem.

``bench/deep.py`` compares the two on the same objective: on 64^3 x 5 elements, PDHG
reaches after 50 projection pairs a lower objective than split-Bregman after 900 (30 x 30,
the paper's setting), so PDHG is the default.

Weights: under a change of dose ``y -> k y`` the KL + TV minimiser scales as ``x -> k x``
(both terms scale by ``k``), so the KL weight is dose independent. The l2 term scales as
``k^2``, so :func:`mbir_l2` divides each channel by its maximum before solving and
multiplies the result back: its weights are those for data with a peak of 1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo.device import resolve_device
from edxtomo.tomo.operators import EPS as _EPS
from edxtomo.tomo.operators import gradient, gradient_adjoint, kl_divergence, total_variation
from edxtomo.tomo.pdhg import _channel_weights, _pdhg
from edxtomo.tomo.projector import Projector
from edxtomo.tomo.slabs import check_host, device_budget

__all__ = ["gradient", "gradient_adjoint", "kl_divergence", "mbir_l2", "total_variation", "tv_kl"]

log = logging.getLogger(__name__)


def tv_kl(
    projections: np.ndarray,
    angles_deg: np.ndarray,
    weight: float | Sequence[float] = 0.3,
    iterations: int = 300,
    background: np.ndarray | None = None,
    *,
    nz: int | None = None,
    nonneg: bool = True,
    device: str | torch.device = "auto",
    progress: bool = True,
    slab_slices: int | None = None,
    memory_gib: float | None = None,
) -> np.ndarray:
    """TV-regularised Poisson maximum-likelihood reconstruction (PDHG, preconditioned).

    Minimises ``sum(Ax + b - y log(Ax + b)) + w TV(x)`` over ``x >= 0``, channel by
    channel, where ``TV`` is the isotropic 3D total variation (forward differences).

    Parameters
    ----------
    projections : ndarray, shape (n_tilt, ny, nx) or (c, n_tilt, ny, nx)
        Measured counts ``y`` (gross, background included), >= 0.
    angles_deg : ndarray, shape (n_tilt,)
        Tilt angles in degrees.
    weight : float or sequence of float
        TV weight ``w``, one value or one per channel. Dose independent (see module notes).
    iterations : int
        PDHG iterations.
    background : ndarray, optional
        Expected background counts ``b`` under the line, same shape as ``projections``.
    nz : int, optional
        Volume thickness in voxels; default ``nx``.
    nonneg : bool
        Constrain ``x >= 0`` (keep True for counts).
    device : str or torch.device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress : bool
        Show a tqdm bar with the objective.
    slab_slices : int, optional
        Advance slabs of this many y slices (plus a halo) at a time, exactly; None
        chooses from the free memory (:mod:`edxtomo.tomo.slabs`).
    memory_gib : float, optional
        Plan for at most this much device memory (GiB); None: what is free.

    Returns
    -------
    ndarray, shape (nz, ny, nx) or (c, nz, ny, nx), float32
        Voxel values in counts per voxel length (the units of a SIRT volume).
    """
    y, squeeze = _as_channels(projections, "projections")
    if np.any(y < 0):
        raise EdxtomoInputError("tv_kl needs counts >= 0; subtract nothing before calling it")
    b = None
    if background is not None:
        b, _ = _as_channels(background, "background")
        if b.shape != y.shape:
            raise EdxtomoInputError(f"background {b.shape} does not match projections {y.shape}")
    volume = _pdhg(
        y,
        angles_deg,
        data="kl",
        reg="tv",
        weight=weight,
        iterations=iterations,
        background=b,
        nz=nz,
        nonneg=nonneg,
        device=device,
        progress=progress,
        slab_slices=slab_slices,
        memory_gib=memory_gib,
    )
    return volume[0] if squeeze else volume


def mbir_l2(
    projections: np.ndarray,
    angles_deg: np.ndarray,
    reg: str = "tv",
    weight: float | Sequence[float] = 0.05,
    outer: int = 30,
    inner: int = 30,
    *,
    solver: str = "pdhg",
    nz: int | None = None,
    nonneg: bool = True,
    device: str | torch.device = "auto",
    progress: bool = True,
    slab_slices: int | None = None,
    memory_gib: float | None = None,
) -> np.ndarray:
    """Least squares with an l1 or TV penalty, non-negative.

    Minimises ``1/2 ||Ax - y||^2 + w R(x)`` with ``R = ||x||_1`` or ``TV(x)``, on data
    normalised to a peak of 1 per channel (the result is scaled back).

    Parameters
    ----------
    projections : ndarray, shape (n_tilt, ny, nx) or (c, n_tilt, ny, nx)
        Projections ``y`` (e.g. denoised, background-subtracted, aligned).
    angles_deg : ndarray, shape (n_tilt,)
        Tilt angles in degrees.
    reg : {"tv", "l1"}
        Regulariser ``R``.
    weight : float or sequence of float
        ``w`` for unit-peak data, one value or one per channel.
    outer, inner : int
        Split-Bregman: outer Bregman updates and conjugate-gradient steps per update.
        PDHG runs ``outer * inner`` iterations (one projection pair each, as one CG step).
    solver : {"pdhg", "split_bregman"}
    nz : int, optional
        Volume thickness in voxels; default ``nx``.
    nonneg : bool
        Constrain ``x >= 0``.
    device : str or torch.device
    progress : bool
        Show a tqdm bar with the objective.
    slab_slices, memory_gib : optional
        As for :func:`tv_kl` (PDHG); split-Bregman runs on the whole volume and only checks
        that it fits.

    Returns
    -------
    ndarray, shape (nz, ny, nx) or (c, nz, ny, nx), float32
    """
    if reg not in ("tv", "l1"):
        raise EdxtomoInputError(f"reg must be 'tv' or 'l1', got {reg!r}")
    y, squeeze = _as_channels(projections, "projections")
    scale = np.max(np.abs(y), axis=(1, 2, 3), keepdims=True)
    scale[scale == 0] = 1.0
    y = y / scale
    if solver == "pdhg":
        volume = _pdhg(
            y,
            angles_deg,
            data="l2",
            reg=reg,
            weight=weight,
            iterations=outer * inner,
            background=None,
            nz=nz,
            nonneg=nonneg,
            device=device,
            progress=progress,
            slab_slices=slab_slices,
            memory_gib=memory_gib,
        )
    elif solver == "split_bregman":
        volume = _split_bregman(
            y,
            angles_deg,
            reg=reg,
            weight=weight,
            outer=outer,
            inner=inner,
            nz=nz,
            nonneg=nonneg,
            device=device,
            progress=progress,
            memory_gib=memory_gib,
        )
    else:
        raise EdxtomoInputError(f"solver must be 'pdhg' or 'split_bregman', got {solver!r}")
    volume *= scale.astype(np.float32)
    return volume[0] if squeeze else volume


# ---------------------------------------------------------------------------------------
# split-Bregman


def _objective(ax, y, b, x, w, data, reg) -> torch.Tensor:
    """Objective per channel, ``(c,)``."""
    if data == "kl":
        fit = kl_divergence(ax if b is None else ax + b, y)
    else:
        fit = 0.5 * (ax - y).pow(2).flatten(1).sum(dim=1)
    penalty = total_variation(x) if reg == "tv" else x.abs().flatten(1).sum(dim=1)
    return fit + w.flatten() * penalty


def _split_bregman(
    y: np.ndarray,
    angles_deg: np.ndarray,
    *,
    reg: str,
    weight: float | Sequence[float],
    outer: int,
    inner: int,
    nz: int | None,
    nonneg: bool,
    device: str | torch.device,
    progress: bool,
    memory_gib: float | None = None,
) -> np.ndarray:
    """Split-Bregman for ``1/2||Ax - y||^2 + w R(x)``, ``x >= 0`` (Goldstein-Osher 2009).

    Splits ``d = Dx`` (``D`` the identity for l1, the gradient for TV) and, for TV with
    ``x >= 0``, ``e = x``. Each outer step solves
    ``(A^T A + mu D^T D + nu I) x = A^T y + mu D^T (d - bd) + nu (e - be)`` by ``inner``
    conjugate-gradient steps (warm started), then shrinks ``d`` and clips ``e``.
    ``mu`` and ``nu`` are set to 1% of ``||A||^2`` (power iteration), which keeps the
    sub-problem well conditioned without swamping the data term.

    The whole volume is on the device at once (about 18 volumes with TV: x, d, bd, e, be,
    the CG vectors and temporaries); the memory is checked before anything is allocated.
    """
    dev = resolve_device(device)
    c, n_tilt, ny, nx = y.shape
    op = Projector(angles_deg, nx, nz=nz, device=dev)
    nz = nx if nz is None else nz
    out_bytes = 4 * c * nz * ny * nx
    volumes = 18 if reg == "tv" else 10
    need = c * ny * 4 * (volumes * nz * nx + 4 * n_tilt * nx)
    budget = device_budget(dev, out_bytes, memory_gib)
    check_host(out_bytes, "split-Bregman")
    if need > budget:
        raise EdxtomoInputError(
            f"split-Bregman needs about {need / 2**30:.2f} GiB on {dev} for the whole volume "
            f"but the budget is {budget / 2**30:.2f} GiB; use solver 'pdhg', which runs in "
            "slabs, or bin the projections")
    y_t = torch.as_tensor(y, dtype=torch.float32, device=dev)
    w = _channel_weights(weight, c, dev)
    mu = 0.01 * _operator_norm_sq(op, (1, nz, ny, nx), dev)
    use_e = reg == "tv" and nonneg

    if reg == "l1":

        def shrink_d(v):
            out = torch.sign(v) * (v.abs() - w / mu).clamp_min(0)
            return out.clamp_min(0) if nonneg else out

        d_op, d_adj = (lambda x: x), (lambda d: d)
    else:

        def shrink_d(v):
            norm = v.pow(2).sum(dim=1, keepdim=True).sqrt()
            return v * (1 - (w / mu).unsqueeze(1) / norm.clamp_min(_EPS)).clamp_min(0)

        d_op, d_adj = gradient, gradient_adjoint

    def normal(x):
        out = op.adjoint(op.forward(x)) + mu * d_adj(d_op(x))
        return out + mu * x if use_e else out

    aty = op.adjoint(y_t)
    x = torch.zeros((c, nz, ny, nx), device=dev)
    d = d_op(x)
    bd = torch.zeros_like(d)
    e, be = torch.zeros_like(x), torch.zeros_like(x)
    bar = tqdm(range(outer), desc=f"split-Bregman l2+{reg}", disable=not progress)
    with torch.no_grad():
        for _ in bar:
            rhs = aty + mu * d_adj(d - bd)
            if use_e:
                rhs = rhs + mu * (e - be)
            x = _conjugate_gradient(normal, rhs, x, inner)
            dx = d_op(x)
            d = shrink_d(dx + bd)
            bd = bd + dx - d
            if use_e:
                e = (x + be).clamp_min(0)
                be = be + x - e
            result = d if reg == "l1" else (e if use_e else x)
            if progress:
                obj = _objective(op.forward(result), y_t, None, result, w, "l2", reg)
                bar.set_postfix(objective=f"{float(obj.sum()):.5g}")
    obj = _objective(op.forward(result), y_t, None, result, w, "l2", reg)
    log.info(
        "split-Bregman l2+%s: %dx%d, objective per channel %s",
        reg,
        outer,
        inner,
        np.array2string(obj.cpu().numpy(), precision=5),
    )
    return result.cpu().numpy().astype(np.float32)


def _conjugate_gradient(apply_a, rhs: torch.Tensor, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Conjugate gradients for a symmetric positive-definite operator, one system per channel."""
    r = rhs - apply_a(x)
    p = r.clone()
    rr = r.flatten(1).pow(2).sum(dim=1)
    for _ in range(steps):
        ap = apply_a(p)
        alpha = rr / (p * ap).flatten(1).sum(dim=1).clamp_min(_EPS)
        x = x + alpha.view(-1, 1, 1, 1) * p
        r = r - alpha.view(-1, 1, 1, 1) * ap
        rr_new = r.flatten(1).pow(2).sum(dim=1)
        p = r + (rr_new / rr.clamp_min(_EPS)).view(-1, 1, 1, 1) * p
        rr = rr_new
    return x


def _operator_norm_sq(op, shape: tuple[int, ...], dev: torch.device, steps: int = 20) -> float:
    """``||A||^2`` by power iteration on ``A^T A`` from a constant (deterministic) start."""
    v = torch.ones(shape, device=dev)
    norm = 0.0
    with torch.no_grad():
        for _ in range(steps):
            v = op.adjoint(op.forward(v))
            norm = float(v.norm())
            v = v / norm
    return norm


def _as_channels(array, name: str) -> tuple[np.ndarray, bool]:
    """``(n_tilt, ny, nx)`` or ``(c, n_tilt, ny, nx)`` -> float32 4D, and whether it was 3D."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3:
        return array[None], True
    if array.ndim == 4:
        return array, False
    raise EdxtomoInputError(
        f"{name} must be (n_tilt, ny, nx) or (c, n_tilt, ny, nx), got {array.shape}")
