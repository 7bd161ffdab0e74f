"""The diagonally preconditioned PDHG solver of :mod:`edxtomo.tomo.tv`, run in slabs.

Chambolle-Pock with the preconditioning of Pock and Chambolle (ICCV 2011) for
``F(Ax) + w R(x) + i(x >= 0)``, ``F`` the Poisson KL or least squares, ``R`` isotropic TV or
l1; channel groups and y slabs that fit the device come from :mod:`edxtomo.tomo.slabs`.
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
from edxtomo.tomo.operators import gradient_adjoint, kl_divergence
from edxtomo.tomo.projector import Projector
from edxtomo.tomo.slabs import check_host, device_budget, plan_slabs, run_slabs, slice_bytes

log = logging.getLogger(__name__)


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
        x_new = s["x"] - update.mul_(tau)  # update is a fresh buffer: scaled in place
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
    # the norm summed component by component: torch.linalg.vector_norm over dim 1 reduces
    # across strided memory and took 90% of the iteration on the CPU
    norm = q[:, 0].square()
    norm.addcmul_(q[:, 1], q[:, 1]).addcmul_(q[:, 2], q[:, 2])
    q.div_(norm.sqrt_().clamp_min_(1.0).unsqueeze(1))


def _tv_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|grad x|`` per voxel, ``(c, nz, ny, nx)``, without the 3-component temporary."""
    squares = torch.zeros_like(x)
    for axis in range(1, 4):
        n = x.shape[axis]
        squares.narrow(axis, 0, n - 1).add_(
            (x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1)).pow_(2))
    return squares.sqrt_()


def _channel_weights(weight, c: int, dev: torch.device) -> torch.Tensor:
    w = np.broadcast_to(np.asarray(weight, dtype=np.float32), (c,))
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise EdxtomoInputError(
            f"regularisation weights must be finite and >= 0, got {weight}")
    return torch.as_tensor(np.maximum(w, 1e-8), device=dev).view(c, 1, 1, 1)
