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
from edxtomo.tomo.projector import Projector
from edxtomo.tomo.slabs import check_host, device_budget, plan_slabs, run_slabs, slice_bytes

log = logging.getLogger(__name__)

_EPS = 1e-12


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
# operators


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with a zero last difference: ``(c, nz, ny, nx) -> (c, 3, ...)``."""
    g = x.new_zeros((x.shape[0], 3, *x.shape[1:]))
    g[:, 0, :-1] = x[:, 1:] - x[:, :-1]
    g[:, 1, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    g[:, 2, :, :, :-1] = x[:, :, :, 1:] - x[:, :, :, :-1]
    return g


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of :func:`gradient` (minus the divergence)."""
    out = g.new_zeros((g.shape[0], *g.shape[2:]))
    out[:, :-1] -= g[:, 0, :-1]
    out[:, 1:] += g[:, 0, :-1]
    out[:, :, :-1] -= g[:, 1, :, :-1]
    out[:, :, 1:] += g[:, 1, :, :-1]
    out[:, :, :, :-1] -= g[:, 2, :, :, :-1]
    out[:, :, :, 1:] += g[:, 2, :, :, :-1]
    return out


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV per channel: ``(c, nz, ny, nx) -> (c,)``."""
    return gradient(x).pow(2).sum(dim=1).sqrt().flatten(1).sum(dim=1)


def kl_divergence(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Poisson negative log-likelihood up to a constant, ``>= 0``, per channel ``(c,)``.

    ``sum(z - y + y log(y / z))``, zero when ``z == y``.
    """
    z = z.clamp_min(_EPS)
    ylogy = torch.where(y > 0, y * torch.log(y.clamp_min(_EPS) / z), torch.zeros_like(y))
    return (z - y + ylogy).flatten(1).sum(dim=1)


# ---------------------------------------------------------------------------------------
# solvers


