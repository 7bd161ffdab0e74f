"""Memory-bounded, exact PDHG: channel groups and y slabs advanced by temporal blocking.

The tilt axis is y, so the projector never couples y slices; only TV's forward differences
do. One PDHG iteration widens the dependency of a slice by one slice on each side: the dual
step reads ``grad(x_bar)`` at ``y`` and ``y + 1``, the primal step ``div(q)`` at ``y`` and
``y - 1``. A slab of ``s`` interior slices loaded with a halo of ``k + 1`` slices on each side
therefore advances ``k`` iterations exactly (to float rounding) on its interior, and its
interior objective (TV reads the next slice) stays exact too. Slabs that touch the volume's
ends have no halo there: their edges are the volume's. Channels never couple, so groups of
channels run one after another with no halo at all.

The plan (:func:`plan_slabs`) takes the whole volume at once when it fits the device budget,
else as many channels at a time as fit with all y slices (no overhead), and only else y slabs
of one channel group, whose state (``x``, ``x_bar``, ``q``, and the sinogram-sized ``p``,
``Ax``, ``A x_bar``) then lives in host memory between blocks of ``k`` iterations. The halo
costs ``2 (k + 1) / s`` extra compute, the blocks one round trip of the state per ``k``
iterations; ``k = s / 4`` (about 60% more compute at most, and in practice ``s`` is large).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo.device import available_bytes

log = logging.getLogger(__name__)

_GIB = 2**30
# Volume-sized arrays per channel and y slice on the device, state and temporaries: x,
# x_bar, q (3) and up to four live temporaries (A^T p, div q, x_new, the projector's column
# copy); without TV: x, x_bar and three. Sinogram-sized: y, b, p, Ax, A x_bar and four.
_VOLUMES = {"tv": 9, "l1": 5}
_SINOGRAMS = 9
# State kept in host memory per channel and slice between blocks (x, x_bar, q).
_HOST_VOLUMES = {"tv": 5, "l1": 2}


@dataclass(frozen=True)
class SlabPlan:
    """How a PDHG run is cut.

    Attributes
    ----------
    channels : int
        Channels advanced together (a group).
    slab_slices : int
        Interior y slices per slab; ``ny`` means one slab (no halo, no host state).
    block_iterations : int
        Iterations per block between two passes over the slabs (all of them for one slab).
    halo : int
        Slices loaded beyond each side of a slab's interior: ``block_iterations + 1`` when
        the regulariser couples slices (TV), else 0.
    """

    channels: int
    slab_slices: int
    block_iterations: int
    halo: int = 0


def slice_bytes(nz: int, nx: int, n_tilt: int, reg: str) -> tuple[int, int]:
    """Device and host bytes per channel and y slice of the PDHG state and temporaries."""
    device = 4 * (_VOLUMES[reg] * nz * nx + _SINOGRAMS * n_tilt * nx)
    host = 4 * (_HOST_VOLUMES[reg] * nz * nx + 3 * n_tilt * nx)
    return device, host


def device_budget(device: torch.device, reserved_bytes: int, memory_gib: float | None) -> int:
    """Bytes the solver may plan for on ``device``: 80% of the free memory (on CUDA with the
    allocator's cached blocks, less ``reserved_bytes`` on the CPU, where the result lives
    too), capped at 80% of ``memory_gib`` when given. The fifth left over covers the
    allocator, the sparse matrices and short-lived temporaries."""
    free = available_bytes(device)
    if device.type == "cpu":
        free -= reserved_bytes
    else:  # blocks that PyTorch's allocator caches from earlier steps are free to reuse
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if memory_gib is not None:
        free = min(free, int(memory_gib * _GIB))
    return max(int(0.8 * free), 0)


def plan_slabs(
    channels: int,
    ny: int,
    iterations: int,
    bytes_per_slice: int,
    budget_bytes: int,
    slab_slices: int | None = None,
    what: str = "PDHG",
    coupled: bool = True,
) -> SlabPlan:
    """Cut ``channels x ny`` slices into groups and slabs that fit ``budget_bytes``.

    Parameters
    ----------
    channels, ny : int
        Channels and y slices of the volume.
    iterations : int
        PDHG iterations (the most a block can hold).
    bytes_per_slice : int
        Device bytes per channel and y slice (:func:`slice_bytes`).
    budget_bytes : int
        Device bytes available (:func:`device_budget`).
    slab_slices : int, optional
        Interior slices per slab, forced; None chooses from the budget.
    what : str
        Name of the computation, for the message.
    coupled : bool
        Whether the iteration couples neighbouring y slices (TV); uncoupled slabs (l1) need
        no halo and run all their iterations at once.

    Raises
    ------
    EdxtomoInputError
        When not even one slab fits; the message names a ``slab_slices`` that would, or says
        to bin the projections.
    """
    if slab_slices is not None and slab_slices < 1:
        raise EdxtomoInputError(f"slab_slices must be a positive integer, got {slab_slices}")
    fit_slices = budget_bytes // max(bytes_per_slice, 1)  # slices of one channel that fit
    if not coupled:
        slab = min(ny, fit_slices if slab_slices is None else slab_slices)
        if slab > fit_slices or slab < 1:
            raise _too_big(what, max(slab, 1), bytes_per_slice, budget_bytes, fit_slices)
        return SlabPlan(min(channels, fit_slices // slab), slab, iterations)
    if slab_slices is None or slab_slices >= ny:
        if fit_slices >= ny:
            return SlabPlan(min(channels, fit_slices // ny), ny, iterations)
        if slab_slices is not None:
            raise _too_big(what, ny, bytes_per_slice, budget_bytes, fit_slices)
        # a quarter of the loaded slices for the halo: blocks of fit / 8 iterations
        block = max(1, min(iterations, fit_slices // 8))
        slab = fit_slices - 2 * (block + 1)
        if slab < 1:
            raise _too_big(what, ny, bytes_per_slice, budget_bytes, fit_slices)
        return SlabPlan(1, slab, block, block + 1)
    block = max(1, min(iterations, slab_slices // 4))
    loaded = min(ny, slab_slices + 2 * (block + 1))
    if loaded > fit_slices:
        raise _too_big(what, loaded, bytes_per_slice, budget_bytes, fit_slices)
    return SlabPlan(min(channels, fit_slices // loaded), slab_slices, block, block + 1)


def _too_big(what: str, slices: int, bytes_per_slice: int, budget: int,
             fit_slices: int) -> EdxtomoInputError:
    fits = [s for s in range(fit_slices, 0, -1) if s + 2 * (max(1, s // 4) + 1) <= fit_slices]
    hint = (f"set slab_slices={fits[0]} (or fewer)" if fits
            else "even a few slices do not fit: bin the projections")
    return EdxtomoInputError(
        f"{what} of {slices} y slices of one channel needs about "
        f"{slices * bytes_per_slice / _GIB:.2f} GiB but the budget is "
        f"{budget / _GIB:.2f} GiB; {hint}")


def check_host(needed_bytes: int, what: str) -> None:
    """Raise before allocating when ``needed_bytes`` of host memory are not free."""
    free = available_bytes(torch.device("cpu"))
    if needed_bytes > free:
        raise EdxtomoInputError(
            f"{what} needs {needed_bytes / _GIB:.2f} GiB of host memory but only "
            f"{free / _GIB:.2f} GiB are free; bin the projections or reconstruct fewer "
            "channels at a time")


def slab_ranges(ny: int, slab: int, halo: int) -> list[tuple[int, int, int, int]]:
    """``(load_start, start, stop, load_stop)`` of every slab: interior ``[start, stop)``,
    loaded ``[load_start, load_stop)`` (the halo clipped at the volume's ends)."""
    return [(max(0, y0 - halo), y0, min(ny, y0 + slab), min(ny, y0 + slab + halo))
            for y0 in range(0, ny, slab)]


def y_axis(name: str) -> int:
    """Position of the y axis in a state array (``q`` has a component axis first)."""
    return 3 if name == "q" else 2


def take(array: torch.Tensor | np.ndarray, name: str, start: int, stop: int):
    """Slices ``[start, stop)`` along the y axis of a state array (a view)."""
    index = [slice(None)] * array.ndim
    index[y_axis(name)] = slice(start, stop)
    return array[tuple(index)]


class SlabProblem(Protocol):
    """What :func:`run_slabs` needs of a solver; state arrays are named as in :func:`y_axis`."""

    volume_shape: tuple[int, int, int, int]

    def initial(self, channels: slice, start: int, stop: int,
                device: torch.device) -> dict[str, torch.Tensor]:
        """State of ``channels`` on y slices ``[start, stop)`` at iteration 0."""

    def advance(self, state: dict[str, torch.Tensor], channels: slice, start: int, stop: int,
                interior: tuple[int, int], first: int, count: int,
                report: Callable[[int, torch.Tensor | None], None]) -> None:
        """Iterations ``first .. first + count - 1`` on a state loaded from ``[start, stop)``;
        ``report(it, objective)`` after each, with the objective ``(g,)`` of the interior
        (local slices) where the solver checks it, else None."""


def run_slabs(problem: SlabProblem, plan: SlabPlan, iterations: int, device: torch.device,
              report: Callable[[int, slice, torch.Tensor | None], None]) -> np.ndarray:
    """Run ``iterations`` of ``problem`` cut as ``plan`` says; the final ``x``.

    Parameters
    ----------
    problem : SlabProblem
    plan : SlabPlan
    iterations : int
    device : torch.device
        Where the iterations run; with more than one slab the state lives in host memory
        between blocks.
    report : callable
        ``report(it, channels, objective)`` for every iteration of every slab.

    Returns
    -------
    ndarray, shape (c, nz, ny, nx), float32
    """
    c, _, ny, _ = problem.volume_shape
    out = np.empty(problem.volume_shape, np.float32)
    host_device = torch.device("cpu")
    for c0 in range(0, c, plan.channels):
        channels = slice(c0, min(c0 + plan.channels, c))

        def tell(it, objective, channels=channels):
            report(it, channels, objective)

        if plan.slab_slices >= ny:
            state = problem.initial(channels, 0, ny, device)
            problem.advance(state, channels, 0, ny, (0, ny), 0, iterations, tell)
            out[channels] = state["x"].cpu().numpy()
            continue
        host = problem.initial(channels, 0, ny, host_device)
        result = torch.from_numpy(out[channels])
        result.copy_(host["x"])
        host["x"] = result  # the state's x is the output: no copy at the end
        ranges = slab_ranges(ny, plan.slab_slices, plan.halo)
        for first in range(0, iterations, plan.block_iterations):
            count = min(plan.block_iterations, iterations - first)
            _block(problem, host, channels, ranges, first, count, device, tell)
    return out


def _block(problem, host, channels, ranges, first, count, device, tell) -> None:
    """One block of ``count`` iterations over every slab; interiors are written back once
    no later slab reads their old values (a later slab's halo reaches into them)."""
    pending = []
    for j, (load0, y0, y1, load1) in enumerate(ranges):
        state = {name: take(array, name, load0, load1).to(device, copy=True).contiguous()
                 for name, array in host.items()}
        problem.advance(state, channels, load0, load1, (y0 - load0, y1 - load0), first,
                        count, tell)
        pending.append((y0, y1, {name: take(array, name, y0 - load0, y1 - load0).cpu()
                                 for name, array in state.items()}))
        del state
        next_load = ranges[j + 1][0] if j + 1 < len(ranges) else ranges[-1][3]
        while pending and pending[0][1] <= next_load:
            y0_done, y1_done, values = pending.pop(0)
            for name, array in values.items():
                take(host[name], name, y0_done, y1_done).copy_(array)