def _pdhg(
    y: np.ndarray,
    angles_deg: np.ndarray,
    *,
    data: str,
    reg: str,
    weight: float | Sequence[float],
    iterations: int,
    background: np.ndarray | None,
    nz: int | None,
    nonneg: bool,
    device: str | torch.device,
    progress: bool,
    slab_slices: int | None = None,
    memory_gib: float | None = None,
) -> np.ndarray:
    """Diagonally preconditioned PDHG for ``F(Ax) + w R(x) + i(x >= 0)``.

    Runs in channel groups and y slabs that fit the device (:mod:`edxtomo.tomo.slabs`),
    with the same iterates as the whole volume at once, to float rounding.
    """
    dev = resolve_device(device)
    c, n_tilt, ny, nx = y.shape
    op = Projector(angles_deg, nx, nz=nz, device=dev)
    problem = _PdhgProblem(op, y, background, _channel_weights(weight, c, dev), data, reg,
                           nonneg, iterations)
    what = f"PDHG {data}+{reg}"
    out_bytes = 4 * c * op.nz * ny * nx
    device_bytes, host_bytes = slice_bytes(op.nz, nx, n_tilt, reg)
    plan = plan_slabs(c, ny, iterations, device_bytes, device_budget(dev, out_bytes, memory_gib),
                      slab_slices, what, coupled=reg == "tv")
    sliced = plan.slab_slices < ny
    check_host(out_bytes + (plan.channels * ny * host_bytes if sliced else 0), what)
    if plan.channels < c or sliced:
        log.info("%s: %d of %d channel(s) at a time%s", what, plan.channels, c,
                 f", slabs of {plan.slab_slices} y slices, {plan.block_iterations} iterations "
                 f"per pass" if sliced else "")
    units = -(-c // plan.channels) * (-(-ny // plan.slab_slices) if sliced else 1)
    bar = tqdm(total=iterations * units, desc=what, disable=not progress, mininterval=1.0)
    objective = np.zeros((iterations, c))

    def report(it: int, channels: slice, value: torch.Tensor | None) -> None:
        bar.update()
        if value is None:
            return
        value = value.double().cpu().numpy()
        if not np.all(np.isfinite(value)):
            raise FloatingPointError(f"PDHG objective became non-finite at iteration {it}")
        objective[it, channels] += value
        bar.set_postfix(objective=f"{value.sum():.5g}")

    with torch.no_grad(), bar:
        volume = run_slabs(problem, plan, iterations, dev, report)
    log.info("%s: %d iterations, objective per channel %s", what, iterations,
             np.array2string(objective[-1].astype(np.float32), precision=5))
    return volume


class _PdhgProblem:
    """The PDHG iteration on a y range of a channel group (a :class:`SlabProblem`).

    Pock-Chambolle (2011) preconditioners, alpha = 1: ``sigma_i = 1 / sum_j |K_ij|``,
    ``tau_j = 1 / sum_i |K_ij|``. ``A`` is non-negative and the same for every y slice, so
    its sums are the projector's row and column sums, ``(1, n_tilt, 1, nx)`` and
    ``(1, nz, 1, nx)``. The start is a uniform volume carrying the measured mass (global).
    """

    def __init__(self, op: Projector, y: np.ndarray, background: np.ndarray | None,
                 w: torch.Tensor, data: str, reg: str, nonneg: bool, iterations: int) -> None:
        c, n_tilt, ny, nx = y.shape
        self.op, self.y, self.b, self.w = op, y, background, w
        self.data, self.reg, self.nonneg, self.iterations = data, reg, nonneg, iterations
        self.volume_shape = (c, op.nz, ny, nx)
        self.row = op.row_sum.view(1, n_tilt, 1, nx)
        self.col = op.col_sum.view(1, op.nz, 1, nx)
        self.sigma = torch.where(self.row > _EPS, 1.0 / self.row.clamp_min(_EPS),
                                 torch.zeros_like(self.row))
        net = y if background is None else np.clip(y - background, 0, None)
        mass = net.sum(axis=(1, 2, 3), dtype=np.float64)
        self.level = (mass / max(ny * float(self.row.sum()), _EPS)).astype(np.float32)

    def initial(self, channels: slice, start: int, stop: int,
                device: torch.device) -> dict[str, torch.Tensor]:
        _, nz, _, nx = self.volume_shape
        level = torch.as_tensor(self.level[channels], device=device).view(-1, 1, 1, 1)
        g, s = level.shape[0], stop - start
        x = level.expand(g, nz, s, nx).clone()
        ax = (level * self.row.to(device)).expand(g, -1, s, -1).clone()
        state = {"x": x, "x_bar": x.clone(), "ax": ax, "ax_bar": ax.clone(),
                 "p": torch.zeros_like(ax)}
        if self.reg == "tv":
            state["q"] = torch.zeros((g, 3, nz, s, nx), device=device)
        return state

    def advance(self, state, channels, start, stop, interior, first, count, report) -> None:
        dev = state["x"].device
        y = torch.from_numpy(np.ascontiguousarray(self.y[channels, :, start:stop])).to(dev)
        b = None if self.b is None else torch.from_numpy(
            np.ascontiguousarray(self.b[channels, :, start:stop])).to(dev)
        w = self.w[channels]
        if self.reg == "tv":
            # each voxel enters at most 2 forward differences per axis, each row holds 2 entries
            tau = 1.0 / (self.col + 6.0 * w)
        else:
            tau = 1.0 / self.col.clamp_min(_EPS)
        for it in range(first, first + count):
            self._iterate(state, y, b, w, tau)
            check = it % 10 == 0 or it == self.iterations - 1
            report(it, self._objective(state, y, b, w, *interior) if check else None)

    def _iterate(self, s, y, b, w, tau) -> None:
        """One PDHG iteration in place on the state ``s``."""
        sigma = self.sigma
        v = s["p"] + sigma * s["ax_bar"]
        if self.data == "kl":
            if b is not None:
                v = v + sigma * b
            s["p"] = 0.5 * (v + 1.0 - torch.sqrt((v - 1.0) ** 2 + 4.0 * sigma * y))
        else:
            s["p"] = (v - sigma * y) / (1.0 + sigma)
        del v
        update = self.op.adjoint(s["p"])
        if self.reg == "tv":
            # dual step sigma_q * K_q = (1 / (2 w)) * (w grad) = grad / 2
            _ascend_tv_dual(s["q"], s["x_bar"])
            update = gradient_adjoint(s["q"]).mul_(w).add_(update)
        x_new = s["x"] - tau * update
        del update
        if self.reg == "l1":
            x_new = torch.sign(x_new) * (x_new.abs() - tau * w).clamp_min(0)
        if self.nonneg:
            x_new.clamp_min_(0)
        ax_new = self.op.forward(x_new)
        # x_bar = 2 x_new - x, ax_bar likewise, in the buffers of x and ax
        s["x_bar"] = s["x"].mul_(-1.0).add_(x_new, alpha=2.0)
        s["ax_bar"] = s["ax"].mul_(-1.0).add_(ax_new, alpha=2.0)
        s["x"], s["ax"] = x_new, ax_new

    def _objective(self, s, y, b, w, lo: int, hi: int) -> torch.Tensor:
        """Objective per channel of the interior slices ``[lo, hi)``, ``(g,)``."""
        ax, y = s["ax"][:, :, lo:hi], y[:, :, lo:hi]
        if self.data == "kl":
            fit = kl_divergence(ax if b is None else ax + b[:, :, lo:hi], y)
        else:
            fit = 0.5 * (ax - y).pow(2).flatten(1).sum(dim=1)
        x = s["x"]
        if self.reg == "tv":
            # TV at slice hi - 1 reads slice hi: in the halo, or past the volume's end
            penalty = _tv_magnitude(x[:, :, lo:min(hi + 1, x.shape[2])])[:, :, :hi - lo]
        else:
            penalty = x[:, :, lo:hi].abs()
        return fit + w.flatten() * penalty.flatten(1).sum(dim=1)


def _ascend_tv_dual(q: torch.Tensor, x_bar: torch.Tensor) -> None:
    """``q <- proj_{|q| <= 1}(q + grad(x_bar) / 2)`` in place, one axis at a time."""
    for axis in range(3):
        n = x_bar.shape[axis + 1]
        diff = x_bar.narrow(axis + 1, 1, n - 1) - x_bar.narrow(axis + 1, 0, n - 1)
        q[:, axis].narrow(axis + 1, 0, n - 1).add_(diff, alpha=0.5)
        del diff
    q.div_(torch.linalg.vector_norm(q, dim=1, keepdim=True).clamp_min_(1.0))


def _tv_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|grad x|`` per voxel, ``(c, nz, ny, nx)``, without the 3-component temporary."""
    squares = torch.zeros_like(x)
    for axis in range(1, 4):
        n = x.shape[axis]
        squares.narrow(axis, 0, n - 1).add_(
            (x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1)).pow_(2))
    return squares.sqrt_()


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


def _channel_weights(weight, c: int, dev: torch.device) -> torch.Tensor:
    w = np.broadcast_to(np.asarray(weight, dtype=np.float32), (c,))
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise EdxtomoInputError(
            f"regularisation weights must be finite and >= 0, got {weight}")
    return torch.as_tensor(np.maximum(w, 1e-8), device=dev).view(c, 1, 1, 1)


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
